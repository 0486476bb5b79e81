package logstore

import (
	"encoding/binary"
	"fmt"

	"github.com/heraldhq/herald/internal/wire"
)

// Badger key layout. Every key starts with a one-byte namespace and the
// group id in big endian, so one group's keys of one kind are contiguous and
// sorted by index, which makes first/last lookups a single seek and range
// deletes a bounded scan:
//
//	'l' group index          -> stored log entry (see storeLogValue)
//	'c' group index chunk    -> continuation chunk of a large log entry
//	's' group key            -> stable store value
//	'g' group                -> empty; the group exists (listed by Groups)
//	'i' group                -> intent of an unfinished multi-transaction write
const (
	nsLog    byte = 'l'
	nsChunk  byte = 'c'
	nsStable byte = 's'
	nsGroup  byte = 'g'
	nsIntent byte = 'i'
)

const groupPrefixLen = 1 + 8

func groupPrefix(ns byte, group uint64) []byte {
	k := make([]byte, groupPrefixLen, groupPrefixLen+8+4)
	k[0] = ns
	binary.BigEndian.PutUint64(k[1:], group)
	return k
}

// groupPrefixes are the prefixes of every key of group.
func groupPrefixes(group uint64) [][]byte {
	out := make([][]byte, 0, 5)
	for _, ns := range []byte{nsLog, nsChunk, nsStable, nsGroup, nsIntent} {
		out = append(out, groupPrefix(ns, group))
	}
	return out
}

func logKey(group, index uint64) []byte {
	return binary.BigEndian.AppendUint64(groupPrefix(nsLog, group), index)
}

func chunkKey(group, index uint64, chunk uint32) []byte {
	k := binary.BigEndian.AppendUint64(groupPrefix(nsChunk, group), index)
	return binary.BigEndian.AppendUint32(k, chunk)
}

func stableKey(group uint64, key []byte) []byte {
	k := make([]byte, 0, groupPrefixLen+len(key))
	k = append(k, groupPrefix(nsStable, group)...)
	return append(k, key...)
}

// keyGroup returns the group id of any key in the layout.
func keyGroup(k []byte) (uint64, error) {
	if len(k) < groupPrefixLen {
		return 0, fmt.Errorf("logstore: short key %x", k)
	}
	return binary.BigEndian.Uint64(k[1:groupPrefixLen]), nil
}

// keyIndex returns the log index of an 'l' or 'c' key.
func keyIndex(k []byte) (uint64, error) {
	if len(k) < groupPrefixLen+8 {
		return 0, fmt.Errorf("logstore: short log key %x", k)
	}
	return binary.BigEndian.Uint64(k[groupPrefixLen:]), nil
}

// Large log entries are split so that no badger value reaches the value
// log: values below badger's ValueThreshold (1 MiB) stay inline in the LSM
// tree and its WAL, which is what DB.Sync makes durable, and a value log
// would need garbage collection that badger runs without syncing. The first
// chunk lives under the 'l' key with a header, the rest under 'c' keys.
const (
	maxInlineValue = 512 << 10
	// logFormatChunked marks an 'l' value holding the first chunk:
	// byte 2, uvarint total encoded length, uvarint number of 'c' chunks,
	// then the first maxInlineValue bytes of the encoded entry.
	logFormatChunked byte = 2
)

// Intents make writes that do not fit one badger transaction atomic. The
// intent is made durable before the first transaction and deleted in the
// last; Open finishes any intent it finds by deleting what it names, which
// rolls back an interrupted StoreLogs and rolls forward an interrupted
// DeleteRange or DropGroup. Rolling back a StoreLogs deletes its whole index
// range, so entries it overwrote are gone rather than restored; raft never
// overwrites entries without deleting them first.
//
//	byte    kind
//	uvarint lo   (intentDeleteLogs only)
//	uvarint hi   (intentDeleteLogs only)
const (
	intentDeleteLogs byte = 1 // delete log entries lo..hi
	intentDropGroup  byte = 2 // delete all of the group's keys
)

func encodeIntent(kind byte, lo, hi uint64) []byte {
	b := []byte{kind}
	if kind == intentDeleteLogs {
		b = binary.AppendUvarint(b, lo)
		b = binary.AppendUvarint(b, hi)
	}
	return b
}

func decodeIntent(b []byte) (kind byte, lo, hi uint64, err error) {
	d := wire.Reader{Buf: b}
	kind = d.Byte()
	switch {
	case d.Err() != nil:
	case kind == intentDeleteLogs:
		lo, hi = d.Uvarint(), d.Uvarint()
	case kind != intentDropGroup:
		return 0, 0, 0, fmt.Errorf("logstore: unknown intent kind %d", kind)
	}
	if err := d.Done(); err != nil {
		return 0, 0, 0, fmt.Errorf("%w: intent: %v", errCorruptLog, err)
	}
	return kind, lo, hi, nil
}
