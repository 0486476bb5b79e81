package multiraft

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
)

// raftLogger is the hclog.Logger each raft group logs through. It hands
// raft's message and key/value pairs to the host's slog logger as they
// are, so that a log pipeline can filter on level, group and key instead
// of parsing hclog's text ("[WARN]  raft.g4: ...") out of a message.
type raftLogger struct {
	l    *slog.Logger // carries part and group; With pairs are added per call
	name string
	// implied are the With pairs, kept for ImpliedArgs.
	implied []any
	// level is shared by every logger derived from one group's root, as
	// hclog's SetLevel contract asks.
	level *atomic.Int32
}

var _ hclog.Logger = (*raftLogger)(nil)

// raftLogName is the part attribute of raft's lines; Named loggers extend
// it with a dot, as hclog does.
const raftLogName = "raft"

// newRaftLogger logs raft's lines of warning level and above for one group;
// raft's info lines are one per election per group, which is noise with
// hundreds of groups.
func newRaftLogger(l *slog.Logger, group uint64) hclog.Logger {
	lvl := new(atomic.Int32)
	lvl.Store(int32(hclog.Warn))
	return &raftLogger{l: l.With("group", group), name: raftLogName, level: lvl}
}

// slogLevel maps hclog's levels onto slog's; Trace sits below Debug the way
// it does in hclog.
func slogLevel(l hclog.Level) slog.Level {
	switch l {
	case hclog.Trace:
		return slog.LevelDebug - 4
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	default: // Info, and NoLevel, which hclog itself prints as info
		return slog.LevelInfo
	}
}

func (r *raftLogger) enabled(l hclog.Level) bool {
	floor := hclog.Level(r.level.Load())
	if l == hclog.NoLevel {
		l = hclog.Info
	}
	return floor != hclog.Off && l != hclog.Off && l >= floor
}

func (r *raftLogger) Log(level hclog.Level, msg string, args ...any) {
	if !r.enabled(level) {
		return
	}
	ctx := context.Background()
	sl := slogLevel(level)
	if !r.l.Enabled(ctx, sl) {
		return
	}
	attrs := make([]slog.Attr, 0, 1+(len(r.implied)+len(args)+1)/2)
	attrs = append(attrs, slog.String("part", r.name))
	attrs = appendPairs(attrs, r.implied)
	attrs = appendPairs(attrs, args)
	r.l.LogAttrs(ctx, sl, msg, attrs...)
}

// appendPairs turns hclog's alternating keys and values into attributes.
// A key that is not a string is printed, and a value without a key is kept
// under hclog's own name for it, so that nothing raft says is lost.
func appendPairs(attrs []slog.Attr, args []any) []slog.Attr {
	for i := 0; i < len(args); i += 2 {
		if i+1 == len(args) {
			attrs = append(attrs, slog.Any(hclog.MissingKey, attrValue(args[i])))
			break
		}
		key, ok := args[i].(string)
		if !ok {
			key = fmt.Sprint(args[i])
		}
		attrs = append(attrs, slog.Any(attrKey(key), attrValue(args[i+1])))
	}
	return attrs
}

// attrKey renames the keys raft shares with slog's own fields ("failed to
// contact" carries a "time"): a JSON line with two "time" keys loses one of
// them in most log pipelines, usually the timestamp.
func attrKey(k string) string {
	switch k {
	case slog.TimeKey, slog.LevelKey, slog.MessageKey, slog.SourceKey:
		return "raft-" + k
	}
	return k
}

// attrValue renders hclog's formatting helpers the way hclog does; every
// other value goes to the slog handler as it is.
func attrValue(v any) any {
	switch v := v.(type) {
	case hclog.Format:
		if len(v) == 0 {
			return ""
		}
		format, _ := v[0].(string)
		return fmt.Sprintf(format, v[1:]...)
	case hclog.Hex:
		return fmt.Sprintf("0x%x", int(v))
	case hclog.Octal:
		return fmt.Sprintf("0%o", int(v))
	case hclog.Binary:
		return fmt.Sprintf("0b%b", int(v))
	case hclog.Quote:
		return fmt.Sprintf("%q", string(v))
	}
	return v
}

func (r *raftLogger) Trace(msg string, args ...any) { r.Log(hclog.Trace, msg, args...) }
func (r *raftLogger) Debug(msg string, args ...any) { r.Log(hclog.Debug, msg, args...) }
func (r *raftLogger) Info(msg string, args ...any)  { r.Log(hclog.Info, msg, args...) }
func (r *raftLogger) Warn(msg string, args ...any)  { r.Log(hclog.Warn, msg, args...) }
func (r *raftLogger) Error(msg string, args ...any) { r.Log(hclog.Error, msg, args...) }

func (r *raftLogger) IsTrace() bool { return r.enabled(hclog.Trace) }
func (r *raftLogger) IsDebug() bool { return r.enabled(hclog.Debug) }
func (r *raftLogger) IsInfo() bool  { return r.enabled(hclog.Info) }
func (r *raftLogger) IsWarn() bool  { return r.enabled(hclog.Warn) }
func (r *raftLogger) IsError() bool { return r.enabled(hclog.Error) }

func (r *raftLogger) ImpliedArgs() []any { return append([]any(nil), r.implied...) }

func (r *raftLogger) With(args ...any) hclog.Logger {
	c := *r
	c.implied = append(append([]any(nil), r.implied...), args...)
	return &c
}

func (r *raftLogger) Name() string { return r.name }

func (r *raftLogger) Named(name string) hclog.Logger {
	c := *r
	c.name = r.name + "." + name
	return &c
}

func (r *raftLogger) ResetNamed(name string) hclog.Logger {
	c := *r
	c.name = name
	return &c
}

func (r *raftLogger) SetLevel(level hclog.Level) { r.level.Store(int32(level)) }
func (r *raftLogger) GetLevel() hclog.Level      { return hclog.Level(r.level.Load()) }

func (r *raftLogger) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(r.StandardWriter(opts), "", 0)
}

func (r *raftLogger) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	if opts == nil {
		opts = &hclog.StandardLoggerOptions{}
	}
	return stdWriter{r: r, force: opts.ForceLevel, infer: opts.InferLevels}
}

// stdWriter carries lines written through the standard library's log
// package (by code that takes a *log.Logger) to the raft logger, reading
// the level from an hclog-style "[WARN]" prefix when asked to.
type stdWriter struct {
	r     *raftLogger
	force hclog.Level
	infer bool
}

func (w stdWriter) Write(p []byte) (int, error) {
	msg := string(bytes.TrimSpace(p))
	level := hclog.Info
	if w.force != hclog.NoLevel || w.infer {
		if l, rest, ok := splitLevelPrefix(msg); ok {
			level, msg = l, rest
		}
	}
	if w.force != hclog.NoLevel {
		level = w.force
	}
	w.r.Log(level, msg)
	return len(p), nil
}

// splitLevelPrefix reads the "[LEVEL]" prefix the standard log writers of
// hashicorp libraries put before their lines.
func splitLevelPrefix(s string) (hclog.Level, string, bool) {
	if !strings.HasPrefix(s, "[") {
		return hclog.NoLevel, s, false
	}
	end := strings.IndexByte(s, ']')
	if end < 0 {
		return hclog.NoLevel, s, false
	}
	var l hclog.Level
	switch s[1:end] {
	case "TRACE":
		l = hclog.Trace
	case "DEBUG":
		l = hclog.Debug
	case "INFO":
		l = hclog.Info
	case "WARN", "WARNING":
		l = hclog.Warn
	case "ERR", "ERROR":
		l = hclog.Error
	default:
		return hclog.NoLevel, s, false
	}
	return l, strings.TrimSpace(s[end+1:]), true
}
