package jepsen

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/heraldhq/herald/internal/wait"
	"github.com/heraldhq/herald/protocol"
)

// finalReader reads whole rooms from one node once the faults are healed.
type finalReader struct {
	rec  *Recorder
	node *Node
	conn *wsConn
}

func (fr *finalReader) ensure(ctx context.Context) (*wsConn, error) {
	if fr.conn != nil {
		select {
		case <-fr.conn.done:
		default:
			return fr.conn, nil
		}
	}
	c, err := dialWS(ctx, fr.node.ID, fr.node.Net.ClientAddr, "final", 3*time.Second)
	if err != nil {
		return nil, err
	}
	fr.conn = c
	return c, nil
}

// history pages through a room's whole history.
func (fr *finalReader) history(ctx context.Context, room string, stale bool) ([]Ev, uint64, error) {
	c, err := fr.ensure(ctx)
	if err != nil {
		return nil, 0, err
	}
	var evs []Ev
	from := uint64(1)
	for {
		req := historyRequest(room, from)
		if stale {
			req.Consistency = protocol.ConsistencyStale
		}
		f, err := c.call(ctx, req, 15*time.Second)
		if err != nil {
			c.close()
			return nil, 0, err
		}
		if e := f.Err(); e != nil {
			if e.Code == protocol.CodeNotFound {
				return nil, 0, nil
			}
			return nil, 0, e
		}
		page := events(f)
		evs = append(evs, page...)
		if len(page) == 0 || page[len(page)-1].Seq >= f.LastSeq {
			return evs, f.LastSeq, nil
		}
		from = page[len(page)-1].Seq + 1
	}
}

func (fr *finalReader) members(ctx context.Context, room string) ([]string, uint64, error) {
	c, err := fr.ensure(ctx)
	if err != nil {
		return nil, 0, err
	}
	f, err := c.call(ctx, &protocol.Request{Op: protocol.OpMembers, Room: room}, 15*time.Second)
	if err != nil {
		c.close()
		return nil, 0, err
	}
	if e := f.Err(); e != nil {
		return nil, 0, e
	}
	var ms []string
	for _, m := range f.Members {
		ms = append(ms, m.Member)
	}
	return ms, f.Seq, nil
}

// finalRead reads a room linearizably, retrying until deadline; every
// attempt is recorded.
func (fr *finalReader) finalRead(ctx context.Context, room string, deadline time.Time) []Ev {
	for {
		id := fr.rec.Invoke(Op{Process: FinalProcess, Node: fr.node.ID, F: FFinalRead, Room: room, FromSeq: 1})
		evs, last, err := fr.history(ctx, room, false)
		if err == nil {
			fr.rec.Complete(id, TypeOK, func(o *Op) { o.Events, o.LastSeq = evs, last })
			return evs
		}
		fr.rec.Complete(id, TypeFail, func(o *Op) { o.Error, o.Message = "final", err.Error() })
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil
		}
		wait.Sleep(ctx, 500*time.Millisecond)
	}
}

func (fr *finalReader) finalMembers(ctx context.Context, room string, deadline time.Time) {
	for {
		id := fr.rec.Invoke(Op{Process: FinalProcess, Node: fr.node.ID, F: FFinalMembers, Room: room})
		ms, seq, err := fr.members(ctx, room)
		if err == nil {
			fr.rec.Complete(id, TypeOK, func(o *Op) { o.Members, o.Seq = ms, seq })
			return
		}
		fr.rec.Complete(id, TypeFail, func(o *Op) { o.Error, o.Message = "final", err.Error() })
		if time.Now().After(deadline) || ctx.Err() != nil {
			return
		}
		wait.Sleep(ctx, 500*time.Millisecond)
	}
}

// staleRead reads the node's own replica until it holds want or the
// deadline passes, and records the last read.
func (fr *finalReader) staleRead(ctx context.Context, room string, want []Ev, deadline time.Time) {
	for {
		start := fr.rec.Now()
		evs, last, err := fr.history(ctx, room, true)
		done := err == nil && len(evs) >= len(want)
		if done || time.Now().After(deadline) || ctx.Err() != nil {
			op := Op{Process: FinalProcess, Node: fr.node.ID, F: FFinalStale, Room: room, FromSeq: 1,
				Start: start, End: fr.rec.Now(), Type: TypeOK, Events: evs, LastSeq: last}
			if err != nil {
				op.Type, op.Error, op.Message = TypeFail, "final", err.Error()
			}
			fr.rec.Record(op)
			return
		}
		wait.Sleep(ctx, 300*time.Millisecond)
	}
}

// finalPhase reads every room from every member node: linearizable
// histories and member lists, then each node's own replica once it caught
// up. It returns each room's longest history.
func finalPhase(ctx context.Context, c *Cluster, rec *Recorder, rooms, memRooms []string, timeout time.Duration) map[string][]Ev {
	deadline := time.Now().Add(timeout)
	nodes := c.Members()
	readers := make([]*finalReader, len(nodes))
	for i, n := range nodes {
		readers[i] = &finalReader{rec: rec, node: n}
	}
	defer func() {
		for _, fr := range readers {
			if fr.conn != nil {
				fr.conn.close()
			}
		}
	}()
	var mu sync.Mutex // guards longest
	longest := map[string][]Ev{}
	var wg sync.WaitGroup
	for _, fr := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, room := range rooms {
				evs := fr.finalRead(ctx, room, deadline)
				mu.Lock()
				if len(evs) > len(longest[room]) {
					longest[room] = evs
				}
				mu.Unlock()
				if slices.Contains(memRooms, room) {
					fr.finalMembers(ctx, room, deadline)
				}
			}
		}()
	}
	wg.Wait()
	settle := time.Now().Add(20 * time.Second)
	for _, fr := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, room := range rooms {
				mu.Lock()
				want := longest[room]
				mu.Unlock()
				fr.staleRead(ctx, room, want, settle)
			}
		}()
	}
	wg.Wait()
	return longest
}
