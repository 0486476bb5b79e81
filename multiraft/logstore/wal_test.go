package logstore

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// openWALTest opens a wal backend whose segments turn over every 64 KiB,
// so a few hundred entries span several.
func openWALTest(t *testing.T, dir string) Backend {
	t.Helper()
	b, err := Open(Config{Kind: KindWAL, Dir: dir, Logger: discardLogger(), WALSegmentSize: minWALSegmentSize})
	if err != nil {
		t.Fatalf("open wal backend in %s: %v", dir, err)
	}
	return b
}

func walSegments(t *testing.T, dir string) []string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, walDirName, "wal-*.log"))
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// storeInBatches stores lo..hi in batches of 20 entries of size bytes.
func storeInBatches(t *testing.T, s Store, lo, hi uint64, size int) {
	t.Helper()
	for i := lo; i <= hi; i += 20 {
		if err := s.StoreLogs(logsRange(i, min(i+19, hi), size)); err != nil {
			t.Fatal(err)
		}
	}
}

// A segment goes once raft compacted every entry in it, and what its
// stable records said survives in the next segment's checkpoint.
func TestWALSegmentsGoWhenCompacted(t *testing.T) {
	dir := t.TempDir()
	b := openWALTest(t, dir)
	s := mustGroup(t, b, 1)
	if err := s.SetUint64([]byte("CurrentTerm"), 7); err != nil {
		t.Fatal(err)
	}
	if err := s.Set([]byte("LastVoteCand"), []byte("n2")); err != nil {
		t.Fatal(err)
	}
	other := mustGroup(t, b, 2)
	if err := other.StoreLogs(logsRange(1, 5, 100)); err != nil {
		t.Fatal(err)
	}
	storeInBatches(t, s, 1, 1000, 300)
	grown := len(walSegments(t, dir))
	if grown < 4 {
		t.Fatalf("%d segments after 300 KB of entries, want at least 4 of 64 KiB", grown)
	}
	// Compaction leaves only the newest entries, and the other group
	// goes: nothing lives in the older segments any more.
	if err := s.DeleteRange(1, 990); err != nil {
		t.Fatal(err)
	}
	if err := b.DropGroup(2); err != nil {
		t.Fatal(err)
	}
	storeInBatches(t, s, 1001, 1010, 300)
	if n := len(walSegments(t, dir)); n > 2 {
		t.Fatalf("%d segments after compaction (%d before), want at most 2", n, grown)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	b = openWALTest(t, dir)
	defer b.Close()
	s = mustGroup(t, b, 1)
	checkBounds(t, s, 991, 1010)
	for i := uint64(991); i <= 1010; i++ {
		checkLog(t, s, fullLog(i, 300))
	}
	if term, err := s.GetUint64([]byte("CurrentTerm")); err != nil || term != 7 {
		t.Fatalf("CurrentTerm after reopen = %d, %v; want 7", term, err)
	}
	if v, err := s.Get([]byte("LastVoteCand")); err != nil || string(v) != "n2" {
		t.Fatalf("LastVoteCand after reopen = %q, %v; want n2", v, err)
	}
	if ids, err := b.Groups(); err != nil || len(ids) != 1 || ids[0] != 1 {
		t.Fatalf("groups after reopen = %v, %v; want [1]", ids, err)
	}
}

// newestSegment returns the path of the newest segment that holds more
// than its checkpoint, and its size.
func newestSegment(t *testing.T, dir string) string {
	t.Helper()
	segs := walSegments(t, dir)
	if len(segs) == 0 {
		t.Fatal("no segments")
	}
	return segs[len(segs)-1]
}

func appendFile(t *testing.T, path string, p []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(p); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// What a crash leaves at the end of the newest segment, a write that was
// never synced and so never acknowledged, is cut away; everything before
// it stays, and the log takes writes again.
func TestWALCutsAnUnfinishedWrite(t *testing.T) {
	record, _ := appendWALRecord(nil, &walOp{kind: walEntry, group: 1, index: 41, val: encodeLog(nil, fullLog(41, 1500))})
	// A write of two records where the disk never wrote a sector of the
	// first: 1,100 zero bytes hold a whole aligned sector wherever the
	// record starts.
	next, _ := appendWALRecord(nil, &walOp{kind: walEntry, group: 1, index: 42, val: encodeLog(nil, fullLog(42, 100))})
	tornSector := append(append([]byte(nil), record...), next...)
	clear(tornSector[300:1400])
	for name, tail := range map[string][]byte{
		"half a header":       record[:5],
		"half a record":       record[:len(record)/2],
		"zeros":               make([]byte, 4096),
		"a record and zeros":  append(append([]byte(nil), record[:300]...), make([]byte, 2000)...),
		"an unwritten sector": tornSector,
	} {
		t.Run(strings.ReplaceAll(name, " ", "_"), func(t *testing.T) {
			dir := t.TempDir()
			b := openWALTest(t, dir)
			s := mustGroup(t, b, 1)
			if err := s.StoreLogs(logsRange(1, 40, 100)); err != nil {
				t.Fatal(err)
			}
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			appendFile(t, newestSegment(t, dir), tail)

			b = openWALTest(t, dir)
			s = mustGroup(t, b, 1)
			checkBounds(t, s, 1, 40)
			checkLog(t, s, fullLog(40, 100))
			if err := s.StoreLogs(logsRange(41, 50, 100)); err != nil {
				t.Fatal(err)
			}
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			b = openWALTest(t, dir)
			defer b.Close()
			s = mustGroup(t, b, 1)
			checkBounds(t, s, 1, 50)
			checkLog(t, s, fullLog(45, 100))
		})
	}
}

// A changed byte anywhere but a cut-off tail is damage: Open refuses and
// says where, rather than serve a log with a hole in it.
func TestWALRefusesDamage(t *testing.T) {
	dir := t.TempDir()
	b := openWALTest(t, dir)
	s := mustGroup(t, b, 1)
	storeInBatches(t, s, 1, 400, 300)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	segs := walSegments(t, dir)
	if len(segs) < 3 {
		t.Fatalf("%d segments, want at least 3", len(segs))
	}
	for _, path := range []string{segs[0], segs[len(segs)-2]} {
		flipByte(t, path, 2000)
		_, err := Open(Config{Kind: KindWAL, Dir: dir, Logger: discardLogger(), WALSegmentSize: minWALSegmentSize})
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), filepath.Base(path)) {
			t.Fatalf("open with a changed byte in %s: err = %v, want ErrCorrupt naming the file", filepath.Base(path), err)
		}
		flipByte(t, path, 2000)
	}
	b = openWALTest(t, dir)
	defer b.Close()
	checkLog(t, mustGroup(t, b, 1), fullLog(400, 300))
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [1]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x40
	if _, err := f.WriteAt(b[:], off); err != nil {
		t.Fatal(err)
	}
}

// An entry that changes on disk while the node runs is never handed to
// raft: its own checksum fails the read.
func TestWALReadChecksEntries(t *testing.T) {
	dir := t.TempDir()
	b := openWALTest(t, dir)
	defer b.Close()
	s := mustGroup(t, b, 1)
	if err := s.StoreLogs(logsRange(1, 3, 200)); err != nil {
		t.Fatal(err)
	}
	wb := b.(*walBackend)
	wb.mu.RLock()
	loc, _ := wb.groups[1].entries.get(2)
	wb.mu.RUnlock()
	flipByte(t, loc.seg.path, int64(loc.off)+int64(loc.n)/2)
	var l raft.Log
	if err := s.GetLog(2, &l); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("read of a changed entry: err = %v, want ErrCorrupt", err)
	}
	checkLog(t, s, fullLog(3, 200))
}

// A record's length and checksum frame exactly its body.
func TestWALRecordRoundTrip(t *testing.T) {
	ops := []walOp{
		{kind: walCreate, group: 3},
		{kind: walEntry, group: 3, index: 9, val: encodeLog(nil, fullLog(9, 50))},
		{kind: walDelete, group: 3, lo: 1, hi: 1 << 40},
		{kind: walStable, group: 3, key: []byte("CurrentTerm"), val: binary.BigEndian.AppendUint64(nil, 5)},
		{kind: walDrop, group: 3},
	}
	var p []byte
	for i := range ops {
		p, _ = appendWALRecord(p, &ops[i])
	}
	for i, want := range ops {
		got, n, at, err := parseWALRecord(p)
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if got.kind != want.kind || got.group != want.group || got.index != want.index ||
			got.lo != want.lo || got.hi != want.hi || string(got.key) != string(want.key) || string(got.val) != string(want.val) {
			t.Fatalf("record %d: got %+v, want %+v", i, got, want)
		}
		if want.kind == walEntry && string(p[at:at+len(want.val)]) != string(want.val) {
			t.Fatalf("record %d: entry offset %d does not point at the entry", i, at)
		}
		p = p[n:]
	}
	if _, _, _, err := parseWALRecord([]byte{0, 0, 0, 0, 0, 0, 0, 0}); err == nil {
		t.Fatal("a zero header parsed")
	}
}

// A group raft never compacts (an idle one takes no snapshots) must not
// hold the log's disk: its entries move forward and old segments go.
func TestWALIdleGroupDoesNotPinSegments(t *testing.T) {
	dir := t.TempDir()
	b := openWALTest(t, dir)
	idle := mustGroup(t, b, 1)
	if err := idle.StoreLogs(logsRange(1, 5, 100)); err != nil {
		t.Fatal(err)
	}
	busy := mustGroup(t, b, 2)
	most := 0
	for lo := uint64(1); lo <= 3000; lo += 100 {
		storeInBatches(t, busy, lo, lo+99, 300)
		// raft compacts the busy group after its snapshots.
		if lo > 200 {
			if err := busy.DeleteRange(1, lo-100); err != nil {
				t.Fatal(err)
			}
		}
		most = max(most, len(walSegments(t, dir)))
	}
	if most > walKeepSegments+2 {
		t.Fatalf("the log grew to %d segments with one idle group, want at most %d", most, walKeepSegments+2)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openWALTest(t, dir)
	defer b.Close()
	idle = mustGroup(t, b, 1)
	checkBounds(t, idle, 1, 5)
	for i := uint64(1); i <= 5; i++ {
		checkLog(t, idle, fullLog(i, 100))
	}
	checkLog(t, mustGroup(t, b, 2), fullLog(3000, 300))
}

// Reads served from the block read ahead are the entries as stored: with
// other groups' records between them, with entries stored after the block
// was read, and with entries rewritten after a truncation.
func TestWALReadAhead(t *testing.T) {
	b := openWALTest(t, t.TempDir())
	defer b.Close()
	s1, s2 := mustGroup(t, b, 1), mustGroup(t, b, 2)
	size := func(i uint64) int { return 50 + int(i%7)*300 }
	store := func(s Store, lo, hi uint64, salt int) {
		t.Helper()
		for i := lo; i <= hi; i++ {
			if err := s.StoreLog(fullLog(i, size(i)+salt)); err != nil {
				t.Fatal(err)
			}
		}
	}
	readAll := func(s Store, lo, hi uint64, salt func(uint64) int) {
		t.Helper()
		for i := lo; i <= hi; i++ {
			checkLog(t, s, fullLog(i, size(i)+salt(i)))
		}
	}
	none := func(uint64) int { return 0 }
	for round := uint64(0); round < 4; round++ {
		lo := round*40 + 1
		store(s1, lo, lo+39, 0)
		store(s2, lo, lo+39, 0)
		readAll(s1, 1, lo+39, none) // the block ends where the log did
		readAll(s2, 1, lo+39, none)
	}
	// Truncate group 1's tail and store it again, different.
	if err := s1.DeleteRange(101, 160); err != nil {
		t.Fatal(err)
	}
	store(s1, 101, 160, 3)
	readAll(s1, 1, 160, func(i uint64) int {
		if i > 100 {
			return 3
		}
		return 0
	})
	readAll(s2, 1, 160, none)
	st := s1.(*walStore)
	st.aheadMu.Lock()
	n := len(st.ahead.data)
	st.aheadMu.Unlock()
	if n <= size(160) {
		t.Fatalf("the last block read ahead holds %d bytes; reads are not ahead", n)
	}
}

// A checkpoint that passed its checksum but does not decode (a bug that
// wrote it, or a hand-edited file) is refused like damage: applied as
// far as it decodes, it would silently drop groups and their terms.
func TestWALRefusesACheckpointThatDoesNotDecode(t *testing.T) {
	good := walOp{kind: walCheckpoint, val: []byte{1, 4, 1, 3, 'a', 'b', 'c', 1, 9}}
	bad := walOp{kind: walCheckpoint, val: []byte{2, 4, 1, 3, 'a', 'b', 'c', 1, 9}} // says two groups, holds one
	for _, tc := range []struct {
		op     walOp
		refuse bool
	}{{good, false}, {bad, true}} {
		dir := t.TempDir()
		if err := os.MkdirAll(filepath.Join(dir, walDirName), 0o700); err != nil {
			t.Fatal(err)
		}
		seg, _ := appendWALRecord(nil, &tc.op)
		seg, _ = appendWALRecord(seg, &walOp{kind: walCreate, group: 1})
		path := filepath.Join(dir, walDirName, "wal-0000000000000001.log")
		if err := os.WriteFile(path, seg, 0o600); err != nil {
			t.Fatal(err)
		}
		b, err := Open(Config{Kind: KindWAL, Dir: dir, Logger: discardLogger(), WALSegmentSize: minWALSegmentSize})
		if tc.refuse {
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "checkpoint") {
				t.Fatalf("open on a checkpoint that does not decode: err = %v, want ErrCorrupt naming the checkpoint", err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("open on a good checkpoint: %v", err)
		}
		ids, err := b.Groups()
		if err != nil || len(ids) != 2 || ids[0] != 1 || ids[1] != 4 {
			t.Fatalf("groups %v (err %v), want [1 4]", ids, err)
		}
		s := mustGroup(t, b, 4)
		if v, err := s.Get([]byte("abc")); err != nil || string(v) != "\x09" {
			t.Fatalf("group 4's stable value abc = %q (err %v), want 09", v, err)
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// A changed bit in the length of a record in the newest segment is
// damage, not a write a crash cut short: taken for one, it cut away every
// record after it, stable values (raft's term and vote) included.
func TestWALRefusesADamagedLengthInTheNewestSegment(t *testing.T) {
	for bit := range 32 {
		dir := t.TempDir()
		b := openWALTest(t, dir)
		s := mustGroup(t, b, 1)
		storeInBatches(t, s, 1, 40, 100)
		if err := s.SetUint64([]byte("CurrentTerm"), 7); err != nil {
			t.Fatal(err)
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		segs := walSegments(t, dir)
		newest := segs[len(segs)-1]
		data, err := os.ReadFile(newest)
		if err != nil {
			t.Fatal(err)
		}
		// The third record: past the checkpoint and the group's create.
		var off int
		for range 2 {
			_, n, _, err := parseWALRecord(data[off:])
			if err != nil {
				t.Fatal(err)
			}
			off += n
		}
		binary.LittleEndian.PutUint32(data[off:], binary.LittleEndian.Uint32(data[off:])^1<<bit)
		if err := os.WriteFile(newest, data, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err = Open(Config{Kind: KindWAL, Dir: dir, Logger: discardLogger(), WALSegmentSize: minWALSegmentSize})
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("bit %d of a length in the newest segment changed: err = %v, want ErrCorrupt", bit, err)
		}
	}
}

// A segment larger than any the log writes is refused before it is read:
// a stray file of many gigabytes must not be loaded into memory.
func TestWALRefusesAnOversizedSegmentUnread(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, walDirName), 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, walDirName, "wal-0000000000000001.log")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	// Sparse: it takes no disk, but reading it would take 4 GiB.
	if err := f.Truncate(maxWALSegmentBytes + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err = Open(Config{Kind: KindWAL, Dir: dir, Logger: discardLogger(), WALSegmentSize: minWALSegmentSize})
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "more than a segment may") {
		t.Fatalf("open on a %d-byte segment: err = %v, want ErrCorrupt for its size", int64(maxWALSegmentBytes)+1, err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 64<<20 {
		t.Fatalf("refusing the segment allocated %d bytes: it was read", got)
	}
}
