package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/hashicorp/raft"
)

const (
	// snapshotTimeoutScale mirrors NetworkTransport: the receiver answers
	// only after persisting and restoring the snapshot, so the wait for the
	// answer grows by RPCTimeout per this many bytes.
	snapshotTimeoutScale = 256 << 10

	snapshotBufferSize = 64 << 10
)

func (g *GroupTransport) installSnapshot(target raft.ServerAddress, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	if g.ctx.Err() != nil {
		return g.errClosed()
	}
	if args.Size < 0 {
		return fmt.Errorf("transport: group %d InstallSnapshot with negative size %d", g.id, args.Size)
	}
	if err := g.m.checkBackoff(target); err != nil {
		return err
	}
	nc, _, err := g.m.dial(g.ctx, target, kindSnapshot)
	if err != nil {
		if g.ctx.Err() != nil {
			return g.errClosed()
		}
		return fmt.Errorf("%w: group %d InstallSnapshot: %w", ErrUnreachable, g.id, err)
	}
	if !g.m.trackRaw(nc) {
		return fmt.Errorf("%w: node %s is shutting down", ErrClosed, g.m.cfg.NodeID)
	}
	defer func() {
		g.m.untrackRaw(nc)
		_ = nc.Close()
	}()
	stop := context.AfterFunc(g.ctx, func() { _ = nc.Close() })
	defer stop()

	err = g.sendSnapshot(nc, args, resp, data)
	if err != nil && g.ctx.Err() != nil {
		return g.errClosed()
	}
	return err
}

func (g *GroupTransport) sendSnapshot(nc net.Conn, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	timeout := g.m.cfg.RPCTimeout
	dc := &deadlineConn{Conn: nc, writeTimeout: timeout}
	bw := bufio.NewWriterSize(dc, snapshotBufferSize)
	b, err := finishFrame(appendInstallSnapshotRequest(newFrame(ftInstallSnapshot, g.id, 0, 128+len(args.Configuration)+len(args.Peers)), args))
	if err != nil {
		return fmt.Errorf("transport: group %d InstallSnapshot: %w", g.id, err)
	}
	if _, err := bw.Write(b); err != nil {
		return fmt.Errorf("%w: group %d InstallSnapshot to %s: %w", ErrUnreachable, g.id, nc.RemoteAddr(), err)
	}
	src := &errTagReader{r: data}
	n, err := io.CopyN(bw, src, args.Size)
	if err != nil {
		if src.err != nil {
			if errors.Is(src.err, io.EOF) {
				return fmt.Errorf("transport: group %d snapshot data ended after %d of %d bytes", g.id, n, args.Size)
			}
			return fmt.Errorf("transport: group %d reading snapshot data: %w", g.id, src.err)
		}
		return fmt.Errorf("%w: group %d sending snapshot to %s after %d of %d bytes: %w", ErrUnreachable, g.id, nc.RemoteAddr(), n, args.Size, err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("%w: group %d sending snapshot to %s: %w", ErrUnreachable, g.id, nc.RemoteAddr(), err)
	}
	wait := timeout * time.Duration(1+args.Size/snapshotTimeoutScale)
	_ = nc.SetReadDeadline(time.Now().Add(wait))
	f, err := readFrame(bufio.NewReader(nc), nil)
	if err != nil {
		return fmt.Errorf("%w: group %d waiting for the InstallSnapshot answer from %s: %w", ErrUnreachable, g.id, nc.RemoteAddr(), err)
	}
	return decodeRaftReply(ftInstallSnapshot, f, resp)
}

// errTagReader remembers read errors so they can be told apart from write
// errors after io.CopyN.
type errTagReader struct {
	r   io.Reader
	err error
}

func (r *errTagReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil {
		r.err = err
	}
	return n, err
}

// serveSnapshot handles an accepted snapshot connection: one request frame,
// Size bytes of data handed to raft as the RPC's Reader, one answer.
func (m *Manager) serveSnapshot(nc net.Conn, peerID string) {
	timeout := m.cfg.RPCTimeout
	dc := &deadlineConn{Conn: nc, readTimeout: timeout, writeTimeout: timeout}
	dc.armRead() // every read must make progress, including the first frame
	br := bufio.NewReaderSize(dc, snapshotBufferSize)
	f, err := readFrame(br, nil)
	if err != nil {
		m.log.Error("transport: reading InstallSnapshot request", "peer", peerID, "remote", nc.RemoteAddr().String(), "err", err)
		return
	}
	reply := func(resp any, err error) {
		_, werr := dc.Write(raftReplyFrame(f.group, f.id, ftInstallSnapshot, resp, err))
		if werr != nil {
			m.log.Warn("transport: writing InstallSnapshot answer", "peer", peerID, "group", f.group, "err", werr)
		}
	}
	if f.typ != ftInstallSnapshot {
		m.log.Error("transport: unexpected frame on a snapshot connection", "peer", peerID, "type", frameTypeName(f.typ))
		reply(nil, fmt.Errorf("transport: expected InstallSnapshot on a snapshot connection, got %s", frameTypeName(f.typ)))
		return
	}
	g := m.group(f.group)
	if g == nil {
		reply(nil, m.errNoGroup(f.group))
		return
	}
	req, err := decodeInstallSnapshotRequest(f.payload)
	if err != nil {
		reply(nil, err)
		return
	}
	respCh := make(chan raft.RPCResponse, 1)
	rpc := raft.RPC{Command: req, Reader: io.LimitReader(br, req.Size), RespChan: respCh}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case g.consumeCh <- rpc:
	case <-t.C:
		reply(nil, fmt.Errorf("transport: raft of group %d on node %s did not take an InstallSnapshot within %v", g.id, m.cfg.NodeID, timeout))
		return
	case <-g.ctx.Done():
		reply(nil, g.errClosed())
		return
	case <-m.ctx.Done():
		return
	}
	// raft reads the data from the connection meanwhile; returning closes
	// the connection, which fails its read if it is still going.
	t.Reset(timeout * time.Duration(1+req.Size/snapshotTimeoutScale))
	select {
	case r := <-respCh:
		reply(r.Response, r.Error)
	case <-t.C:
		m.log.Error("transport: raft did not answer InstallSnapshot", "group", g.id, "peer", peerID)
	case <-g.ctx.Done():
	case <-m.ctx.Done():
	}
}
