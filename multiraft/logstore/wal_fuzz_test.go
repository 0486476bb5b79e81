package logstore

import (
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
)

// FuzzWALOpen opens the log on a segment of checksummed records whose
// bodies the fuzzer chooses, followed by raw bytes: records no disk fault
// makes (a checksum guards each), as a bug or a hand-edited file would.
// Open refuses with an error or opens a log whose every read answers or
// errs; nothing panics, and a log it opened takes writes and, closed,
// opens again.
func FuzzWALOpen(f *testing.F) {
	bodies := func(ops ...walOp) []byte {
		var out []byte
		for i := range ops {
			rec, _ := appendWALRecord(nil, &ops[i])
			body := rec[walHeaderLen:]
			out = binary.LittleEndian.AppendUint16(out, uint16(len(body)))
			out = append(out, body...)
		}
		return out
	}
	entry := func(group, index uint64) walOp {
		return walOp{kind: walEntry, group: group, index: index, val: encodeLog(nil, fullLog(index, 20))}
	}
	f.Add(bodies(walOp{kind: walCheckpoint}, walOp{kind: walCreate, group: 1}, entry(1, 1), entry(1, 2)), []byte(nil))
	f.Add(bodies(walOp{kind: walCheckpoint}, entry(1, 5), entry(1, 9), walOp{kind: walDelete, group: 1, lo: 9, hi: 5}), []byte{1, 2, 3})
	f.Add(bodies(entry(2, ^uint64(0)), walOp{kind: walDelete, group: 2, lo: 0, hi: ^uint64(0)}, entry(2, 1)), []byte(nil))
	f.Add(bodies(walOp{kind: walStable, group: 1, key: []byte("CurrentTerm"), val: []byte{1}}, walOp{kind: walDrop, group: 1}), make([]byte, 600))
	f.Add(bodies(walOp{kind: walCheckpoint, val: []byte{2, 1, 1, 3, 'a', 'b', 'c', 9}}), []byte(nil))
	f.Fuzz(func(t *testing.T, recs, tail []byte) {
		dir := t.TempDir()
		if err := os.MkdirAll(filepath.Join(dir, walDirName), 0o700); err != nil {
			t.Fatal(err)
		}
		var seg []byte
		for len(recs) >= 2 {
			n := min(int(binary.LittleEndian.Uint16(recs)), len(recs)-2)
			body := recs[2 : 2+n]
			recs = recs[2+n:]
			seg = binary.LittleEndian.AppendUint32(seg, uint32(len(body)))
			seg = binary.LittleEndian.AppendUint32(seg, crc32.Checksum(body, castagnoli))
			seg = append(seg, body...)
		}
		seg = append(seg, tail...)
		if err := os.WriteFile(filepath.Join(dir, walDirName, "wal-0000000000000001.log"), seg, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := Config{Kind: KindWAL, Dir: dir, Logger: discardLogger(), WALSegmentSize: minWALSegmentSize}
		b, err := Open(cfg)
		if err != nil {
			return
		}
		ids, err := b.Groups()
		if err != nil {
			t.Fatalf("groups of an opened log: %v", err)
		}
		for _, id := range ids {
			s, err := b.Group(id)
			if err != nil {
				continue
			}
			first, err1 := s.FirstIndex()
			last, err2 := s.LastIndex()
			if err1 != nil || err2 != nil {
				continue
			}
			for i := first; i-first < 64 && i <= last; i++ {
				var l raft.Log
				_ = s.GetLog(i, &l)
				if i == ^uint64(0) {
					break
				}
			}
			_, _ = s.Get([]byte("CurrentTerm"))
			_ = s.SetUint64([]byte("CurrentTerm"), 7)
			if last < ^uint64(0) {
				_ = s.StoreLog(&raft.Log{Index: last + 1, Term: 1, Data: []byte("after")})
			}
			_ = s.DeleteRange(first, first)
		}
		if err := b.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
		b, err = Open(cfg)
		if err != nil {
			t.Fatalf("a log that opened, took writes and closed does not open again: %v", err)
		}
		if err := b.Close(); err != nil {
			t.Fatalf("close after reopen: %v", err)
		}
	})
}
