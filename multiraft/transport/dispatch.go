package transport

import (
	"encoding/binary"
	"fmt"

	"github.com/hashicorp/raft"
)

// dispatch routes a frame received on an inbound connection. It runs on
// the connection's reader goroutine and never waits: anything slow is handed
// to a queue or goroutine, and anything that cannot be accepted right away
// gets an error reply. A returned error is a protocol violation and drops
// the connection.
func (m *Manager) dispatch(c *conn, f frame) error {
	switch f.typ {
	case ftAppendEntries, ftRequestVote, ftRequestPreVote, ftTimeoutNow:
		m.dispatchRaft(c, f)
	case ftInstallSnapshot:
		_ = c.send(statusFrame(ftRaftResp, f.group, f.id, nil,
			fmt.Errorf("transport: InstallSnapshot must use a snapshot connection (node %s)", m.cfg.NodeID)))
	case ftCall:
		m.dispatchCall(c, f)
	case ftStreamOpen:
		m.dispatchStream(c, f)
	case ftCancel:
		c.cancelActive(f.id)
	default:
		return fmt.Errorf("unexpected %s frame on an inbound connection", frameTypeName(f.typ))
	}
	return nil
}

func (m *Manager) dispatchRaft(c *conn, f frame) {
	reply := func(err error) { _ = c.send(statusFrame(ftRaftResp, f.group, f.id, nil, err)) }
	if err := m.allowed(c, f.typ, ""); err != nil {
		reply(err)
		return
	}
	g := m.group(f.group)
	if g == nil {
		reply(m.errNoGroup(f.group))
		return
	}
	cmd, err := decodeCommand(f.typ, f.payload)
	if err != nil {
		m.log.Warn("transport: undecodable raft request", "conn", c.String(), "group", f.group, "err", err)
		reply(err)
		return
	}
	hb := false
	ae, ok := cmd.(*raft.AppendEntriesRequest)
	if ok {
		hb = isHeartbeat(ae)
	}
	in := &inboundRPC{c: c, typ: f.typ, id: f.id, cmd: cmd, heartbeat: hb}
	if hb && g.answerInline(in, ae) {
		return
	}
	if err := g.enqueue(in, hb); err != nil {
		reply(err)
	}
}

// appendServiceReq encodes the payload of a call or stream open.
func appendServiceReq(b []byte, service string, req []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(service)))
	b = append(b, service...)
	return append(b, req...)
}

func parseServiceReq(p []byte) (string, []byte, error) {
	n, k := binary.Uvarint(p)
	if k <= 0 || n > uint64(len(p)-k) {
		return "", nil, fmt.Errorf("transport: malformed service name in request")
	}
	p = p[k:]
	return string(p[:n]), p[n:], nil
}

func cancelFrame(group, id uint64) []byte {
	b, _ := finishFrame(newFrame(ftCancel, group, id, 0))
	return b
}
