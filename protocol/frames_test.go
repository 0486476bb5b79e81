package protocol

import (
	"encoding/json"
	"testing"
	"time"
)

// A client's request carries only what it sets: absence has a meaning
// (no from_seq: after the last seq), while a set zero must still be sent.
func TestRequestEncodesOnlyWhatIsSet(t *testing.T) {
	zero, from := uint64(0), uint64(5)
	limit, epoch := 10, ""
	cases := []struct {
		req  Request
		want string
	}{
		{Request{ID: NumericID(7), Op: OpHistory, Room: "lobby"}, `{"id":7,"op":"history","room":"lobby"}`},
		{Request{ID: NumericID(8), Op: OpSubscribe, Room: "r", FromSeq: &zero, Epoch: &epoch},
			`{"id":8,"op":"subscribe","room":"r","from_seq":0,"epoch":""}`},
		{Request{ID: NumericID(9), Op: OpHistory, Room: "r", FromSeq: &from, Limit: &limit, Consistency: ConsistencyStale},
			`{"id":9,"op":"history","room":"r","from_seq":5,"limit":10,"consistency":"stale"}`},
		{Request{ID: NumericID(1), Op: OpPublish, Room: "r", Data: json.RawMessage(`{"a":1}`), Key: "k", ExpectSeq: &zero},
			`{"id":1,"op":"publish","room":"r","data":{"a":1},"key":"k","expect_seq":0}`},
		{Request{ID: NumericID(2), Op: OpAuth, User: "alice"}, `{"id":2,"op":"auth","user":"alice"}`},
	}
	for _, tc := range cases {
		b, err := json.Marshal(&tc.req)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != tc.want {
			t.Errorf("got  %s\nwant %s", b, tc.want)
		}
	}
}

// A node decodes what a client sends into the same type, and keeps a
// string id as its text.
func TestRequestDecodesAnyID(t *testing.T) {
	var r Request
	if err := json.Unmarshal([]byte(`{"id":"a-1","op":"history","limit":0,"from_seq":3}`), &r); err != nil {
		t.Fatal(err)
	}
	if string(r.ID) != `"a-1"` || r.Limit == nil || *r.Limit != 0 || r.FromSeq == nil || *r.FromSeq != 3 || r.Epoch != nil {
		t.Fatalf("decoded %+v", r)
	}
}

func TestParseID(t *testing.T) {
	for _, tc := range []struct {
		id   string
		n    uint64
		isOK bool
	}{
		{"7", 7, true}, {"18446744073709551615", 1<<64 - 1, true},
		{`"7"`, 0, false}, {"-1", 0, false}, {"null", 0, false}, {"", 0, false}, {"1.5", 0, false},
	} {
		n, ok := ParseID(json.RawMessage(tc.id))
		if n != tc.n || ok != tc.isOK {
			t.Errorf("ParseID(%s) = %d, %v; want %d, %v", tc.id, n, ok, tc.n, tc.isOK)
		}
	}
	if n, ok := ParseID(NumericID(42)); !ok || n != 42 {
		t.Errorf("NumericID(42) reads back as %d, %v", n, ok)
	}
}

// The examples of docs/protocol.md decode into the fields they name.
func TestFrameDecodesTheProtocolExamples(t *testing.T) {
	var ev Frame
	if err := json.Unmarshal([]byte(`{"ev": "event", "room": "lobby", "epoch": "17", "seq": 42, "type": "message",
 "member": "alice", "data": {"text": "hi"}, "ts": "2026-11-23T15:04:05.123456Z"}`), &ev); err != nil {
		t.Fatal(err)
	}
	e := ev.Event
	if ev.Ev != EvEvent || e.Room != "lobby" || e.Epoch != "17" || e.Seq != 42 || e.Type != "message" || e.Member != "alice" ||
		e.TS != "2026-11-23T15:04:05.123456Z" || string(e.Data) != `{"text": "hi"}` {
		t.Errorf("event push decoded as %+v", ev)
	}
	var auth Frame
	if err := json.Unmarshal([]byte(`{"id": 1, "ok": true, "user": "alice", "node": "n1",
 "limits": {"max_frame": 65536, "max_data": 65536}}`), &auth); err != nil {
		t.Fatal(err)
	}
	if n, _ := ParseID(auth.ID); n != 1 || !auth.OK || auth.User != "alice" || auth.Node != "n1" ||
		auth.Limits != (Limits{MaxFrame: 65536, MaxData: 65536}) || auth.Err() != nil {
		t.Errorf("auth reply decoded as %+v", auth)
	}
	var members Frame
	if err := json.Unmarshal([]byte(`{"id":2,"ok":true,"seq":9,"epoch":"1","members":[{"member":"bob","meta":{"n":1},"joined_seq":4}]}`), &members); err != nil {
		t.Fatal(err)
	}
	if len(members.Members) != 1 || members.Members[0].Member != "bob" || members.Members[0].JoinedSeq != 4 || members.Seq != 9 {
		t.Errorf("members reply decoded as %+v", members)
	}
}

func TestFrameErr(t *testing.T) {
	cases := []struct {
		frame string
		want  *Error
	}{
		{`{"id":7,"ok":true,"seq":42}`, nil},
		{`{"id": 7, "ok": false, "error": {"code": "conflict", "message": "room lobby is at seq 44, not 41", "retryable": false}, "last_seq": 44}`,
			&Error{Code: CodeConflict, Message: "room lobby is at seq 44, not 41", LastSeq: 44}},
		{`{"id":7,"ok":false,"error":{"code":"rate_limited","message":"slow down","retryable":true},"retry_after_ms":250}`,
			&Error{Code: CodeRateLimited, Message: "slow down", Retryable: true, RetryAfter: 250 * time.Millisecond}},
		{`{"id":7,"ok":false}`, &Error{Code: CodeInternal, Message: "reply has ok false and no error", Retryable: true}},
		{`{"id":7,"ok":false,"error":null}`, &Error{Code: CodeInternal, Message: "reply has ok false and no error", Retryable: true}},
		{`{"id":7,"ok":false,"error":"boom"}`, &Error{Code: CodeInternal, Message: "boom", Retryable: true}},
		{`{"id":7,"ok":false,"error":{"message":"no code"}}`, &Error{Code: CodeInternal, Message: `{"message":"no code"}`, Retryable: true}},
		{`{"id":7,"ok":false,"error":[1]}`, &Error{Code: CodeInternal, Message: `[1]`, Retryable: true}},
	}
	for _, tc := range cases {
		var f Frame
		if err := json.Unmarshal([]byte(tc.frame), &f); err != nil {
			t.Fatal(err)
		}
		got := f.Err()
		if (got == nil) != (tc.want == nil) || got != nil && *got != *tc.want {
			t.Errorf("%s: Err() = %+v, want %+v", tc.frame, got, tc.want)
		}
	}
}
