package sstcheck

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4/fb"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/pb"
	"github.com/dgraph-io/badger/v4/y"
	"github.com/klauspost/compress/snappy"
	"google.golang.org/protobuf/proto"
)

// This file reads badger's table format (badger v4, table/builder.go) on
// its own instead of through table.OpenTable, because OpenTable reads the
// last block to find the table's biggest key and fails when that block is
// bad, and badger's table iterator ends silently at a bad block. The
// format:
//
//	table:  block... index indexLen(4, BE) checksum checksumLen(4, BE)
//	block:  compressed(entry... entryOffsets(4 each, native) count(4, BE) checksum checksumLen(4, BE))
//	entry:  overlap(2, native) diffLen(2, native) diff value
//
// An entry's key is the block's first key up to overlap, then diff; the
// checksum of a block covers its uncompressed entries, offsets and count.

// tableIndex is the verified index of one table file.
type tableIndex struct {
	idx *fb.TableIndex
}

// readIndex verifies and parses the index at the end of a table file.
func readIndex(data []byte) (tableIndex, error) {
	end := len(data)
	u32 := func(what string) (int, error) {
		if end < 4 {
			return 0, fmt.Errorf("table too short for its %s", what)
		}
		end -= 4
		return int(binary.BigEndian.Uint32(data[end:])), nil
	}
	n, err := u32("checksum length")
	if err != nil {
		return tableIndex{}, err
	}
	if n > end {
		return tableIndex{}, fmt.Errorf("index checksum length %d out of range", n)
	}
	end -= n
	sum := data[end : end+n]
	if n, err = u32("index length"); err != nil {
		return tableIndex{}, err
	}
	if n > end {
		return tableIndex{}, fmt.Errorf("index length %d out of range", n)
	}
	end -= n
	idx := data[end : end+n]
	if err := verify(idx, sum); err != nil {
		return tableIndex{}, fmt.Errorf("index: %w", err)
	}
	return tableIndex{idx: fb.GetRootAsTableIndex(idx, 0)}, nil
}

// verify checks data against an encoded pb.Checksum.
func verify(data, encoded []byte) error {
	var cs pb.Checksum
	if err := proto.Unmarshal(encoded, &cs); err != nil {
		return fmt.Errorf("%w: unreadable checksum: %v", y.ErrChecksumMismatch, err)
	}
	if cs.Algo != pb.Checksum_CRC32C && cs.Algo != pb.Checksum_XXHash64 {
		// y.CalculateChecksum panics on an algorithm it does not know.
		return fmt.Errorf("%w: unknown checksum algorithm %d", y.ErrChecksumMismatch, cs.Algo)
	}
	return y.VerifyChecksum(data, &cs)
}

func (t tableIndex) blocks() int { return t.idx.OffsetsLength() }

// block returns block i's first key and its stored bytes.
func (t tableIndex) block(data []byte, i int) (first, raw []byte, err error) {
	var bo fb.BlockOffset
	if !t.idx.Offsets(&bo, i) {
		return nil, nil, fmt.Errorf("block %d not in the index", i)
	}
	off, n := uint64(bo.Offset()), uint64(bo.Len())
	if off+n > uint64(len(data)) {
		return bo.KeyBytes(), nil, fmt.Errorf("block %d at %d+%d lies past the end of the table", i, off, n)
	}
	return bo.KeyBytes(), data[off : off+n], nil
}

// entry is one stored version of a key: the key with its version suffix
// and the encoded y.ValueStruct.
type entry struct {
	key, value []byte
}

var errEntries = errors.New("entry layout")

// verifyBlock decompresses and verifies one block. It returns the block's
// uncompressed bytes, in buf when they fit, and where its entries end.
func verifyBlock(raw, buf []byte, c options.CompressionType) (data []byte, end int, err error) {
	switch c {
	case options.None:
		data = raw
	case options.Snappy:
		if data, err = snappy.Decode(buf[:cap(buf)], raw); err != nil {
			return nil, 0, fmt.Errorf("decompress: %w", err)
		}
	case options.ZSTD:
		if data, err = y.ZSTDDecompress(buf[:cap(buf)], raw); err != nil {
			return nil, 0, fmt.Errorf("decompress: %w", err)
		}
	default:
		return nil, 0, fmt.Errorf("unknown compression %d", c)
	}
	end = len(data)
	if end < 4 {
		return nil, 0, fmt.Errorf("%w: block of %d bytes", errEntries, end)
	}
	end -= 4
	n := int(binary.BigEndian.Uint32(data[end:]))
	if n > end-4 {
		return nil, 0, fmt.Errorf("%w: checksum length %d", errEntries, n)
	}
	end -= n
	if err := verify(data[:end], data[end:end+n]); err != nil {
		return nil, 0, err
	}
	return data, end, nil
}

// blockEntries returns the entries of a verified block (verifyBlock),
// which share no memory with data.
func blockEntries(data []byte, end int) ([]entry, error) {
	end -= 4
	count := int(binary.BigEndian.Uint32(data[end:]))
	if count < 1 || count > end/4 {
		return nil, fmt.Errorf("%w: %d entries", errEntries, count)
	}
	end -= 4 * count
	offsets := data[end : end+4*count]
	var base []byte
	out := make([]entry, 0, count)
	for i := range count {
		start := int(binary.NativeEndian.Uint32(offsets[4*i:]))
		stop := end
		if i+1 < count {
			stop = int(binary.NativeEndian.Uint32(offsets[4*i+4:]))
		}
		if start+4 > stop || stop > end {
			return nil, fmt.Errorf("%w: entry %d at [%d, %d)", errEntries, i, start, stop)
		}
		overlap := int(binary.NativeEndian.Uint16(data[start:]))
		diff := int(binary.NativeEndian.Uint16(data[start+2:]))
		if start+4+diff > stop || overlap > len(base) || (i == 0 && overlap != 0) {
			return nil, fmt.Errorf("%w: entry %d key", errEntries, i)
		}
		key := make([]byte, 0, overlap+diff)
		key = append(append(key, base[:overlap]...), data[start+4:start+4+diff]...)
		if i == 0 {
			base = key
		}
		value := data[start+4+diff : stop]
		if len(value) < 3 || len(key) <= 8 {
			return nil, fmt.Errorf("%w: entry %d value", errEntries, i)
		}
		out = append(out, entry{key: key, value: append([]byte(nil), value...)})
	}
	return out, nil
}
