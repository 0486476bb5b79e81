// Package sstcheck checks every block of a badger DB's tables before the
// DB opens, cuts the corrupt ones out, and keeps a durable ledger of the
// key ranges it cut, so that the owners of those keys know their data is
// incomplete until they drop it.
//
// Why before badger opens, and why cut: badger checks a block's checksum
// as it reads the block (options.OnBlockRead) but tells no caller. A Get
// treats a bad block as holding no key (an older version, or none, is
// returned), an iterator ends at it, and a compaction, which iterates,
// writes the table out again without the bad block and everything after
// it. Keys then vanish silently whenever a compaction runs, from every
// owner whose keys the table holds. Checked at open, before any
// compaction, the bad blocks are still there to be found; rewriting each
// table without its bad blocks leaves a DB whose every block reads, and
// the ledger, written first, names exactly what was lost.
//
// It also readies the DB's memtable and value logs for replay
// (PrepareLogs): synced, so that what badger serves after a restart
// survives a power loss, and the ones a power loss left empty removed,
// since badger refuses to open a DB that has one.
package sstcheck

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/table"
	"github.com/dgraph-io/badger/v4/y"
	"github.com/dgraph-io/ristretto/v2/z"
)

// Range is an inclusive range of keys as the DB's users see them (without
// badger's version suffix). An empty Hi has no upper bound.
type Range struct {
	Lo []byte `json:"lo"`
	Hi []byte `json:"hi,omitempty"`
}

// Overlaps reports whether some key starting with prefix lies in r.
func (r Range) Overlaps(prefix []byte) bool {
	return (len(r.Hi) == 0 || bytes.Compare(prefix, r.Hi) <= 0) &&
		(bytes.Compare(r.Lo, prefix) < 0 || bytes.HasPrefix(r.Lo, prefix))
}

// Cut is one corrupt block cut out of a table.
type Cut struct {
	Table string `json:"table"` // the table's file name
	Block int    `json:"block"` // the block's position in the table
	Range Range  `json:"range"` // every key the block can have held
	Err   string `json:"error"` // why the block was refused
}

// Repair checks every table that the manifest in opts.Dir lists, block by
// block. If some blocks are bad it first passes them to record, which
// must make them durable (a crash after the rewrite must not forget what
// was lost), then replaces each such table, under the same file name, by
// one holding only its good blocks' entries, and keeps the old file beside
// it as NNNNNN.sst.corrupt for inspection. A table that cannot be read at
// all (its index is corrupt) is an error: badger would refuse to open it
// too, and what it held is not known. A DB without a manifest is new and
// has nothing to check.
func Repair(opts badger.Options, record func([]Cut) error) ([]Cut, error) {
	f, err := os.Open(filepath.Join(opts.Dir, badger.ManifestFilename))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("sstcheck: %w", err)
	}
	mf, _, err := badger.ReplayManifestFile(f, opts.ExternalMagicVersion, opts)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("sstcheck: read the manifest in %s: %w", opts.Dir, err)
	}
	ids := make([]uint64, 0, len(mf.Tables))
	for id := range mf.Tables {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var cuts []Cut
	fixes := map[uint64][]entry{}
	for _, id := range ids {
		tm := mf.Tables[id]
		if tm.KeyID != 0 {
			return nil, fmt.Errorf("sstcheck: table %d is encrypted; encrypted DBs are not checked", id)
		}
		name := table.NewFilename(id, opts.Dir)
		if _, err := os.Stat(name); errors.Is(err, fs.ErrNotExist) {
			continue // badger reports a missing table itself
		}
		mf, err := z.OpenMmapFile(name, os.O_RDONLY, 0)
		if err != nil {
			return nil, fmt.Errorf("sstcheck: %w", err)
		}
		good, bad, err := checkTable(mf.Data, tm.Compression)
		if cerr := mf.Close(-1); err == nil && cerr != nil {
			return nil, fmt.Errorf("sstcheck: %w", cerr)
		}
		if err != nil {
			return nil, fmt.Errorf("sstcheck: table %s cannot be read: %w", name, err)
		}
		if len(bad) == 0 {
			continue
		}
		for i := range bad {
			bad[i].Table = filepath.Base(name)
		}
		cuts = append(cuts, bad...)
		fixes[id] = good
	}
	if len(cuts) == 0 {
		return nil, nil
	}
	if err := record(cuts); err != nil {
		return nil, fmt.Errorf("sstcheck: record the cut blocks: %w", err)
	}
	for _, id := range ids {
		if good, ok := fixes[id]; ok {
			if err := rewrite(opts, table.NewFilename(id, opts.Dir), mf.Tables[id].Compression, good); err != nil {
				return nil, fmt.Errorf("sstcheck: rewrite table %d: %w", id, err)
			}
		}
	}
	return cuts, nil
}

// checkTable reads every block of one table; what it returns shares no
// memory with data. It returns the bad blocks
// and, when there are some, the entries of the good ones in order, which
// are what the table is rewritten with.
func checkTable(data []byte, c options.CompressionType) (good []entry, bad []Cut, err error) {
	defer func() {
		// The index passed its checksum, so its flatbuffer is as badger
		// wrote it; this is a last guard against a layout we misread.
		if r := recover(); r != nil {
			err = fmt.Errorf("unreadable layout: %v", r)
		}
	}()
	idx, err := readIndex(data)
	if err != nil {
		return nil, nil, err
	}
	n := idx.blocks()
	var buf []byte
	// read verifies block i; with entries it also decodes its entries.
	read := func(i int, entries bool) ([]entry, error) {
		first, raw, err := idx.block(data, i)
		if err != nil {
			return nil, err
		}
		blk, end, err := verifyBlock(raw, buf, c)
		if err != nil {
			return nil, err
		}
		if cap(blk) > cap(buf) {
			buf = blk
		}
		if len(blk) < 4 || binary.NativeEndian.Uint16(blk) != 0 || int(binary.NativeEndian.Uint16(blk[2:])) != len(first) || !bytes.HasPrefix(blk[4:], first) {
			return nil, errors.New("first key differs from the index's")
		}
		if !entries {
			return nil, nil
		}
		return blockEntries(blk, end)
	}
	cut := map[int]bool{}
	for i := range n {
		if _, err := read(i, false); err != nil {
			// Block i holds keys from its first key to the next block's
			// first key; versions of one key may straddle the boundary,
			// so both ends are in. The last block's end is not in the
			// index: its range has no upper bound.
			first, _, _ := idx.block(data, i)
			r := Range{Lo: bytes.Clone(y.ParseKey(first))}
			if i+1 < n {
				next, _, _ := idx.block(data, i+1)
				r.Hi = bytes.Clone(y.ParseKey(next))
			}
			bad = append(bad, Cut{Block: i, Range: r, Err: err.Error()})
			cut[i] = true
		}
	}
	if len(bad) == 0 {
		return nil, nil, nil
	}
	for i := range n {
		if cut[i] {
			continue
		}
		entries, err := read(i, true)
		if err != nil {
			return nil, nil, fmt.Errorf("block %d: %w", i, err)
		}
		good = append(good, entries...)
	}
	if len(good) == 0 {
		// A table must hold a key. Everything the table held is in a cut
		// range, which its owners drop before trusting again, so a
		// deletion marker at the first key changes nothing they keep.
		first, _, _ := idx.block(data, 0)
		good = []entry{{key: bytes.Clone(first), value: []byte{bitDelete, 0, 0}}}
	}
	return good, bad, nil
}

// bitDelete is badger's value meta bit of a deletion marker.
const bitDelete = 1

// rewrite replaces the table at name by one holding entries, which are in
// key order.
func rewrite(opts badger.Options, name string, c options.CompressionType, entries []entry) error {
	b := table.NewTableBuilder(table.Options{
		TableSize:            uint64(opts.BaseTableSize),
		BlockSize:            opts.BlockSize,
		BloomFalsePositive:   opts.BloomFalsePositive,
		Compression:          c,
		ZSTDCompressionLevel: opts.ZSTDCompressionLevel,
	})
	defer b.Close()
	for _, e := range entries {
		var vs y.ValueStruct
		vs.Decode(e.value)
		b.Add(e.key, vs, vlogLen(vs))
	}
	data := b.Finish()
	tmp := name + ".rewrite"
	if err := writeSynced(tmp, data); err != nil {
		return err
	}
	// A link, not a rename, keeps the old file: the table's name never
	// goes missing, whatever point a crash stops at.
	if err := os.Remove(name + ".corrupt"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.Link(name, name+".corrupt"); err != nil {
		return err
	}
	if err := os.Rename(tmp, name); err != nil {
		return err
	}
	return syncDir(filepath.Dir(name))
}

// vlogLen is the length of the value a value pointer points to (badger's
// valuePointer: fid, len, offset, big endian), which badger counts in a
// table's on-disk size; 0 for a value stored in the table.
func vlogLen(vs y.ValueStruct) uint32 {
	const bitValuePointer = 2
	if vs.Meta&bitValuePointer == 0 || len(vs.Value) < 12 {
		return 0
	}
	return binary.BigEndian.Uint32(vs.Value[4:8])
}

func writeSynced(name string, data []byte) error {
	f, err := os.OpenFile(name, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if serr := f.Sync(); err == nil {
		err = serr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
