package multiraft

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// textLog returns a slog logger writing text lines without their time, and
// the buffer it writes to.
func textLog(level slog.Level) (*slog.Logger, *bytes.Buffer) {
	var buf bytes.Buffer
	h := slog.NewTextHandler(&buf, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	})
	return slog.New(h), &buf
}

// Raft's calls come out as slog records with their level, their message
// alone and each key/value pair as an attribute, next to the group and the
// subsystem, instead of hclog's text squashed into the message.
func TestRaftLoggerStructuredLines(t *testing.T) {
	for _, tt := range []struct {
		name string
		log  func(l hclog.Logger)
		want string // "" when nothing may be logged
	}{{
		name: "warn with pairs",
		log: func(l hclog.Logger) {
			l.Warn("heartbeat timeout reached, starting election", "last-leader-addr", "", "last-leader-id", "")
		},
		want: `level=WARN msg="heartbeat timeout reached, starting election" node=n1 group=4 part=raft last-leader-addr="" last-leader-id=""`,
	}, {
		name: "error with an error value, and a key slog uses itself",
		log: func(l hclog.Logger) {
			l.Error("failed to contact", "server-id", "n2", "time", "1.5s", "error", errors.New("connection refused"))
		},
		want: `level=ERROR msg="failed to contact" node=n1 group=4 part=raft server-id=n2 raft-time=1.5s error="connection refused"`,
	}, {
		name: "Log with an explicit level",
		log:  func(l hclog.Logger) { l.Log(hclog.Warn, "x", "k", 1) },
		want: `level=WARN msg=x node=n1 group=4 part=raft k=1`,
	}, {
		name: "info is below the default level",
		log:  func(l hclog.Logger) { l.Info("entering follower state", "leader-id", "n2") },
	}, {
		name: "debug and trace too",
		log: func(l hclog.Logger) {
			l.Debug("d")
			l.Trace("t")
		},
	}, {
		name: "With pairs come before the call's",
		log: func(l hclog.Logger) {
			l.With("snapshot-id", "2-10-1").Warn("failed to persist", "error", "disk full")
		},
		want: `level=WARN msg="failed to persist" node=n1 group=4 part=raft snapshot-id=2-10-1 error="disk full"`,
	}, {
		name: "Named extends the subsystem",
		log:  func(l hclog.Logger) { l.Named("snapshot").Warn("w") },
		want: `level=WARN msg=w node=n1 group=4 part=raft.snapshot`,
	}, {
		name: "a value without a key is kept",
		log:  func(l hclog.Logger) { l.Warn("odd", "a", 1, "lonely") },
		want: `level=WARN msg=odd node=n1 group=4 part=raft a=1 EXTRA_VALUE_AT_END=lonely`,
	}, {
		name: "hclog's format helpers are rendered",
		log: func(l hclog.Logger) {
			l.Warn("f", "v", hclog.Fmt("%d-%s", 7, "x"), "h", hclog.Hex(255), 3, "non-string key")
		},
		want: `level=WARN msg=f node=n1 group=4 part=raft v=7-x h=0xff 3="non-string key"`,
	}, {
		name: "a lowered level lets info through on every derived logger",
		log: func(l hclog.Logger) {
			named := l.Named("x")
			l.SetLevel(hclog.Info)
			named.Info("entering follower state")
		},
		want: `level=INFO msg="entering follower state" node=n1 group=4 part=raft.x`,
	}, {
		name: "Off silences errors",
		log: func(l hclog.Logger) {
			l.SetLevel(hclog.Off)
			l.Error("e")
		},
	}, {
		name: "the standard writer reads hclog's level prefix",
		log: func(l hclog.Logger) {
			l.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}).Print("[WARN]  something odd")
			l.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}).Print("[INFO]  dropped")
		},
		want: `level=WARN msg="something odd" node=n1 group=4 part=raft`,
	}} {
		t.Run(tt.name, func(t *testing.T) {
			sl, buf := textLog(slog.LevelDebug - 4)
			tt.log(newRaftLogger(sl.With("node", "n1"), 4))
			got := strings.TrimSpace(buf.String())
			if got != tt.want {
				t.Fatalf("logged\n  %s\nwant\n  %s", got, tt.want)
			}
		})
	}
}

// The handler's own level filters too, and the Is* guards follow the
// logger's level so raft skips building lines nobody keeps.
func TestRaftLoggerLevels(t *testing.T) {
	sl, buf := textLog(slog.LevelError)
	l := newRaftLogger(sl, 1)
	l.Warn("filtered by the handler")
	if buf.Len() != 0 {
		t.Fatalf("a warning passed a handler at error level: %s", buf)
	}
	if l.IsInfo() || !l.IsWarn() || !l.IsError() {
		t.Fatalf("guards at the default level: info %v warn %v error %v; want false true true", l.IsInfo(), l.IsWarn(), l.IsError())
	}
	if got := l.GetLevel(); got != hclog.Warn {
		t.Fatalf("default level %v, want warn", got)
	}
	if got := l.With("a", 1).With("b", 2).ImpliedArgs(); len(got) != 4 || got[0] != "a" || got[3] != 2 {
		t.Fatalf("ImpliedArgs = %v, want [a 1 b 2]", got)
	}
}
