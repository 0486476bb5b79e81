package wsfront

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/heraldhq/herald/fsm"
)

func TestAppendStringMatchesJSON(t *testing.T) {
	for _, s := range []string{"", "plain", `q"uote`, `back\slash`, "tab\tnl\ncr\r", "\x00\x1f\x7f", "ünïcødé ✓ 😀", "bad\xffutf8", "\u2028\u2029"} {
		got := appendString(nil, s)
		var back string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("%q encoded as invalid JSON %s: %v", s, got, err)
		}
		want := strings.ToValidUTF8(s, "\ufffd")
		if back != want {
			t.Fatalf("%q round-tripped to %q", s, back)
		}
	}
}

func TestEventFrameIsValidJSON(t *testing.T) {
	ts := time.Date(2026, 11, 23, 15, 4, 5, 123456000, time.UTC)
	for _, data := range [][]byte{nil, []byte(`{"text":"hi"}`), []byte(`not json`), []byte(`"s"`)} {
		ev := fsm.Event{Room: "lob\"by", Epoch: 17, Seq: 42, Type: fsm.EventMessage, Member: "alice", Data: data, Time: ts}
		var out map[string]any
		if err := json.Unmarshal(eventFrame(&ev), &out); err != nil {
			t.Fatalf("data %q: %v", data, err)
		}
		if out["ev"] != "event" || out["room"] != "lob\"by" || out["epoch"] != "17" || out["seq"] != 42.0 ||
			out["type"] != "message" || out["ts"] != "2026-11-23T15:04:05.123456Z" {
			t.Fatalf("event frame: %v", out)
		}
	}
}

// FuzzDecodeRequest feeds arbitrary frames to the decoder: it must never
// panic, must reject what is not one JSON object with an op, and an error
// reply built from what it returns must be valid JSON.
func FuzzDecodeRequest(f *testing.F) {
	for _, seed := range []string{
		`{"id":1,"op":"publish","room":"r","data":{"a":1},"key":"k","expect_seq":3}`,
		`{"id":"x","op":"subscribe","room":"r","from_seq":5,"epoch":"9"}`,
		`{"id":2,"op":"history","room":"r","limit":10,"consistency":"stale"}`,
		`{"op":"auth","token":"a.b.c"}`, `{"id":{},"op":"ping"}`, `[]`, `{`, `null`, `{"id":1e400}`,
		`{"id":1,"op":"publish","room":5}`, `{"id":1,"op":"join","meta":[1,2,{"x":null}]}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		req, perr := decodeRequest(frame)
		if perr != nil {
			reply := errorReply(req.ID, perr)
			if !json.Valid(reply) {
				t.Fatalf("error reply %s is not JSON", reply)
			}
			return
		}
		if req.Op == "" {
			t.Fatalf("accepted a request without op: %q", frame)
		}
		if !json.Valid(frame) {
			t.Fatalf("accepted invalid JSON %q", frame)
		}
		reply := newReply(req.ID, true).str("room", req.Room).done()
		if !json.Valid(reply) {
			t.Fatalf("reply %s is not JSON", reply)
		}
		if checkRoom(req.Room) == nil && (!utf8.ValidString(req.Room) || req.Room == "") {
			t.Fatalf("room %q accepted", req.Room)
		}
	})
}

// A mistyped field is named in the reply, whatever type holds the request.
func TestDecodeRequestNamesMistypedFields(t *testing.T) {
	for frame, want := range map[string]string{
		`{"id":1,"op":"history","limit":"x"}`:      `field "limit" must be a non-negative integer, not string`,
		`{"id":1,"op":"history","from_seq":-1}`:    `field "from_seq" must be a non-negative integer, not number -1`,
		`{"id":1,"op":"subscribe","epoch":7}`:      `field "epoch" must be a string, not number`,
		`{"id":1,"op":"publish","room":5}`:         `field "room" must be a string, not number`,
		`{"id":1,"op":"publish","expect_seq":{}}`:  `field "expect_seq" must be a non-negative integer, not object`,
		`{"id":1,"op":"history","consistency":[]}`: `field "consistency" must be a string, not array`,
	} {
		req, perr := decodeRequest([]byte(frame))
		if perr == nil || perr.Message != want || string(req.ID) != "1" {
			t.Errorf("%s: id %s, error %v; want %q", frame, req.ID, perr, want)
		}
	}
	req, perr := decodeRequest([]byte(`{"id":"a","op":"subscribe","room":"r","from_seq":0,"limit":0,"epoch":""}`))
	if perr != nil || string(req.ID) != `"a"` || req.FromSeq == nil || *req.FromSeq != 0 || req.Limit == nil || *req.Limit != 0 ||
		req.Epoch == nil || *req.Epoch != "" {
		t.Errorf("decoded %+v, %v", req, perr)
	}
}
