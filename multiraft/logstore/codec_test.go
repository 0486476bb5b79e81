package logstore

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func TestCodecRoundTrip(t *testing.T) {
	for _, l := range []*raft.Log{
		{},
		fullLog(1, 0),
		fullLog(1<<62, 1000),
		{Index: 3, Term: 2, Type: raft.LogConfiguration, AppendedAt: time.Unix(-5, 999_999_999)},
	} {
		var got raft.Log
		if err := decodeLog(encodeLog(nil, l), &got); err != nil {
			t.Fatalf("decode %+v: %v", l, err)
		}
		if !equalLog(&got, l) {
			t.Fatalf("round trip: got %+v, want %+v", got, *l)
		}
		if n := len(encodeLog(nil, l)); n > encodedLogSize(l) {
			t.Fatalf("encoded %d bytes, size bound %d", n, encodedLogSize(l))
		}
	}
}

func TestDecodeCorrupt(t *testing.T) {
	valid := encodeLog(nil, fullLog(9, 50))
	cases := [][]byte{
		nil,
		{},
		{0},
		{9},
		{logFormatV1},
		valid[:len(valid)-1],
		append(bytes.Clone(valid), 0),
		{logFormatV1, 1, 1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		{logFormatV1, 1, 1, 0, 0, 0, 7},
		{logFormatV1, 1, 1, 0, 0, 0, 1, 0, 0x80, 0x94, 0xeb, 0xdc, 0x03},
		bytes.Repeat([]byte{0xff}, 40),
	}
	for i := range valid {
		c := bytes.Clone(valid)
		c[i] ^= 0xff
		cases = append(cases, c)
	}
	errs := 0
	for _, c := range cases {
		var l raft.Log
		if err := decodeLog(c, &l); err != nil {
			errs++
		}
	}
	// Flipping a byte inside Data or Extensions still decodes; everything
	// structural must fail.
	if errs < 11 {
		t.Fatalf("only %d of %d corrupt inputs were rejected", errs, len(cases))
	}
	for _, c := range cases[:11] {
		var l raft.Log
		if err := decodeLog(c, &l); err == nil {
			t.Errorf("decode %x succeeded", c)
		}
	}
}

func FuzzDecodeLog(f *testing.F) {
	f.Add(encodeLog(nil, fullLog(1, 10)))
	f.Add(encodeLog(nil, &raft.Log{}))
	f.Add(encodeLog(nil, fullLog(1<<40, 0)))
	f.Add([]byte{logFormatV1, 1, 1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Add([]byte{logFormatChunked, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var l raft.Log
		if err := decodeLog(b, &l); err != nil {
			return
		}
		// Whatever decodes must survive another round trip unchanged.
		var again raft.Log
		if err := decodeLog(encodeLog(nil, &l), &again); err != nil || !equalLog(&l, &again) {
			t.Fatalf("re-encoding %+v: got %+v, %v", l, again, err)
		}
	})
}

func TestDecodeIntent(t *testing.T) {
	for _, b := range [][]byte{nil, {9}, {intentDeleteLogs}, {intentDeleteLogs, 1}, {intentDropGroup, 0}} {
		if _, _, _, err := decodeIntent(b); err == nil {
			t.Errorf("decodeIntent(%x) succeeded", b)
		}
	}
	kind, lo, hi, err := decodeIntent(encodeIntent(intentDeleteLogs, 5, 1<<50))
	if err != nil || kind != intentDeleteLogs || lo != 5 || hi != 1<<50 {
		t.Fatalf("decodeIntent = %d %d %d %v", kind, lo, hi, err)
	}
}

func TestLogChecksum(t *testing.T) {
	l := fullLog(7, 64)
	enc := encodeLog(nil, l)
	for i := range enc {
		bad := bytes.Clone(enc)
		bad[i] ^= 0x10
		var got raft.Log
		if err := decodeLog(bad, &got); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("byte %d flipped: err %v, want ErrCorrupt", i, err)
		}
	}
	// An entry stored before checksums (version 1) still reads.
	v1 := bytes.Clone(enc[:len(enc)-logCRCLen])
	v1[0] = logFormatV1
	var got raft.Log
	if err := decodeLog(v1, &got); err != nil || !equalLog(l, &got) {
		t.Fatalf("version 1 entry: %+v, %v", got, err)
	}
}
