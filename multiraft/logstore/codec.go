package logstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/hashicorp/raft"
	"github.com/heraldhq/herald/internal/wire"
)

// Stored raft.Log format, version 1:
//
//	byte    version (1)
//	uvarint Index
//	uvarint Term
//	byte    Type
//	uvarint len(Data)       Data
//	uvarint len(Extensions) Extensions
//	byte    1 if AppendedAt is set, else 0
//	varint  AppendedAt seconds since the Unix epoch   (only if set)
//	uvarint AppendedAt nanoseconds within the second  (only if set)
//
// A hand-written format rather than msgpack keeps encoding allocation-free
// apart from the output buffer and makes corrupt input an error, never a
// panic. The version byte lets the format change without a migration.
//
// Version 2 is version 1 followed by a CRC-32C (4 bytes, little endian) of
// everything before it, version byte included: a flipped bit in a stored
// entry must not reach raft as a different command. Entries written as
// version 1 read as before; raft rewrites none, they leave the log as it
// is compacted.
const (
	logFormatV1 byte = 1
	logFormatV2 byte = 3 // 2 is logFormatChunked
	logCRCLen        = 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt is wrapped by every error reading a stored entry that fails
// its checksum (the entry's own, or badger's block checksum) or does not
// decode. The group's log on this node is damaged; its other replicas hold
// the entry.
var ErrCorrupt = errors.New("corrupt log entry")

var errCorruptLog = ErrCorrupt

// encodeLog appends the encoding of l to dst.
func encodeLog(dst []byte, l *raft.Log) []byte {
	start := len(dst)
	dst = encodeLogBody(dst, l)
	return binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

func encodeLogBody(dst []byte, l *raft.Log) []byte {
	dst = append(dst, logFormatV2)
	dst = binary.AppendUvarint(dst, l.Index)
	dst = binary.AppendUvarint(dst, l.Term)
	dst = append(dst, byte(l.Type))
	dst = binary.AppendUvarint(dst, uint64(len(l.Data)))
	dst = append(dst, l.Data...)
	dst = binary.AppendUvarint(dst, uint64(len(l.Extensions)))
	dst = append(dst, l.Extensions...)
	if l.AppendedAt.IsZero() {
		return append(dst, 0)
	}
	dst = append(dst, 1)
	dst = binary.AppendVarint(dst, l.AppendedAt.Unix())
	return binary.AppendUvarint(dst, uint64(l.AppendedAt.Nanosecond()))
}

// encodedLogSize is an upper bound of len(encodeLog(nil, l)).
func encodedLogSize(l *raft.Log) int {
	return 1 + 3*binary.MaxVarintLen64 + 1 + len(l.Data) + len(l.Extensions) + 2 + 2*binary.MaxVarintLen64 + logCRCLen
}

// decodeLog decodes b into out. Data and Extensions alias b, so b must not
// be reused by the caller.
func decodeLog(b []byte, out *raft.Log) error {
	if len(b) == 0 {
		return fmt.Errorf("%w: empty", errCorruptLog)
	}
	switch b[0] {
	case logFormatV1:
	case logFormatV2:
		if len(b) < 1+logCRCLen {
			return fmt.Errorf("%w: too short for its checksum", errCorruptLog)
		}
		body := b[:len(b)-logCRCLen]
		want := binary.LittleEndian.Uint32(b[len(body):])
		if got := crc32.Checksum(body, castagnoli); got != want {
			return fmt.Errorf("%w: checksum mismatch (stored %08x, computed %08x)", errCorruptLog, want, got)
		}
		b = body
	default:
		return fmt.Errorf("%w: unknown format version %d", errCorruptLog, b[0])
	}
	d := wire.Reader{Buf: b[1:]}
	l := raft.Log{
		Index: d.Uvarint(),
		Term:  d.Uvarint(),
		Type:  raft.LogType(d.Byte()),
	}
	// An empty field decodes as nil, the way raft builds logs without
	// data.
	l.Data = nilIfEmpty(d.Bytes(len(d.Buf)))
	l.Extensions = nilIfEmpty(d.Bytes(len(d.Buf)))
	switch d.Byte() {
	case 0:
	case 1:
		sec := d.Varint()
		nsec := d.Uvarint()
		if d.Err() == nil && nsec >= 1e9 {
			return fmt.Errorf("%w: nanoseconds %d out of range", errCorruptLog, nsec)
		}
		l.AppendedAt = time.Unix(sec, int64(nsec))
	default:
		d.Fail("bad time flag")
	}
	if err := d.Done(); err != nil {
		return fmt.Errorf("%w: %v", errCorruptLog, err)
	}
	*out = l
	return nil
}

func nilIfEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}
