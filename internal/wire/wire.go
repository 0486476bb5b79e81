// Package wire is the one compact binary form of Herald's own records and
// messages (fsm's commands, events, results and stored records, the room
// layer's queries and answers): unsigned and signed varints, and byte
// strings prefixed by their varint length.
//
// A Reader never panics on malformed input: the first problem is kept and
// every later read returns a zero value, so a decoder reads a whole record
// and checks once. Every value has one encoding (varints must be minimal),
// so equal values are equal bytes.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
)

// ErrTruncated is wrapped by the errors of input that ends early.
var ErrTruncated = errors.New("input ends early")

// AppendBytes appends p with its length.
func AppendBytes(b, p []byte) []byte { return append(binary.AppendUvarint(b, uint64(len(p))), p...) }

// AppendString appends s with its length.
func AppendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// AppendBool appends v as one byte, 0 or 1.
func AppendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

// Encoder appends to Buf.
type Encoder struct{ Buf []byte }

func (e *Encoder) Byte(b byte)      { e.Buf = append(e.Buf, b) }
func (e *Encoder) Uvarint(v uint64) { e.Buf = binary.AppendUvarint(e.Buf, v) }
func (e *Encoder) Varint(v int64)   { e.Buf = binary.AppendVarint(e.Buf, v) }
func (e *Encoder) Bytes(p []byte)   { e.Buf = AppendBytes(e.Buf, p) }
func (e *Encoder) String(s string)  { e.Buf = AppendString(e.Buf, s) }
func (e *Encoder) Bool(v bool)      { e.Buf = AppendBool(e.Buf, v) }

// Reader reads from Buf, which holds what is left to read.
type Reader struct {
	Buf []byte
	err error
}

// Err is the first problem met, or nil.
func (r *Reader) Err() error { return r.err }

// Fail records a problem unless one is recorded already.
func (r *Reader) Fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf(format, args...)
	}
}

func (r *Reader) Byte() byte {
	if r.err != nil {
		return 0
	}
	if len(r.Buf) < 1 {
		r.Fail("%w", ErrTruncated)
		return 0
	}
	b := r.Buf[0]
	r.Buf = r.Buf[1:]
	return b
}

func (r *Reader) Uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.Buf)
	if !r.checkVarint(n) {
		return 0
	}
	r.Buf = r.Buf[n:]
	return v
}

func (r *Reader) Varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.Buf)
	if !r.checkVarint(n) {
		return 0
	}
	r.Buf = r.Buf[n:]
	return v
}

// checkVarint rejects a varint read of n bytes that ran short, overflowed,
// or was padded with a zero last byte.
func (r *Reader) checkVarint(n int) bool {
	switch {
	case n == 0:
		r.Fail("%w", ErrTruncated)
	case n < 0:
		r.Fail("varint overflows 64 bits")
	case n > 1 && r.Buf[n-1] == 0:
		r.Fail("varint is not minimally encoded")
	default:
		return true
	}
	return false
}

// Bytes reads a length-prefixed byte string of at most max bytes. The
// result aliases the input; a caller that keeps it beyond the input's life
// copies it.
func (r *Reader) Bytes(max int) []byte {
	n := r.Uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(max) {
		r.Fail("field of %d bytes exceeds the limit of %d", n, max)
		return nil
	}
	if uint64(len(r.Buf)) < n {
		r.Fail("%w: field of %d bytes, %d left", ErrTruncated, n, len(r.Buf))
		return nil
	}
	b := r.Buf[:n:n]
	r.Buf = r.Buf[n:]
	return b
}

func (r *Reader) String(max int) string { return string(r.Bytes(max)) }

func (r *Reader) Bool() bool {
	switch b := r.Byte(); b {
	case 0:
		return false
	case 1:
		return true
	default:
		r.Fail("boolean byte is %d, want 0 or 1", b)
		return false
	}
}

// Duration reads a non-negative nanosecond count written as an unsigned
// varint.
func (r *Reader) Duration() int64 {
	v := r.Uvarint()
	if v > math.MaxInt64 {
		r.Fail("duration %d overflows", v)
		return 0
	}
	return int64(v)
}

// Count reads the length of a list whose elements take at least a byte
// each, so that a lying count fails here instead of allocating.
func (r *Reader) Count() int {
	n := r.Uvarint()
	if n > uint64(len(r.Buf)) {
		r.Fail("list of %d elements in %d bytes", n, len(r.Buf))
		return 0
	}
	return int(n)
}

// Done reports the first problem, or one if bytes are left over.
func (r *Reader) Done() error {
	if r.err == nil && len(r.Buf) != 0 {
		r.err = fmt.Errorf("%d unexpected trailing bytes", len(r.Buf))
	}
	return r.err
}

// Sentinels numbers the sentinel errors an encoded message may carry from
// one node to another, so that errors.Is still matches them on the node
// that decodes it. Element 0 is nil: code 0 is no sentinel. The numbers
// travel between nodes: a list only ever grows at its end.
type Sentinels []error

// Code is the number of the first sentinel err matches, or 0.
func (s Sentinels) Code(err error) int {
	for i, sentinel := range s {
		if i > 0 && errors.Is(err, sentinel) {
			return i
		}
	}
	return 0
}

// Error rebuilds an error from its code and the message it had: the
// sentinel, carrying the message, for a known code; the message alone for
// code 0 or one this build does not know (a newer node's).
func (s Sentinels) Error(code uint64, msg string) error {
	if code > 0 && code < uint64(len(s)) {
		return Remote(s[code], msg)
	}
	return errors.New(msg)
}

// Remote is sentinel as another node reported it, with its message there:
// errors.Is matches the sentinel, and Error is the message (prefixed by
// the sentinel's text when the message does not already hold it).
func Remote(sentinel error, msg string) error { return &remoteError{sentinel: sentinel, msg: msg} }

type remoteError struct {
	sentinel error
	msg      string
}

func (e *remoteError) Error() string {
	switch {
	case e.msg == "":
		return e.sentinel.Error()
	case strings.Contains(e.msg, e.sentinel.Error()):
		return e.msg
	}
	return e.sentinel.Error() + ": " + e.msg
}

func (e *remoteError) Unwrap() error { return e.sentinel }
