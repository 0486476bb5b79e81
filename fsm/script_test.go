package fsm

import (
	"bytes"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// The scripts in testdata/*.txt drive one replica through commands and
// reads and compare what it prints with the expected output below each
// "----". Run `go test ./fsm -run TestScripts -rewrite` to update the
// expectations after a deliberate change, then read the diff.
var rewrite = flag.Bool("rewrite", false, "rewrite the expected output of testdata scripts")

func TestScripts(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scripts found: %v", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txt"), func(t *testing.T) {
			runScript(t, file)
		})
	}
}

type scriptBlock struct {
	preamble []string // comments and blank lines before the block
	commands []string
	want     []string
	line     int
}

func parseScript(t *testing.T, data string) (blocks []scriptBlock, tail []string) {
	lines := strings.Split(strings.TrimRight(data, "\n"), "\n")
	var cur scriptBlock
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		switch {
		case len(cur.commands) == 0 && (strings.TrimSpace(l) == "" || strings.HasPrefix(l, "#")):
			cur.preamble = append(cur.preamble, l)
		case l == "----":
			if len(cur.commands) == 0 {
				t.Fatalf("line %d: ---- without commands", i+1)
			}
			for i+1 < len(lines) && strings.TrimSpace(lines[i+1]) != "" {
				i++
				cur.want = append(cur.want, lines[i])
			}
			blocks = append(blocks, cur)
			cur = scriptBlock{}
		default:
			if len(cur.commands) == 0 {
				cur.line = i + 1
			}
			cur.commands = append(cur.commands, l)
		}
	}
	if len(cur.commands) != 0 {
		t.Fatalf("line %d: commands without ---- and expected output", cur.line)
	}
	return blocks, cur.preamble
}

func runScript(t *testing.T, file string) {
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	blocks, tail := parseScript(t, string(data))
	s := newScriptRunner(t)
	var out bytes.Buffer
	for _, b := range blocks {
		got := s.run(b.commands)
		if !*rewrite && strings.Join(got, "\n") != strings.Join(b.want, "\n") {
			t.Errorf("%s:%d:\n%s\n---- got:\n%s\n---- want:\n%s", file, b.line,
				strings.Join(b.commands, "\n"), strings.Join(got, "\n"), strings.Join(b.want, "\n"))
		}
		for _, l := range b.preamble {
			out.WriteString(l + "\n")
		}
		for _, l := range b.commands {
			out.WriteString(l + "\n")
		}
		out.WriteString("----\n")
		for _, l := range got {
			out.WriteString(l + "\n")
		}
	}
	for _, l := range tail {
		out.WriteString(l + "\n")
	}
	if *rewrite {
		if err := os.WriteFile(file, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

type scriptRunner struct {
	t    *testing.T
	r    *replica
	logs *logMaker
	base time.Time
	sub  *Subscription
	// all is every entry applied so far, for replay.
	all []*raft.Log
	// rules collects "rule" lines for the next "namespaces" entry.
	rules []Namespace
}

func newScriptRunner(t *testing.T) *scriptRunner {
	s := &scriptRunner{t: t, r: newReplica(t, 1), logs: newLogMaker()}
	s.base = s.logs.clock
	s.subscribe()
	return s
}

func (s *scriptRunner) subscribe() {
	sub, _, err := s.r.f.Subscribe("", 1<<16)
	if err != nil {
		s.t.Fatalf("subscribe: %v", err)
	}
	s.sub = sub
}

// run executes a block: consecutive apply commands form one ApplyBatch.
func (s *scriptRunner) run(commands []string) []string {
	var out []string
	var batch []*raft.Log
	flush := func() {
		if len(batch) == 0 {
			return
		}
		s.all = append(s.all, batch...)
		for i, res := range s.r.applyBatch(batch) {
			out = append(out, s.formatResult(batch[i], res))
		}
		batch = nil
		out = append(out, s.drainEvents()...)
	}
	for _, line := range commands {
		args := tokenize(s.t, line)
		if entry, ok := s.entry(args); ok {
			batch = append(batch, entry)
			continue
		}
		flush()
		out = append(out, s.query(args)...)
	}
	flush()
	if len(out) == 0 {
		out = []string{"ok"}
	}
	return out
}

func (s *scriptRunner) drainEvents() []string {
	var out []string
	for {
		select {
		case ev, ok := <-s.sub.C:
			if !ok {
				return append(out, fmt.Sprintf("subscription ended: %v", s.sub.Err()))
			}
			out = append(out, "  ev "+s.formatEvent(ev))
		default:
			return out
		}
	}
}

func (s *scriptRunner) formatEvent(ev Event) string {
	line := fmt.Sprintf("%s@%d #%d %s", ev.Room, ev.Epoch, ev.Seq, ev.Type)
	if ev.Member != "" {
		line += " " + ev.Member
	}
	if ev.Data != nil {
		line += " " + strconv.Quote(string(ev.Data))
	}
	return line + " t=+" + ev.Time.Sub(s.base).String()
}

func (s *scriptRunner) formatResult(l *raft.Log, res *Result) string {
	if res == nil {
		return fmt.Sprintf("#%d (no result)", l.Index)
	}
	head := fmt.Sprintf("#%d %s", l.Index, res.Op)
	if res.Err != nil {
		return fmt.Sprintf("%s: error: %v", head, res.Err)
	}
	line := fmt.Sprintf("%s: ok epoch=%d seq=%d last=%d", head, res.Epoch, res.Seq, res.LastSeq)
	if res.JoinToken != 0 {
		line += fmt.Sprintf(" token=top|%d", res.JoinToken&^(1<<63))
	}
	if res.Duplicate {
		line += " duplicate"
	}
	if res.Removed != 0 {
		line += fmt.Sprintf(" removed=%d", res.Removed)
	}
	if res.More {
		line += " more"
	}
	return line
}

// entry turns an apply command into a log entry; ok is false for others.
func (s *scriptRunner) entry(args scriptArgs) (*raft.Log, bool) {
	var c Command
	switch args.cmd {
	case "join":
		c = Command{Op: OpJoin, Room: args.pos(0), Member: args.pos(1), Meta: args.bytes("meta")}
		if node, ok := args.kv["node"]; ok {
			c.Ephemeral, c.NodeID, c.NodeEpoch = true, node, args.uint("epoch")
		}
	case "leave":
		c = Command{Op: OpLeave, Room: args.pos(0), Member: args.pos(1)}
		if _, ok := args.kv["joined"]; ok {
			c.HasExpectSeq, c.ExpectSeq = true, args.uint("joined")
		}
		if _, ok := args.kv["token"]; ok { // a join that took no seq
			c.HasExpectSeq, c.ExpectSeq = true, 1<<63|args.uint("token")
		}
	case "publish":
		c = Command{Op: OpPublish, Room: args.pos(0), Member: args.pos(1), Data: []byte(args.pos(2)), Key: args.str("key")}
		if _, ok := args.kv["expect"]; ok {
			c.HasExpectSeq, c.ExpectSeq = true, args.uint("expect")
		}
		c.FromClient = args.str("from") == "client"
	case "namespaces":
		c = Command{Op: OpNamespaces, Namespaces: Namespaces{Revision: args.uint("rev"), Rules: s.rules}}
		s.rules = nil
	case "config":
		c = Command{Op: OpRoomConfig, Room: args.pos(0)}
		c.Config, c.ConfigMask = args.config()
	case "defaults":
		c = Command{Op: OpGroupDefaults}
		c.Config, c.ConfigMask = args.config()
	case "delete":
		c = Command{Op: OpRoomDelete, Room: args.pos(0)}
	case "expire":
		c = Command{Op: OpExpireNode, NodeID: args.pos(0), NodeEpoch: args.posUint(1), Limit: uint32(args.uint("limit"))}
	case "tick":
		c = Command{Op: OpTick, Limit: uint32(args.uint("limit"))}
	case "raw":
		b, err := hex.DecodeString(args.pos(0))
		if err != nil {
			s.t.Fatalf("raw: %v", err)
		}
		s.logs.index++
		return &raft.Log{Index: s.logs.index, Term: 1, Type: raft.LogCommand, Data: b, AppendedAt: s.logs.clock}, true
	default:
		return nil, false
	}
	return s.logs.entry(c), true
}

// query runs a read or a harness command.
func (s *scriptRunner) query(args scriptArgs) []string {
	f := s.r.f
	switch args.cmd {
	case "advance":
		d, err := time.ParseDuration(args.pos(0))
		if err != nil {
			s.t.Fatalf("advance: %v", err)
		}
		s.logs.clock = s.logs.clock.Add(d)
		return nil
	case "history":
		h, err := f.History(args.pos(0), args.uint("from"), int(args.uint("limit")))
		if err != nil {
			return []string{"error: " + err.Error()}
		}
		out := []string{fmt.Sprintf("epoch=%d first=%d last=%d truncated=%v", h.Epoch, h.FirstSeq, h.LastSeq, h.Truncated)}
		for _, ev := range h.Events {
			out = append(out, "  "+s.formatEvent(ev))
		}
		return out
	case "members":
		m, err := f.Members(args.pos(0))
		if err != nil {
			return []string{"error: " + err.Error()}
		}
		out := []string{fmt.Sprintf("epoch=%d seq=%d count=%d", m.Epoch, m.Seq, len(m.Members))}
		for _, mm := range m.Members {
			line := fmt.Sprintf("  %s joined=%d meta=%q", mm.Name, mm.JoinedSeq, mm.Meta)
			if mm.Ephemeral {
				line += fmt.Sprintf(" node=%s/%d", mm.NodeID, mm.NodeEpoch)
			}
			out = append(out, line)
		}
		return out
	case "room":
		info, err := f.Room(args.pos(0))
		if err != nil {
			return []string{"error: " + err.Error()}
		}
		return []string{fmt.Sprintf("epoch=%d first=%d last=%d members=%d config=%+v",
			info.Epoch, info.FirstSeq, info.LastSeq, info.MemberCount, info.Config)}
	case "stored":
		// Physically stored events of the room's current incarnation: shows sweeping.
		info, err := f.Room(args.pos(0))
		if err != nil {
			return []string{"error: " + err.Error()}
		}
		return []string{fmt.Sprintf("events stored=%d keys stored=%d",
			s.countKeys(f.keys.incarnation(kindEvent, args.pos(0), info.Epoch)),
			s.countKeys(f.keys.incarnation(kindKey, args.pos(0), info.Epoch)))}
	case "stored-all":
		return []string{fmt.Sprintf("keys in group=%d", s.countKeys(f.keys.prefix))}
	case "rule":
		// A namespace rule for the next "namespaces" entry.
		n := Namespace{Prefix: args.pos(0)}
		n.Config, n.Mask = args.config()
		s.rules = append(s.rules, n)
		return nil
	case "restart":
		before := s.r.digest()
		s.r.restart()
		s.subscribe()
		if s.r.digest() != before {
			return []string{"digest changed across restart"}
		}
		return []string{fmt.Sprintf("restarted at applied=%d", s.r.f.AppliedIndex())}
	case "replay":
		// raft replays entries after a restart; applied ones must be no-ops.
		before := s.r.digest()
		for _, res := range s.r.applyBatch(s.all) {
			if res != nil {
				return []string{"replayed entry returned a result"}
			}
		}
		if evs := s.drainEvents(); len(evs) != 0 {
			return append([]string{"replay emitted events:"}, evs...)
		}
		if s.r.digest() != before {
			return []string{"digest changed by replay"}
		}
		return []string{fmt.Sprintf("replayed %d entries: no change", len(s.all))}
	case "snapshot":
		before := s.r.digest()
		next := newReplica(s.t, s.r.group)
		snapshotInto(s.t, s.r.f, next.f)
		s.r = next
		s.subscribe()
		if s.r.digest() != before {
			return []string{"digest changed across snapshot and restore"}
		}
		return []string{fmt.Sprintf("restored at applied=%d", s.r.f.AppliedIndex())}
	}
	s.t.Fatalf("unknown script command %q", args.cmd)
	return nil
}

func (s *scriptRunner) countKeys(prefix []byte) int {
	txn := s.r.f.db.NewTransaction(false)
	defer txn.Discard()
	n := 0
	if err := scanPrefix(txn, prefix, false, func(_, _ []byte) error { n++; return nil }); err != nil {
		s.t.Fatal(err)
	}
	return n
}

type scriptArgs struct {
	t   *testing.T
	cmd string
	p   []string
	kv  map[string]string
}

func tokenize(t *testing.T, line string) scriptArgs {
	a := scriptArgs{t: t, kv: map[string]string{}}
	var tokens []string
	for line = strings.TrimSpace(line); line != ""; line = strings.TrimSpace(line) {
		var tok string
		if i := strings.Index(line, "\""); i >= 0 && !strings.ContainsAny(line[:i], " ") {
			// key="quoted value" or "quoted value"
			rest := line[i:]
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				t.Fatalf("bad quoting in %q: %v", line, err)
			}
			uq, _ := strconv.Unquote(q)
			tok = line[:i] + uq
			line = rest[len(q):]
		} else if i := strings.IndexByte(line, ' '); i >= 0 {
			tok, line = line[:i], line[i:]
		} else {
			tok, line = line, ""
		}
		tokens = append(tokens, tok)
	}
	a.cmd = tokens[0]
	for _, tok := range tokens[1:] {
		if k, v, ok := strings.Cut(tok, "="); ok && !strings.Contains(k, " ") && k != "" {
			a.kv[k] = v
		} else {
			a.p = append(a.p, tok)
		}
	}
	return a
}

func (a scriptArgs) pos(i int) string {
	if i >= len(a.p) {
		return ""
	}
	return a.p[i]
}

func (a scriptArgs) posUint(i int) uint64 {
	v, err := strconv.ParseUint(a.pos(i), 10, 64)
	if err != nil {
		a.t.Fatalf("%s: argument %d: %v", a.cmd, i+1, err)
	}
	return v
}

func (a scriptArgs) str(k string) string { return a.kv[k] }

func (a scriptArgs) bytes(k string) []byte {
	if v, ok := a.kv[k]; ok {
		return []byte(v)
	}
	return nil
}

func (a scriptArgs) uint(k string) uint64 {
	v, ok := a.kv[k]
	if !ok {
		return 0
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		a.t.Fatalf("%s: %s=%q: %v", a.cmd, k, v, err)
	}
	return n
}

func (a scriptArgs) dur(k string) time.Duration {
	d, err := time.ParseDuration(a.kv[k])
	if err != nil {
		a.t.Fatalf("%s: %s: %v", a.cmd, k, err)
	}
	return d
}

func (a scriptArgs) config() (RoomConfig, ConfigField) {
	var c RoomConfig
	var mask ConfigField
	if _, ok := a.kv["history"]; ok {
		c.HistoryMaxCount, mask = a.uint("history"), mask|FieldHistoryMaxCount
	}
	if _, ok := a.kv["age"]; ok {
		c.HistoryMaxAge, mask = a.dur("age"), mask|FieldHistoryMaxAge
	}
	if _, ok := a.kv["keys"]; ok {
		c.KeyWindowCount, mask = a.uint("keys"), mask|FieldKeyWindowCount
	}
	if _, ok := a.kv["keyage"]; ok {
		c.KeyWindowAge, mask = a.dur("keyage"), mask|FieldKeyWindowAge
	}
	if v, ok := a.kv["members_only"]; ok {
		c.MembersOnly, mask = v == "true", mask|FieldMembersOnly
	}
	if v, ok := a.kv["client_publish"]; ok {
		c.NoClientPublish, mask = v == "false", mask|FieldNoClientPublish
	}
	if v, ok := a.kv["presence_history"]; ok {
		c.TransientPresence, mask = v == "false", mask|FieldTransientPresence
	}
	if _, ok := a.kv["max_members"]; ok {
		c.MaxMembers, mask = a.uint("max_members"), mask|FieldMaxMembers
	}
	return c, mask
}
