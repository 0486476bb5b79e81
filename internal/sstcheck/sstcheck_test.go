package sstcheck

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// key is owner's i-th key: 'g', owner (8 bytes), i (4 bytes).
func key(owner uint64, i int) []byte {
	k := binary.BigEndian.AppendUint64([]byte{'g'}, owner)
	return binary.BigEndian.AppendUint32(k, uint32(i))
}

func prefix(owner uint64) []byte { return binary.BigEndian.AppendUint64([]byte{'g'}, owner) }

func value(owner uint64, i int) []byte {
	r := rand.New(rand.NewPCG(owner, uint64(i)))
	v := make([]byte, 300) // random: compression keeps it as it is
	for j := range v {
		v[j] = byte(r.Uint32())
	}
	return v
}

const owners, perOwner = 8, 60

func dbOptions(dir string) badger.Options {
	return badger.DefaultOptions(dir).WithLogger(nil).
		WithCompression(options.Snappy).
		WithChecksumVerificationMode(options.OnBlockRead)
}

// fill writes every owner's keys and closes the DB, which flushes them to
// one table.
func fill(t *testing.T, dir string) {
	t.Helper()
	db, err := badger.Open(dbOptions(dir))
	if err != nil {
		t.Fatal(err)
	}
	for o := uint64(1); o <= owners; o++ {
		err := db.Update(func(txn *badger.Txn) error {
			for i := range perOwner {
				if err := txn.Set(key(o, i), value(o, i)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

func onlyTable(t *testing.T, dir string) string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	if len(files) != 1 {
		t.Fatalf("want one table, have %v", files)
	}
	return files[0]
}

// flip changes one byte inside the stored copy of owner's i-th value.
func flip(t *testing.T, file string, owner uint64, i int) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	at := bytes.Index(b, value(owner, i)[:64])
	if at < 0 {
		t.Fatalf("value %d/%d not in %s", owner, i, file)
	}
	b[at+32] ^= 0x5a
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// readAll returns, per owner, how many of its keys read back unchanged,
// and fails on any changed value.
func readAll(t *testing.T, db *badger.DB) map[uint64]int {
	t.Helper()
	ok := map[uint64]int{}
	err := db.View(func(txn *badger.Txn) error {
		for o := uint64(1); o <= owners; o++ {
			for i := range perOwner {
				item, err := txn.Get(key(o, i))
				if errors.Is(err, badger.ErrKeyNotFound) {
					continue
				}
				if err != nil {
					return err
				}
				v, err := item.ValueCopy(nil)
				if err != nil {
					return err
				}
				if !bytes.Equal(v, value(o, i)) {
					return fmt.Errorf("owner %d key %d: changed value served", o, i)
				}
				ok[o]++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func TestCutBlocksAreRecordedAndGone(t *testing.T) {
	dir := t.TempDir()
	fill(t, dir)
	file := onlyTable(t, dir)
	flip(t, file, 3, 30)
	flip(t, file, 6, 59) // the last key of an owner: its block may hold the next owner's first keys

	l, cuts, err := Open(dbOptions(dir))
	if err != nil {
		t.Fatal(err)
	}
	if len(cuts) != 2 {
		t.Fatalf("cuts %+v, want 2", cuts)
	}
	damaged := map[uint64]bool{}
	for o := uint64(1); o <= owners; o++ {
		if why := l.Damaged(o, prefix(o)); why != "" {
			damaged[o] = true
			t.Logf("owner %d: %s", o, why)
		}
	}
	if !damaged[3] || !damaged[6] {
		t.Fatalf("owners 3 and 6 lost keys; damaged: %v", damaged)
	}
	if _, err := os.Stat(file + ".corrupt"); err != nil {
		t.Fatalf("the corrupt table is not kept: %v", err)
	}

	db, err := badger.Open(dbOptions(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.VerifyChecksum(); err != nil {
		t.Fatalf("a bad block is left: %v", err)
	}
	ok := readAll(t, db)
	for o := uint64(1); o <= owners; o++ {
		if !damaged[o] && ok[o] != perOwner {
			t.Fatalf("owner %d is not damaged but only %d of its %d keys read", o, ok[o], perOwner)
		}
		if damaged[o] && ok[o] == perOwner && (o == 3 || o == 6) {
			t.Fatalf("owner %d lost no key", o)
		}
	}
	// A compaction over the rewritten table keeps every good key.
	if err := db.Flatten(1); err != nil {
		t.Fatal(err)
	}
	if ok2 := readAll(t, db); fmt.Sprint(ok2) != fmt.Sprint(ok) {
		t.Fatalf("after a compaction %v, before %v", ok2, ok)
	}

	// The record survives a restart; dropping clears it for that owner only.
	l2, cuts, err := Open(dbOptions(t.TempDir()))
	if err != nil || len(cuts) != 0 || l2.Damaged(3, prefix(3)) != "" {
		t.Fatalf("an empty DB: %v %v", cuts, err)
	}
	if err := l.Dropped(3, prefix(3)); err != nil {
		t.Fatal(err)
	}
	db.Close()
	l3, cuts, err := Open(dbOptions(dir))
	if err != nil || len(cuts) != 0 {
		t.Fatalf("reopen: %v %v", cuts, err)
	}
	if l3.Damaged(3, prefix(3)) != "" || l3.Damaged(6, prefix(6)) == "" {
		t.Fatalf("after owner 3 dropped its keys: 3 %q, 6 %q", l3.Damaged(3, prefix(3)), l3.Damaged(6, prefix(6)))
	}
}

// The last block is the one badger's own table reader cannot do without.
func TestCutLastBlock(t *testing.T) {
	dir := t.TempDir()
	fill(t, dir)
	flip(t, onlyTable(t, dir), owners, perOwner-1)
	if _, err := badger.Open(dbOptions(dir)); err == nil {
		t.Log("badger opened the DB with its last block bad")
	} else {
		t.Logf("badger alone: %v", err)
	}
	l, cuts, err := Open(dbOptions(dir))
	if err != nil || len(cuts) != 1 || l.Damaged(owners, prefix(owners)) == "" {
		t.Fatalf("cuts %+v, err %v", cuts, err)
	}
	if len(cuts[0].Range.Hi) != 0 {
		t.Fatalf("the last block's range has an end: %+v", cuts[0].Range)
	}
	db, err := badger.Open(dbOptions(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if ok := readAll(t, db); ok[1] != perOwner {
		t.Fatalf("owner 1 lost keys: %v", ok)
	}
}

func TestUnreadableIndexIsAnError(t *testing.T) {
	dir := t.TempDir()
	fill(t, dir)
	file := onlyTable(t, dir)
	b, _ := os.ReadFile(file)
	b[len(b)-40] ^= 0xff // inside the index or its checksum
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Open(dbOptions(dir)); err == nil {
		t.Fatal("a table with a corrupt index was accepted")
	}
}

func TestRangeOverlaps(t *testing.T) {
	r := Range{Lo: []byte("g\x00\x03abc"), Hi: []byte("g\x00\x05")}
	for _, c := range []struct {
		p    string
		want bool
	}{{"g\x00\x02", false}, {"g\x00\x03", true}, {"g\x00\x04", true}, {"g\x00\x05", true}, {"g\x00\x06", false}, {"r", false}} {
		if got := r.Overlaps([]byte(c.p)); got != c.want {
			t.Errorf("%q: %v, want %v", c.p, got, c.want)
		}
	}
	open := Range{Lo: []byte("g\x00\x05")}
	if !open.Overlaps([]byte("r\x00\x01")) || open.Overlaps([]byte("g\x00\x04")) {
		t.Error("a range without an end")
	}
}

// BenchmarkCheck measures the check every open pays: reading and
// verifying every block of a DB's tables (here about 64 MiB in several
// tables) when none is bad.
func BenchmarkCheck(b *testing.B) {
	dir := b.TempDir()
	db, err := badger.Open(dbOptions(dir).WithValueThreshold(1 << 20))
	if err != nil {
		b.Fatal(err)
	}
	v := make([]byte, 1000)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 64 << 10 {
		for j := range v {
			v[j] = byte(r.Uint32())
		}
		k := key(uint64(i%64), i)
		if err := db.Update(func(txn *badger.Txn) error { return txn.Set(k, v) }); err != nil {
			b.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		b.Fatal(err)
	}
	var size int64
	files, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	for _, f := range files {
		st, _ := os.Stat(f)
		size += st.Size()
	}
	b.SetBytes(size)
	b.ReportMetric(float64(len(files)), "tables")
	b.ResetTimer()
	for range b.N {
		if _, cuts, err := Open(dbOptions(dir)); err != nil || len(cuts) != 0 {
			b.Fatal(cuts, err)
		}
	}
}
