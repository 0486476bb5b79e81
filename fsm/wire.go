package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// The wire helpers below write and read the compact binary form shared by
// commands, stored records and snapshots: unsigned varints, and byte strings
// prefixed by their varint length. A reader never panics: the first problem
// is kept in err and every later read returns a zero value.

// errTruncated is wrapped by decode errors caused by input that ends early.
var errTruncated = errors.New("input ends early")

// errChecksum is wrapped by decode errors of a stored record whose
// checksum does not match its bytes.
var errChecksum = errors.New("checksum mismatch")

type encoder struct {
	buf []byte
}

func (e *encoder) byte(b byte)      { e.buf = append(e.buf, b) }
func (e *encoder) uvarint(v uint64) { e.buf = binary.AppendUvarint(e.buf, v) }
func (e *encoder) varint(v int64)   { e.buf = binary.AppendVarint(e.buf, v) }
func (e *encoder) bytes(b []byte)   { e.uvarint(uint64(len(b))); e.buf = append(e.buf, b...) }
func (e *encoder) string(s string)  { e.uvarint(uint64(len(s))); e.buf = append(e.buf, s...) }
func (e *encoder) bool(b bool)      { e.byte(boolByte(b)) }
func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

type decoder struct {
	buf []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf(format, args...)
	}
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.buf) < 1 {
		d.fail("%w", errTruncated)
		return 0
	}
	b := d.buf[0]
	d.buf = d.buf[1:]
	return b
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.buf)
	if !d.checkVarint(n) {
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

// checkVarint rejects a varint read of n bytes that ran short, overflowed,
// or was padded with a zero last byte: every value has one encoding, so
// equal commands are equal bytes.
func (d *decoder) checkVarint(n int) bool {
	switch {
	case n == 0:
		d.fail("%w", errTruncated)
	case n < 0:
		d.fail("varint overflows 64 bits")
	case n > 1 && d.buf[n-1] == 0:
		d.fail("varint is not minimally encoded")
	default:
		return true
	}
	return false
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.buf)
	if !d.checkVarint(n) {
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

// bytes returns a length-prefixed byte string of at most max bytes. The
// result aliases the input; callers that keep it beyond the input's life copy it.
func (d *decoder) bytes(max int) []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(max) {
		d.fail("field of %d bytes exceeds the limit of %d", n, max)
		return nil
	}
	if uint64(len(d.buf)) < n {
		d.fail("%w: field of %d bytes, %d left", errTruncated, n, len(d.buf))
		return nil
	}
	b := d.buf[:n:n]
	d.buf = d.buf[n:]
	return b
}

func (d *decoder) string(max int) string { return string(d.bytes(max)) }

func (d *decoder) bool() bool {
	switch b := d.byte(); b {
	case 0:
		return false
	case 1:
		return true
	default:
		d.fail("boolean byte is %d, want 0 or 1", b)
		return false
	}
}

// duration reads a non-negative nanosecond count.
func (d *decoder) duration() int64 {
	v := d.uvarint()
	if v > math.MaxInt64 {
		d.fail("duration %d overflows", v)
		return 0
	}
	return int64(v)
}

// done reports the first error, or an error if bytes are left over.
func (d *decoder) done() error {
	if d.err == nil && len(d.buf) != 0 {
		d.err = fmt.Errorf("%d unexpected trailing bytes", len(d.buf))
	}
	return d.err
}
