package transport

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// Liveness probes.
//
// A peer that stops without closing its sockets (a paused process, a host
// that froze, a network that drops packets) leaves every request to it
// waiting for the full RPCTimeout, and a forwarded proposal's caller waiting
// with it. A healthy peer answers a trivial call within milliseconds, so an
// outbound connection with requests waiting that has received nothing for
// ProbeAfter sends such a call (pingService); if it then stays silent for
// ProbeAfter again, the peer is taken for gone and the connection is closed,
// failing its requests as unreachable (their callers retry elsewhere, and
// the next request redials). A slow request does not trip this as long as
// the peer answers the ping, and a peer that does not know the ping still
// answers it with an error, which is enough.

const pingService = "transport.ping"

// watchLoop probes the peer of an outbound connection while requests wait
// on it, until the connection closes.
func (c *conn) watchLoop(after time.Duration) {
	t := time.NewTicker(after / 4)
	defer t.Stop()
	var probed time.Time // when the unanswered probe went out
	for {
		select {
		case <-t.C:
		case <-c.closed:
			return
		}
		silent := time.Since(time.Unix(0, c.lastRecv.Load()))
		switch {
		case silent < after || !c.hasPending():
			probed = time.Time{}
		case probed.IsZero():
			probed = time.Now()
			c.ping()
		case time.Since(probed) >= after:
			c.close(fmt.Errorf("%w: %s: nothing received for %v while requests waited, not even an answer to a ping", ErrUnreachable, c, silent.Round(time.Millisecond)))
			return
		}
	}
}

func (c *conn) hasPending() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending) > 0
}

// ping sends a pingService call whose answer only matters as bytes
// received; the reader drops it with its pending entry.
func (c *conn) ping() {
	id := c.nextID.Add(1)
	b, err := finishFrame(appendServiceReq(newFrame(ftCall, 0, id, len(pingService)+1), pingService, nil))
	if err != nil {
		return
	}
	if c.addPending(id, newUnary()) != nil {
		return
	}
	if c.send(b) != nil {
		c.removePending(id)
	}
}

// Answers sends the peer at addr a ping over this node's connection to it
// and reports whether anything arrives on that connection before ctx ends.
// It is for a caller with its own reason to doubt the peer (its group
// elected another leader) that cannot wait for the probe above; a busy but
// live peer answers a ping from its reader at once. Without a connection
// it reports false: no request can be waiting on one.
func (m *Manager) Answers(ctx context.Context, addr raft.ServerAddress) bool {
	m.mu.Lock()
	p := m.peers[addr]
	m.mu.Unlock()
	if p == nil {
		return false
	}
	p.mu.Lock()
	c := p.conn
	p.mu.Unlock()
	if c == nil || c.isClosed() {
		return false
	}
	sent := time.Now().UnixNano()
	c.ping()
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		if c.lastRecv.Load() > sent {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-c.closed:
			return false
		case <-t.C:
		}
	}
}
