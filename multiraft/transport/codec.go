//lint:file-ignore SA1019 the deprecated Leader and Candidate fields are still sent and read by raft, so the wire must carry them

package transport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// The raft message encoding is hand-written because AppendEntries and
// heartbeats are the hot path and reflection-based codecs cost several times
// more CPU and garbage. Conventions:
//
//   - integers are (zigzag for signed) varints;
//   - byte slices are uvarint(len+1) followed by the bytes, with 0 meaning
//     nil, so nil and empty slices survive a round trip (raft tells a
//     heartbeat by a nil leader address);
//   - bools and flag sets are one byte, and unknown bits are rejected;
//   - times are a byte (0 = zero time), then seconds and nanoseconds.
//
// Decoders never panic and fail on truncated input or trailing bytes.

var errTruncated = errors.New("transport: truncated or malformed message")

func appendBytes(b, p []byte) []byte {
	if p == nil {
		return append(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(p))+1)
	return append(b, p...)
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(b, 0)
	}
	b = append(b, 1)
	b = binary.AppendVarint(b, t.Unix())
	return binary.AppendUvarint(b, uint64(t.Nanosecond()))
}

func appendHeader(b []byte, h *raft.RPCHeader) []byte {
	b = binary.AppendVarint(b, int64(h.ProtocolVersion))
	b = appendBytes(b, h.ID)
	return appendBytes(b, h.Addr)
}

func appendLog(b []byte, l *raft.Log) []byte {
	b = binary.AppendUvarint(b, l.Index)
	b = binary.AppendUvarint(b, l.Term)
	b = append(b, byte(l.Type))
	b = appendBytes(b, l.Data)
	b = appendBytes(b, l.Extensions)
	return appendTime(b, l.AppendedAt)
}

// decoder reads the encoding above from a byte slice. The first failure
// sticks, so message decoders can read every field and check once.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errTruncated
	}
	d.b = nil
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

// int decodes a varint that must fit a Go int.
func (d *decoder) int() int {
	v := d.varint()
	if int64(int(v)) != v {
		d.fail()
		return 0
	}
	return int(v)
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.fail()
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) bool() bool {
	switch d.byte() {
	case 0:
		return false
	case 1:
		return true
	default:
		d.fail()
		return false
	}
}

// bytes returns a slice aliasing the input (capacity clipped so appends by
// the receiver never clobber the following fields).
func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if n == 0 || d.err != nil {
		return nil
	}
	n--
	if n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	p := d.b[:n:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) time() time.Time {
	switch d.byte() {
	case 0:
		return time.Time{}
	case 1:
		sec := d.varint()
		nsec := d.uvarint()
		if nsec >= 1e9 {
			d.fail()
		}
		if d.err != nil {
			return time.Time{}
		}
		return time.Unix(sec, int64(nsec)).UTC()
	default:
		d.fail()
		return time.Time{}
	}
}

func (d *decoder) header() raft.RPCHeader {
	var h raft.RPCHeader
	h.ProtocolVersion = raft.ProtocolVersion(d.int())
	h.ID = d.bytes()
	h.Addr = d.bytes()
	return h
}

func (d *decoder) log() *raft.Log {
	l := &raft.Log{}
	l.Index = d.uvarint()
	l.Term = d.uvarint()
	l.Type = raft.LogType(d.byte())
	l.Data = d.bytes()
	l.Extensions = d.bytes()
	l.AppendedAt = d.time()
	return l
}

// finish reports the sticky error, or trailing garbage.
func (d *decoder) finish(what string) error {
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("transport: %d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return fmt.Errorf("transport: decoding %s: %w", what, d.err)
	}
	return nil
}

// AppendEntries.

func appendAppendEntriesRequest(b []byte, m *raft.AppendEntriesRequest) []byte {
	b = appendHeader(b, &m.RPCHeader)
	b = binary.AppendUvarint(b, m.Term)
	b = appendBytes(b, m.Leader)
	b = binary.AppendUvarint(b, m.PrevLogEntry)
	b = binary.AppendUvarint(b, m.PrevLogTerm)
	if m.Entries == nil {
		b = append(b, 0)
	} else {
		b = binary.AppendUvarint(b, uint64(len(m.Entries))+1)
		for _, l := range m.Entries {
			if l == nil {
				l = &raft.Log{}
			}
			b = appendLog(b, l)
		}
	}
	return binary.AppendUvarint(b, m.LeaderCommitIndex)
}

func decodeAppendEntriesRequest(p []byte) (*raft.AppendEntriesRequest, error) {
	d := decoder{b: p}
	m := &raft.AppendEntriesRequest{}
	m.RPCHeader = d.header()
	m.Term = d.uvarint()
	m.Leader = d.bytes()
	m.PrevLogEntry = d.uvarint()
	m.PrevLogTerm = d.uvarint()
	if n := d.uvarint(); n > 0 {
		n--
		// Every entry takes at least 6 bytes, which bounds the allocation
		// a garbage count can cause.
		if n > uint64(len(d.b))/6 {
			d.fail()
		} else {
			m.Entries = make([]*raft.Log, 0, n)
			for i := uint64(0); i < n && d.err == nil; i++ {
				m.Entries = append(m.Entries, d.log())
			}
		}
	}
	m.LeaderCommitIndex = d.uvarint()
	if err := d.finish("AppendEntriesRequest"); err != nil {
		return nil, err
	}
	return m, nil
}

const (
	flagSuccess        = 1 << 0
	flagNoRetryBackoff = 1 << 1
)

func appendAppendEntriesResponse(b []byte, m *raft.AppendEntriesResponse) []byte {
	b = appendHeader(b, &m.RPCHeader)
	b = binary.AppendUvarint(b, m.Term)
	b = binary.AppendUvarint(b, m.LastLog)
	var flags byte
	if m.Success {
		flags |= flagSuccess
	}
	if m.NoRetryBackoff {
		flags |= flagNoRetryBackoff
	}
	return append(b, flags)
}

func decodeAppendEntriesResponse(p []byte, m *raft.AppendEntriesResponse) error {
	d := decoder{b: p}
	var r raft.AppendEntriesResponse
	r.RPCHeader = d.header()
	r.Term = d.uvarint()
	r.LastLog = d.uvarint()
	flags := d.byte()
	if flags&^(flagSuccess|flagNoRetryBackoff) != 0 {
		d.fail()
	}
	r.Success = flags&flagSuccess != 0
	r.NoRetryBackoff = flags&flagNoRetryBackoff != 0
	if err := d.finish("AppendEntriesResponse"); err != nil {
		return err
	}
	*m = r
	return nil
}

// RequestVote.

func appendRequestVoteRequest(b []byte, m *raft.RequestVoteRequest) []byte {
	b = appendHeader(b, &m.RPCHeader)
	b = binary.AppendUvarint(b, m.Term)
	b = appendBytes(b, m.Candidate)
	b = binary.AppendUvarint(b, m.LastLogIndex)
	b = binary.AppendUvarint(b, m.LastLogTerm)
	return appendBool(b, m.LeadershipTransfer)
}

func decodeRequestVoteRequest(p []byte) (*raft.RequestVoteRequest, error) {
	d := decoder{b: p}
	m := &raft.RequestVoteRequest{}
	m.RPCHeader = d.header()
	m.Term = d.uvarint()
	m.Candidate = d.bytes()
	m.LastLogIndex = d.uvarint()
	m.LastLogTerm = d.uvarint()
	m.LeadershipTransfer = d.bool()
	if err := d.finish("RequestVoteRequest"); err != nil {
		return nil, err
	}
	return m, nil
}

func appendRequestVoteResponse(b []byte, m *raft.RequestVoteResponse) []byte {
	b = appendHeader(b, &m.RPCHeader)
	b = binary.AppendUvarint(b, m.Term)
	b = appendBytes(b, m.Peers)
	return appendBool(b, m.Granted)
}

func decodeRequestVoteResponse(p []byte, m *raft.RequestVoteResponse) error {
	d := decoder{b: p}
	var r raft.RequestVoteResponse
	r.RPCHeader = d.header()
	r.Term = d.uvarint()
	r.Peers = d.bytes()
	r.Granted = d.bool()
	if err := d.finish("RequestVoteResponse"); err != nil {
		return err
	}
	*m = r
	return nil
}

// RequestPreVote.

func appendRequestPreVoteRequest(b []byte, m *raft.RequestPreVoteRequest) []byte {
	b = appendHeader(b, &m.RPCHeader)
	b = binary.AppendUvarint(b, m.Term)
	b = binary.AppendUvarint(b, m.LastLogIndex)
	return binary.AppendUvarint(b, m.LastLogTerm)
}

func decodeRequestPreVoteRequest(p []byte) (*raft.RequestPreVoteRequest, error) {
	d := decoder{b: p}
	m := &raft.RequestPreVoteRequest{}
	m.RPCHeader = d.header()
	m.Term = d.uvarint()
	m.LastLogIndex = d.uvarint()
	m.LastLogTerm = d.uvarint()
	if err := d.finish("RequestPreVoteRequest"); err != nil {
		return nil, err
	}
	return m, nil
}

func appendRequestPreVoteResponse(b []byte, m *raft.RequestPreVoteResponse) []byte {
	b = appendHeader(b, &m.RPCHeader)
	b = binary.AppendUvarint(b, m.Term)
	return appendBool(b, m.Granted)
}

func decodeRequestPreVoteResponse(p []byte, m *raft.RequestPreVoteResponse) error {
	d := decoder{b: p}
	var r raft.RequestPreVoteResponse
	r.RPCHeader = d.header()
	r.Term = d.uvarint()
	r.Granted = d.bool()
	if err := d.finish("RequestPreVoteResponse"); err != nil {
		return err
	}
	*m = r
	return nil
}

// TimeoutNow.

func appendTimeoutNowRequest(b []byte, m *raft.TimeoutNowRequest) []byte {
	return appendHeader(b, &m.RPCHeader)
}

func decodeTimeoutNowRequest(p []byte) (*raft.TimeoutNowRequest, error) {
	d := decoder{b: p}
	m := &raft.TimeoutNowRequest{}
	m.RPCHeader = d.header()
	if err := d.finish("TimeoutNowRequest"); err != nil {
		return nil, err
	}
	return m, nil
}

func appendTimeoutNowResponse(b []byte, m *raft.TimeoutNowResponse) []byte {
	return appendHeader(b, &m.RPCHeader)
}

func decodeTimeoutNowResponse(p []byte, m *raft.TimeoutNowResponse) error {
	d := decoder{b: p}
	var r raft.TimeoutNowResponse
	r.RPCHeader = d.header()
	if err := d.finish("TimeoutNowResponse"); err != nil {
		return err
	}
	*m = r
	return nil
}

// InstallSnapshot.

func appendInstallSnapshotRequest(b []byte, m *raft.InstallSnapshotRequest) []byte {
	b = appendHeader(b, &m.RPCHeader)
	b = binary.AppendVarint(b, int64(m.SnapshotVersion))
	b = binary.AppendUvarint(b, m.Term)
	b = appendBytes(b, m.Leader)
	b = binary.AppendUvarint(b, m.LastLogIndex)
	b = binary.AppendUvarint(b, m.LastLogTerm)
	b = appendBytes(b, m.Peers)
	b = appendBytes(b, m.Configuration)
	b = binary.AppendUvarint(b, m.ConfigurationIndex)
	return binary.AppendVarint(b, m.Size)
}

func decodeInstallSnapshotRequest(p []byte) (*raft.InstallSnapshotRequest, error) {
	d := decoder{b: p}
	m := &raft.InstallSnapshotRequest{}
	m.RPCHeader = d.header()
	m.SnapshotVersion = raft.SnapshotVersion(d.int())
	m.Term = d.uvarint()
	m.Leader = d.bytes()
	m.LastLogIndex = d.uvarint()
	m.LastLogTerm = d.uvarint()
	m.Peers = d.bytes()
	m.Configuration = d.bytes()
	m.ConfigurationIndex = d.uvarint()
	m.Size = d.varint()
	if m.Size < 0 {
		d.fail()
	}
	if err := d.finish("InstallSnapshotRequest"); err != nil {
		return nil, err
	}
	return m, nil
}

func appendInstallSnapshotResponse(b []byte, m *raft.InstallSnapshotResponse) []byte {
	b = appendHeader(b, &m.RPCHeader)
	b = binary.AppendUvarint(b, m.Term)
	return appendBool(b, m.Success)
}

func decodeInstallSnapshotResponse(p []byte, m *raft.InstallSnapshotResponse) error {
	d := decoder{b: p}
	var r raft.InstallSnapshotResponse
	r.RPCHeader = d.header()
	r.Term = d.uvarint()
	r.Success = d.bool()
	if err := d.finish("InstallSnapshotResponse"); err != nil {
		return err
	}
	*m = r
	return nil
}

// decodeCommand decodes a raft request frame into the command raft expects
// in RPC.Command.
func decodeCommand(typ byte, p []byte) (any, error) {
	switch typ {
	case ftAppendEntries:
		return decodeAppendEntriesRequest(p)
	case ftRequestVote:
		return decodeRequestVoteRequest(p)
	case ftRequestPreVote:
		return decodeRequestPreVoteRequest(p)
	case ftTimeoutNow:
		return decodeTimeoutNowRequest(p)
	case ftInstallSnapshot:
		return decodeInstallSnapshotRequest(p)
	default:
		return nil, fmt.Errorf("transport: unknown raft request type %d", typ)
	}
}

// appendResponse encodes what raft passed to RPC.Respond for a request of
// type typ. raft passes pointers; values are accepted too, as
// NetworkTransport's msgpack encoding does.
func appendResponse(b []byte, typ byte, resp any) ([]byte, error) {
	switch r := resp.(type) {
	case *raft.AppendEntriesResponse:
		if typ == ftAppendEntries && r != nil {
			return appendAppendEntriesResponse(b, r), nil
		}
	case raft.AppendEntriesResponse:
		if typ == ftAppendEntries {
			return appendAppendEntriesResponse(b, &r), nil
		}
	case *raft.RequestVoteResponse:
		if typ == ftRequestVote && r != nil {
			return appendRequestVoteResponse(b, r), nil
		}
	case raft.RequestVoteResponse:
		if typ == ftRequestVote {
			return appendRequestVoteResponse(b, &r), nil
		}
	case *raft.RequestPreVoteResponse:
		if typ == ftRequestPreVote && r != nil {
			return appendRequestPreVoteResponse(b, r), nil
		}
	case raft.RequestPreVoteResponse:
		if typ == ftRequestPreVote {
			return appendRequestPreVoteResponse(b, &r), nil
		}
	case *raft.TimeoutNowResponse:
		if typ == ftTimeoutNow && r != nil {
			return appendTimeoutNowResponse(b, r), nil
		}
	case raft.TimeoutNowResponse:
		if typ == ftTimeoutNow {
			return appendTimeoutNowResponse(b, &r), nil
		}
	case *raft.InstallSnapshotResponse:
		if typ == ftInstallSnapshot && r != nil {
			return appendInstallSnapshotResponse(b, r), nil
		}
	case raft.InstallSnapshotResponse:
		if typ == ftInstallSnapshot {
			return appendInstallSnapshotResponse(b, &r), nil
		}
	}
	return nil, fmt.Errorf("transport: raft responded to a %s with %T", frameTypeName(typ), resp)
}

// decodeResponse decodes the response to a request of type typ into out,
// which is the pointer the raft caller passed in.
func decodeResponse(typ byte, p []byte, out any) error {
	switch typ {
	case ftAppendEntries:
		return decodeAppendEntriesResponse(p, out.(*raft.AppendEntriesResponse))
	case ftRequestVote:
		return decodeRequestVoteResponse(p, out.(*raft.RequestVoteResponse))
	case ftRequestPreVote:
		return decodeRequestPreVoteResponse(p, out.(*raft.RequestPreVoteResponse))
	case ftTimeoutNow:
		return decodeTimeoutNowResponse(p, out.(*raft.TimeoutNowResponse))
	case ftInstallSnapshot:
		return decodeInstallSnapshotResponse(p, out.(*raft.InstallSnapshotResponse))
	default:
		return fmt.Errorf("transport: unknown raft request type %d", typ)
	}
}

func frameTypeName(typ byte) string {
	switch typ {
	case ftAppendEntries:
		return "AppendEntries"
	case ftRequestVote:
		return "RequestVote"
	case ftRequestPreVote:
		return "RequestPreVote"
	case ftTimeoutNow:
		return "TimeoutNow"
	case ftInstallSnapshot:
		return "InstallSnapshot"
	case ftRaftResp:
		return "raft response"
	case ftCall:
		return "call"
	case ftCallResp:
		return "call response"
	case ftStreamOpen:
		return "stream open"
	case ftStreamMsg:
		return "stream message"
	case ftStreamEnd:
		return "stream end"
	case ftCancel:
		return "cancel"
	default:
		return fmt.Sprintf("frame type %d", typ)
	}
}

// isHeartbeat mirrors NetworkTransport: an AppendEntries carrying only the
// term and the leader (plus the RPC header) is a heartbeat and may take the
// fast path.
func isHeartbeat(req *raft.AppendEntriesRequest) bool {
	leaderAddr := req.Addr
	if len(leaderAddr) == 0 {
		leaderAddr = req.Leader
	}
	return req.Term != 0 && leaderAddr != nil &&
		req.PrevLogEntry == 0 && req.PrevLogTerm == 0 &&
		len(req.Entries) == 0 && req.LeaderCommitIndex == 0
}
