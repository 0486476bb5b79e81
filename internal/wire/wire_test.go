package wire

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	var e Encoder
	e.Byte(7)
	e.Uvarint(300)
	e.Varint(-5)
	e.Bytes([]byte("data"))
	e.String("room")
	e.Bool(true)
	r := Reader{Buf: e.Buf}
	if r.Byte() != 7 || r.Uvarint() != 300 || r.Varint() != -5 || string(r.Bytes(10)) != "data" ||
		r.String(10) != "room" || !r.Bool() {
		t.Fatalf("read back wrong values (err %v)", r.Err())
	}
	if err := r.Done(); err != nil {
		t.Fatal(err)
	}
}

// Every malformed input is an error that names the problem, never a panic
// or a silent value.
func TestMalformed(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		read func(*Reader)
		want string
	}{
		{"truncated varint", []byte{0x80}, func(r *Reader) { r.Uvarint() }, "input ends early"},
		{"padded varint", []byte{0x81, 0x00}, func(r *Reader) { r.Uvarint() }, "not minimally encoded"},
		{"overflow", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, func(r *Reader) { r.Uvarint() }, "overflows"},
		{"long field", []byte{5, 'a', 'b'}, func(r *Reader) { r.Bytes(100) }, "5 bytes, 2 left"},
		{"field over its limit", []byte{5, 'a', 'b', 'c', 'd', 'e'}, func(r *Reader) { r.Bytes(4) }, "exceeds the limit of 4"},
		{"bad bool", []byte{2}, func(r *Reader) { r.Bool() }, "boolean byte is 2"},
		{"lying count", []byte{200, 1}, func(r *Reader) { r.Count() }, "list of 200 elements"},
		{"trailing", []byte{1, 2}, func(r *Reader) { r.Byte() }, "1 unexpected trailing bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Reader{Buf: tc.in}
			tc.read(&r)
			if err := r.Done(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func FuzzReader(f *testing.F) {
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := Reader{Buf: b}
		for r.Err() == nil && len(r.Buf) > 0 {
			r.Uvarint()
			r.Bytes(1 << 10)
			r.Bool()
			r.Count()
		}
	})
}

var errA, errB = errors.New("a failed"), errors.New("b failed")

// A sentinel crosses the wire: errors.Is matches it on the other side,
// with the message it had; an unknown code keeps the message alone.
func TestSentinels(t *testing.T) {
	s := Sentinels{nil, errA, errB}
	err := fmt.Errorf("group 3: %w", errB)
	code := s.Code(err)
	if code != 2 {
		t.Fatalf("code %d, want 2", code)
	}
	back := s.Error(uint64(code), err.Error())
	if !errors.Is(back, errB) || back.Error() != "group 3: b failed" {
		t.Fatalf("decoded %v", back)
	}
	if s.Code(errors.New("other")) != 0 {
		t.Fatal("an unknown error got a code")
	}
	if e := s.Error(9, "from a newer node"); errors.Is(e, errA) || errors.Is(e, errB) || e.Error() != "from a newer node" {
		t.Fatalf("unknown code: %v", e)
	}
	if e := Remote(errA, "detail"); e.Error() != "a failed: detail" || !errors.Is(e, errA) {
		t.Fatalf("remote: %v", e)
	}
}
