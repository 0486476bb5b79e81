package logstore

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// testKinds is the table of backends every conformance test runs over.
var testKinds = []Kind{KindBadger, KindBolt, KindWAL}

func discardLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func openTest(t testing.TB, kind Kind, dir string) Backend {
	t.Helper()
	b, err := Open(Config{Kind: kind, Dir: dir, Logger: discardLogger()})
	if err != nil {
		t.Fatalf("open %s backend in %s: %v", kind, dir, err)
	}
	return b
}

func mustGroup(t testing.TB, b Backend, id uint64) Store {
	t.Helper()
	s, err := b.Group(id)
	if err != nil {
		t.Fatalf("group %d: %v", id, err)
	}
	return s
}

// fullLog builds an entry with every field set.
func fullLog(index uint64, size int) *raft.Log {
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(index + uint64(i)*7)
	}
	return &raft.Log{
		Index:      index,
		Term:       index/10 + 1,
		Type:       raft.LogType(index % 6),
		Data:       data,
		Extensions: []byte(fmt.Sprintf("ext-%d", index)),
		AppendedAt: time.Unix(1_700_000_000+int64(index), int64(index*997%1e9)),
	}
}

func logsRange(lo, hi uint64, size int) []*raft.Log {
	var logs []*raft.Log
	for i := lo; i <= hi; i++ {
		logs = append(logs, fullLog(i, size))
	}
	return logs
}

func equalLog(a, b *raft.Log) bool {
	return a.Index == b.Index && a.Term == b.Term && a.Type == b.Type &&
		bytes.Equal(a.Data, b.Data) && bytes.Equal(a.Extensions, b.Extensions) &&
		a.AppendedAt.Equal(b.AppendedAt)
}

func checkLog(t testing.TB, s Store, want *raft.Log) {
	t.Helper()
	var got raft.Log
	if err := s.GetLog(want.Index, &got); err != nil {
		t.Fatalf("get log %d: %v", want.Index, err)
	}
	if !equalLog(&got, want) {
		t.Fatalf("log %d: got %+v, want %+v", want.Index, got, *want)
	}
}

func checkBounds(t testing.TB, s Store, first, last uint64) {
	t.Helper()
	f, err := s.FirstIndex()
	if err != nil {
		t.Fatalf("first index: %v", err)
	}
	l, err := s.LastIndex()
	if err != nil {
		t.Fatalf("last index: %v", err)
	}
	if f != first || l != last {
		t.Fatalf("bounds = %d..%d, want %d..%d", f, l, first, last)
	}
}

func checkMissing(t testing.TB, s Store, index uint64) {
	t.Helper()
	var l raft.Log
	if err := s.GetLog(index, &l); err != raft.ErrLogNotFound {
		t.Fatalf("get log %d: err = %v, want raft.ErrLogNotFound", index, err)
	}
}

// startChild runs this test binary again as a child that runs only test,
// with env added to its environment; the child's stdout is returned to
// read, its stderr goes to ours.
func startChild(t *testing.T, test string, env ...string) (*exec.Cmd, io.Reader) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, out
}
