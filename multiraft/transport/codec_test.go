package transport

import (
	"bytes"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func fullHeader(id string) raft.RPCHeader {
	return raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(id), Addr: []byte(id + ":7000")}
}

// sampleMessages returns every message type with every field set, keyed by
// a name; requests are pointers as raft passes them.
func sampleMessages() []struct {
	name string
	typ  byte
	req  bool
	msg  any
} {
	at := time.Unix(1700000000, 123456789).UTC()
	return []struct {
		name string
		typ  byte
		req  bool
		msg  any
	}{
		{"AppendEntriesRequest", ftAppendEntries, true, &raft.AppendEntriesRequest{
			RPCHeader:    fullHeader("leader"),
			Term:         7,
			Leader:       []byte("leader:7000"),
			PrevLogEntry: 1 << 40,
			PrevLogTerm:  6,
			Entries: []*raft.Log{
				{Index: 1<<40 + 1, Term: 7, Type: raft.LogCommand, Data: []byte("hello"), Extensions: []byte("ext"), AppendedAt: at},
				{Index: 1<<40 + 2, Term: 7, Type: raft.LogConfiguration, Data: []byte{}, Extensions: nil},
				{Index: 1<<40 + 3, Term: 7, Type: raft.LogBarrier, Data: nil, Extensions: []byte{}, AppendedAt: time.Unix(-5, 0).UTC()},
			},
			LeaderCommitIndex: 1 << 39,
		}},
		{"AppendEntriesRequestEmptyEntries", ftAppendEntries, true, &raft.AppendEntriesRequest{
			RPCHeader: fullHeader("x"), Term: 1, Entries: []*raft.Log{},
		}},
		{"AppendEntriesResponse", ftAppendEntries, false, &raft.AppendEntriesResponse{
			RPCHeader: fullHeader("follower"), Term: 9, LastLog: 12345, Success: true, NoRetryBackoff: true,
		}},
		{"RequestVoteRequest", ftRequestVote, true, &raft.RequestVoteRequest{
			RPCHeader: fullHeader("cand"), Term: 3, Candidate: []byte("cand:7000"), LastLogIndex: 99, LastLogTerm: 2, LeadershipTransfer: true,
		}},
		{"RequestVoteResponse", ftRequestVote, false, &raft.RequestVoteResponse{
			RPCHeader: fullHeader("voter"), Term: 3, Peers: []byte("peers"), Granted: true,
		}},
		{"RequestPreVoteRequest", ftRequestPreVote, true, &raft.RequestPreVoteRequest{
			RPCHeader: fullHeader("cand"), Term: 4, LastLogIndex: 100, LastLogTerm: 3,
		}},
		{"RequestPreVoteResponse", ftRequestPreVote, false, &raft.RequestPreVoteResponse{
			RPCHeader: fullHeader("voter"), Term: 4, Granted: true,
		}},
		{"TimeoutNowRequest", ftTimeoutNow, true, &raft.TimeoutNowRequest{RPCHeader: fullHeader("leader")}},
		{"TimeoutNowResponse", ftTimeoutNow, false, &raft.TimeoutNowResponse{RPCHeader: fullHeader("target")}},
		{"InstallSnapshotRequest", ftInstallSnapshot, true, &raft.InstallSnapshotRequest{
			RPCHeader:          fullHeader("leader"),
			SnapshotVersion:    raft.SnapshotVersionMax,
			Term:               11,
			Leader:             []byte("leader:7000"),
			LastLogIndex:       5000,
			LastLogTerm:        10,
			Peers:              []byte("old peers"),
			Configuration:      []byte("configuration bytes"),
			ConfigurationIndex: 4000,
			Size:               1 << 33,
		}},
		{"InstallSnapshotResponse", ftInstallSnapshot, false, &raft.InstallSnapshotResponse{
			RPCHeader: fullHeader("follower"), Term: 11, Success: true,
		}},
	}
}

func encodeSample(typ byte, req bool, msg any) []byte {
	if !req {
		b, err := appendResponse(nil, typ, msg)
		if err != nil {
			panic(err)
		}
		return b
	}
	switch m := msg.(type) {
	case *raft.AppendEntriesRequest:
		return appendAppendEntriesRequest(nil, m)
	case *raft.RequestVoteRequest:
		return appendRequestVoteRequest(nil, m)
	case *raft.RequestPreVoteRequest:
		return appendRequestPreVoteRequest(nil, m)
	case *raft.TimeoutNowRequest:
		return appendTimeoutNowRequest(nil, m)
	case *raft.InstallSnapshotRequest:
		return appendInstallSnapshotRequest(nil, m)
	}
	panic("unknown request")
}

func newResponse(typ byte) any {
	switch typ {
	case ftAppendEntries:
		return &raft.AppendEntriesResponse{}
	case ftRequestVote:
		return &raft.RequestVoteResponse{}
	case ftRequestPreVote:
		return &raft.RequestPreVoteResponse{}
	case ftTimeoutNow:
		return &raft.TimeoutNowResponse{}
	case ftInstallSnapshot:
		return &raft.InstallSnapshotResponse{}
	}
	panic("unknown type")
}

func decodeSample(typ byte, req bool, p []byte) (any, error) {
	if req {
		return decodeCommand(typ, p)
	}
	out := newResponse(typ)
	if err := decodeResponse(typ, p, out); err != nil {
		return nil, err
	}
	return out, nil
}

func TestCodecRoundTrip(t *testing.T) {
	for _, s := range sampleMessages() {
		t.Run(s.name, func(t *testing.T) {
			// Every field must be set, or the round trip proves nothing.
			if s.name != "AppendEntriesRequestEmptyEntries" {
				assertAllFieldsSet(t, reflect.ValueOf(s.msg).Elem(), s.name)
			}
			p := encodeSample(s.typ, s.req, s.msg)
			got, err := decodeSample(s.typ, s.req, p)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !reflect.DeepEqual(got, s.msg) {
				t.Fatalf("round trip mismatch:\n got %s\nwant %s", describe(got), describe(s.msg))
			}
			// Every strict prefix is truncated input and must be rejected.
			for i := 0; i < len(p); i++ {
				if _, err := decodeSample(s.typ, s.req, p[:i]); err == nil {
					t.Fatalf("prefix of %d/%d bytes decoded without error", i, len(p))
				}
			}
			// Trailing garbage is rejected too.
			if _, err := decodeSample(s.typ, s.req, append(bytes.Clone(p), 0)); err == nil {
				t.Fatal("trailing byte accepted")
			}
		})
	}
}

// assertAllFieldsSet fails for any zero-valued field, recursing into the
// embedded RPCHeader, so a new raft field cannot silently go unencoded.
func assertAllFieldsSet(t *testing.T, v reflect.Value, path string) {
	t.Helper()
	for i := 0; i < v.NumField(); i++ {
		f := v.Field(i)
		name := path + "." + v.Type().Field(i).Name
		if f.Kind() == reflect.Struct && v.Type().Field(i).Anonymous {
			assertAllFieldsSet(t, f, name)
			continue
		}
		if f.IsZero() {
			t.Errorf("sample leaves %s unset", name)
		}
	}
}

func TestCodecNilVersusEmpty(t *testing.T) {
	hb := heartbeatRPC()
	p := appendAppendEntriesRequest(nil, &hb)
	cmd, err := decodeCommand(ftAppendEntries, p)
	if err != nil {
		t.Fatal(err)
	}
	got := cmd.(*raft.AppendEntriesRequest)
	if !reflect.DeepEqual(got, &hb) {
		t.Fatalf("heartbeat mismatch: %#v", got)
	}
	if !isHeartbeat(got) {
		t.Fatal("decoded heartbeat not recognised as heartbeat")
	}
	ae := makeAppendRPC()
	if isHeartbeat(&ae) {
		t.Fatal("AppendEntries with entries taken for a heartbeat")
	}
	// A request without any leader address is not a heartbeat.
	noLeader := raft.AppendEntriesRequest{Term: 3}
	if isHeartbeat(&noLeader) {
		t.Fatal("request without leader taken for a heartbeat")
	}
}

func TestCodecRejectsGarbage(t *testing.T) {
	cases := map[string][]byte{
		"bad bool":        append(appendHeader(nil, &raft.RPCHeader{}), 1, 2), // TimeoutNow has no bool; RequestPreVoteResponse term=1, bool=2
		"huge entries":    {0, 0, 0, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f, 0},
		"overlong varint": {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		"bad time nsec":   nil,
	}
	// A log entry with nanoseconds out of range.
	l := appendLog(nil, &raft.Log{Index: 1})
	l = append(l[:len(l)-1], 1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f)
	req := appendHeader(nil, &raft.RPCHeader{})
	req = append(req, 1, 0, 0, 0, 2)
	req = append(req, l...)
	req = append(req, 0)
	cases["bad time nsec"] = req
	for name, p := range cases {
		for _, typ := range []byte{ftAppendEntries, ftRequestVote, ftRequestPreVote, ftTimeoutNow, ftInstallSnapshot} {
			if name == "bad bool" && typ != ftRequestPreVote {
				continue
			}
			if name == "bad bool" {
				if err := decodeResponse(typ, p, newResponse(typ)); err == nil {
					t.Errorf("%s: response type %d accepted", name, typ)
				}
				continue
			}
			if name == "bad time nsec" || name == "huge entries" {
				if typ != ftAppendEntries {
					continue
				}
			}
			if _, err := decodeCommand(typ, p); err == nil {
				t.Errorf("%s: request type %d accepted", name, typ)
			}
		}
	}
	if _, err := decodeCommand(99, nil); err == nil {
		t.Error("unknown request type accepted")
	}
	if _, err := appendResponse(nil, ftAppendEntries, &raft.RequestVoteResponse{}); err == nil {
		t.Error("mismatched response type accepted")
	}
}

// FuzzDecode feeds arbitrary bytes to every decoder: they must never panic,
// and whatever they accept must survive a re-encode unchanged.
func FuzzDecode(f *testing.F) {
	for _, s := range sampleMessages() {
		kind := s.typ
		if !s.req {
			kind |= 0x80
		}
		f.Add(append([]byte{kind}, encodeSample(s.typ, s.req, s.msg)...))
	}
	hb := heartbeatRPC()
	f.Add(append([]byte{ftAppendEntries}, appendAppendEntriesRequest(nil, &hb)...))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		typ, req := data[0]&0x7f, data[0]&0x80 == 0
		if typ < ftAppendEntries || typ > ftInstallSnapshot {
			return
		}
		p := data[1:]
		msg, err := decodeSample(typ, req, p)
		if err != nil {
			return
		}
		again, err := decodeSample(typ, req, encodeSample(typ, req, msg))
		if err != nil {
			t.Fatalf("re-encoded message does not decode: %v", err)
		}
		if !reflect.DeepEqual(msg, again) {
			t.Fatalf("re-encode changed message:\n%#v\n%#v", msg, again)
		}
		// The frame layer must cope with the payload as well.
		_, _ = parseStatus(p)
		_, _, _ = parseServiceReq(p)
	})
}
