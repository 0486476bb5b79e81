package fsm

import (
	"fmt"

	"github.com/heraldhq/herald/internal/wire"
)

// resultVersion prefixes an encoded Result, so a node of a newer build can
// still answer a proposer of an older one.
const resultVersion = 1

// resultErrors numbers the sentinel errors a Result can carry across nodes.
// The numbers travel between nodes: never reuse one.
var resultErrors = wire.Sentinels{nil, ErrBadCommand, ErrInvalid, ErrConflict, ErrNotMember,
	ErrRoomNotFound, ErrStorage, ErrNeedsRestore, ErrLagged, ErrClosed, ErrForbidden, ErrRoomFull}

// EncodeResult encodes r so a proposer on another node gets the same Result
// back from DecodeResult: the sentinel error in Err survives (errors.Is
// still works), with its message.
func EncodeResult(r *Result) []byte {
	e := &encoder{}
	e.Byte(resultVersion)
	e.Byte(byte(r.Op))
	e.String(r.Room)
	e.Uvarint(r.Epoch)
	e.Uvarint(r.Seq)
	e.Bool(r.Duplicate)
	e.Uvarint(r.LastSeq)
	e.Uvarint(uint64(r.Removed))
	e.Bool(r.More)
	code := 0
	msg := ""
	if r.Err != nil {
		if code = resultErrors.Code(r.Err); code == 0 {
			code = len(resultErrors) // an error outside the known set
		}
		msg = r.Err.Error()
	}
	e.Uvarint(uint64(code))
	e.String(msg)
	// Added later, and only present when set, so results without it
	// encode as before.
	if r.JoinToken != 0 {
		e.Uvarint(r.JoinToken)
	}
	return e.Buf
}

// DecodeResult reverses EncodeResult. Malformed input is an error, never a
// panic.
func DecodeResult(b []byte) (*Result, error) {
	d := &decoder{Buf: b}
	if v := d.Byte(); d.Err() == nil && v != resultVersion {
		return nil, fmt.Errorf("fsm: result version %d is not known to this node", v)
	}
	r := &Result{}
	r.Op = Op(d.Byte())
	r.Room = d.String(MaxRoomBytes)
	r.Epoch = d.Uvarint()
	r.Seq = d.Uvarint()
	r.Duplicate = d.Bool()
	r.LastSeq = d.Uvarint()
	r.Removed = int(min(d.Uvarint(), 1<<31))
	r.More = d.Bool()
	code := d.Uvarint()
	msg := d.String(64 << 10)
	if len(d.Buf) > 0 {
		// Encoded only when set, so a zero here is garbage.
		if r.JoinToken = d.Uvarint(); r.JoinToken == 0 && d.Err() == nil {
			d.Fail("a result's join token is zero")
		}
	}
	if err := d.Done(); err != nil {
		return nil, fmt.Errorf("fsm: decode result: %w", err)
	}
	if code != 0 {
		r.Err = resultErrors.Error(code, msg)
	}
	return r, nil
}
