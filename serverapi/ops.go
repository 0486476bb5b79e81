package serverapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"

	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/internal/httpjson"
	"github.com/heraldhq/herald/protocol"
	"github.com/heraldhq/herald/rooms"
	"github.com/heraldhq/herald/wsfront"

	api "github.com/heraldhq/herald/client/serverapi"
)

// DefaultMember is the member a publish is from when it names none.
const DefaultMember = "@server"

// Page sizes of history and rooms.
const (
	defaultLimit = 100
	maxLimit     = 1000
)

// broadcastsAtOnce bounds the rooms of one broadcast committed at once.
const broadcastsAtOnce = 16

func decode(name string, body []byte, v any) *protocol.Error {
	if err := httpjson.Decode(body, v); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field != "" {
			return protocol.Errorf(protocol.CodeBadRequest, "%s: field %q must not be a JSON %s", name, typeErr.Field, typeErr.Value)
		}
		return protocol.Errorf(protocol.CodeBadRequest, "%s: the body is not a valid request: %v", name, err)
	}
	return nil
}

// decodeRoomOp decodes the body of an op on one room and checks the room's
// name, which *room points into v.
func decodeRoomOp(name string, body []byte, v any, room *string) *protocol.Error {
	if e := decode(name, body, v); e != nil {
		return e
	}
	return wsfront.CheckRoom(*room)
}

func (s *server) joined() *protocol.Error {
	if s.be.NodeEpoch() == 0 {
		return &protocol.Error{Code: protocol.CodeUnavailable, Retryable: true,
			Message: "this node has not joined its cluster yet; retry or use another node"}
	}
	return nil
}

func staleOf(consistency string) (bool, *protocol.Error) {
	switch consistency {
	case "", api.Linearizable:
		return false, nil
	case api.Stale:
		return true, nil
	}
	return false, protocol.Errorf(protocol.CodeBadRequest, "consistency must be %q or %q, not %q", api.Linearizable, api.Stale, consistency)
}

func limitOf(n int) (int, *protocol.Error) {
	switch {
	case n == 0:
		return defaultLimit, nil
	case n < 0 || n > maxLimit:
		return 0, protocol.Errorf(protocol.CodeBadRequest, "limit must be 1..%d", maxLimit)
	}
	return n, nil
}

// pageOf checks the options of a paged read (a room's history, the room
// listing): its consistency and its page size.
func pageOf(consistency string, limit int) (stale bool, n int, e *protocol.Error) {
	if stale, e = staleOf(consistency); e != nil {
		return false, 0, e
	}
	if n, e = limitOf(limit); e != nil {
		return false, 0, e
	}
	return stale, n, nil
}

// message checks what a publish and a broadcast share and returns the
// member and the data to commit.
func (s *server) message(data json.RawMessage, key, as string) (string, []byte, *protocol.Error) {
	switch {
	case len(data) == 0:
		return "", nil, protocol.Errorf(protocol.CodeBadRequest, "data is required: any JSON value")
	case len(key) > fsm.MaxKeyBytes:
		return "", nil, protocol.Errorf(protocol.CodeBadRequest, "key is %d bytes; at most %d", len(key), fsm.MaxKeyBytes)
	case as != "" && !wsfront.ValidName(as):
		return "", nil, protocol.Errorf(protocol.CodeBadRequest, "as must be 1..%d bytes of UTF-8 without control characters", fsm.MaxMemberBytes)
	}
	// Stored compact, as a socket's frame would be after its own
	// encoder: the API's pretty-printed bodies should not cost history.
	var buf bytes.Buffer
	if err := json.Compact(&buf, data); err != nil {
		return "", nil, protocol.Errorf(protocol.CodeBadRequest, "data: %v", err)
	}
	if buf.Len() > s.opts.MaxData {
		return "", nil, protocol.Errorf(protocol.CodeTooLarge, "data is %d bytes; at most %d (the node's max_data)", buf.Len(), s.opts.MaxData)
	}
	if as == "" {
		as = DefaultMember
	}
	return as, buf.Bytes(), nil
}

func (s *server) commitPublish(ctx context.Context, room, member string, data []byte, key string, expect *uint64) (*fsm.Result, *protocol.Error) {
	cmd := fsm.Command{Op: fsm.OpPublish, Room: room, Member: member, Data: data, Key: key}
	if expect != nil {
		cmd.HasExpectSeq, cmd.ExpectSeq = true, *expect
	}
	// With a key a lost outcome is retried on the node: the key makes the
	// retry harmless, as it does for a socket's publish.
	return rooms.Commit(ctx, s.be, cmd, key != "")
}

func (s *server) publish(ctx context.Context, body []byte) (any, *protocol.Error) {
	var req api.PublishRequest
	if e := decodeRoomOp(api.OpPublish, body, &req, &req.Room); e != nil {
		return nil, e
	}
	member, data, e := s.message(req.Data, req.Key, req.As)
	if e != nil {
		return nil, e
	}
	if e := s.joined(); e != nil {
		return nil, e
	}
	res, e := s.commitPublish(ctx, req.Room, member, data, req.Key, req.ExpectSeq)
	if e != nil {
		return nil, e
	}
	return api.PublishResult{Seq: res.Seq, Epoch: wsfront.EpochString(res.Epoch), Duplicate: res.Duplicate}, nil
}

func (s *server) broadcast(ctx context.Context, body []byte) (any, *protocol.Error) {
	var req api.BroadcastRequest
	if e := decode(api.OpBroadcast, body, &req); e != nil {
		return nil, e
	}
	if len(req.Rooms) == 0 || len(req.Rooms) > s.opts.MaxBroadcastRooms {
		return nil, protocol.Errorf(protocol.CodeBadRequest, "rooms must list 1..%d rooms, not %d", s.opts.MaxBroadcastRooms, len(req.Rooms))
	}
	seen := make(map[string]int, len(req.Rooms))
	for i, room := range req.Rooms {
		if e := wsfront.CheckRoom(room); e != nil {
			return nil, protocol.Errorf(e.Code, "rooms[%d]: %s", i, e.Message)
		}
		if j, dup := seen[room]; dup {
			// With one key, the second would only answer duplicate.
			return nil, protocol.Errorf(protocol.CodeBadRequest, "rooms[%d] repeats rooms[%d]", i, j)
		}
		seen[room] = i
	}
	member, data, e := s.message(req.Data, req.Key, req.As)
	if e != nil {
		return nil, e
	}
	if e := s.joined(); e != nil {
		return nil, e
	}
	out := api.BroadcastResult{Results: make([]api.RoomResult, len(req.Rooms))}
	sem := make(chan struct{}, broadcastsAtOnce)
	var wg sync.WaitGroup
	for i, room := range req.Rooms {
		out.Results[i].Room = room
		// The rooms are in different groups, so their commits wait on
		// different leaders: run them side by side, boundedly; each is
		// bounded by ctx and all have ended when broadcast returns.
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			res, e := s.commitPublish(ctx, room, member, data, req.Key, nil)
			r := &out.Results[i]
			if e != nil {
				r.Error = wireError(e)
				return
			}
			r.Seq, r.Epoch, r.Duplicate = res.Seq, wsfront.EpochString(res.Epoch), res.Duplicate
		}()
	}
	wg.Wait()
	return out, nil
}

// historyReply is api.HistoryResult with its events framed by the front's
// own encoder, so that they read exactly as socket pushes do.
type historyReply struct {
	Events []json.RawMessage `json:"events"`
	api.HistoryResult
}

func (s *server) history(ctx context.Context, body []byte) (any, *protocol.Error) {
	var req api.HistoryRequest
	if e := decodeRoomOp(api.OpHistory, body, &req, &req.Room); e != nil {
		return nil, e
	}
	stale, limit, e := pageOf(req.Consistency, req.Limit)
	if e != nil {
		return nil, e
	}
	var from uint64
	if req.FromSeq != nil {
		from = *req.FromSeq
	}
	if e := s.joined(); e != nil {
		return nil, e
	}
	var page fsm.History
	if e := rooms.Read(ctx, func(ctx context.Context) (err error) {
		page, err = s.be.History(ctx, req.Room, from, limit, s.opts.MaxPageBytes, stale)
		return err
	}); e != nil {
		return nil, e
	}
	out := historyReply{Events: make([]json.RawMessage, len(page.Events)), HistoryResult: api.HistoryResult{
		FirstSeq: page.FirstSeq, LastSeq: page.LastSeq, Epoch: wsfront.EpochString(page.Epoch),
		More: page.More(), Truncated: page.Truncated, Stale: stale}}
	for i := range page.Events {
		out.Events[i] = wsfront.AppendEvent(nil, &page.Events[i])
	}
	return out, nil
}

func (s *server) readMembers(ctx context.Context, name string, body []byte) (fsm.Members, bool, *protocol.Error) {
	var req api.RoomRead
	if e := decodeRoomOp(name, body, &req, &req.Room); e != nil {
		return fsm.Members{}, false, e
	}
	stale, e := staleOf(req.Consistency)
	if e != nil {
		return fsm.Members{}, false, e
	}
	if e := s.joined(); e != nil {
		return fsm.Members{}, false, e
	}
	var ms fsm.Members
	e = rooms.Read(ctx, func(ctx context.Context) (err error) {
		ms, err = s.be.Members(ctx, req.Room, stale)
		return err
	})
	return ms, stale, e
}

func (s *server) members(ctx context.Context, body []byte) (any, *protocol.Error) {
	ms, stale, e := s.readMembers(ctx, api.OpMembers, body)
	if e != nil {
		return nil, e
	}
	out := api.MembersResult{Members: make([]api.Member, len(ms.Members)), Seq: ms.Seq, Epoch: wsfront.EpochString(ms.Epoch), Stale: stale}
	for i, m := range ms.Members {
		out.Members[i] = api.Member{Member: m.Name, Meta: wsfront.AppendJSON(nil, m.Meta), JoinedSeq: m.JoinedSeq}
	}
	return out, nil
}

func (s *server) presenceStats(ctx context.Context, body []byte) (any, *protocol.Error) {
	ms, stale, e := s.readMembers(ctx, api.OpPresenceStats, body)
	if e != nil {
		return nil, e
	}
	out := api.PresenceStats{Members: len(ms.Members), Seq: ms.Seq, Epoch: wsfront.EpochString(ms.Epoch), Stale: stale}
	for _, m := range ms.Members {
		if m.Ephemeral {
			out.SocketMembers++
		}
	}
	return out, nil
}

func (s *server) rooms(ctx context.Context, body []byte) (any, *protocol.Error) {
	var req api.RoomsRequest
	if e := decode(api.OpRooms, body, &req); e != nil {
		return nil, e
	}
	if len(req.Prefix) > fsm.MaxRoomBytes || len(req.After) > fsm.MaxRoomBytes {
		return nil, protocol.Errorf(protocol.CodeBadRequest, "prefix and after are at most %d bytes", fsm.MaxRoomBytes)
	}
	stale, limit, e := pageOf(req.Consistency, req.Limit)
	if e != nil {
		return nil, e
	}
	if e := s.joined(); e != nil {
		return nil, e
	}
	var list []fsm.RoomInfo
	var more bool
	if e := rooms.Read(ctx, func(ctx context.Context) (err error) {
		list, more, err = s.be.Rooms(ctx, req.Prefix, req.After, limit, stale)
		return err
	}); e != nil {
		return nil, e
	}
	out := api.RoomsResult{Rooms: make([]api.RoomSummary, len(list)), Stale: stale}
	for i, ri := range list {
		out.Rooms[i] = api.RoomSummary{Room: ri.Room, Epoch: wsfront.EpochString(ri.Epoch), FirstSeq: ri.FirstSeq,
			LastSeq: ri.LastSeq, MemberCount: ri.MemberCount}
	}
	if more && len(list) > 0 {
		out.Next = list[len(list)-1].Room
	}
	return out, nil
}

func (s *server) info(_ context.Context, body []byte) (any, *protocol.Error) {
	var req struct{}
	if e := decode(api.OpInfo, body, &req); e != nil {
		return nil, e
	}
	id, nodes := s.be.Nodes()
	out := api.InfoResult{Node: s.be.NodeID(), ClusterID: id, Nodes: make([]api.Node, len(nodes))}
	for i, n := range nodes {
		out.Nodes[i] = api.Node{ID: n.ID, State: n.State, ClientURL: n.ClientURL, LeaseExpired: n.LeaseExpired}
		if n.ClientURL != "" {
			out.Nodes[i].WebsocketURL = websocketURL(n.ClientURL)
		}
	}
	return out, nil
}

func websocketURL(clientURL string) string {
	if rest, ok := strings.CutPrefix(clientURL, "https://"); ok {
		return "wss://" + rest + "/ws"
	}
	return "ws://" + strings.TrimPrefix(clientURL, "http://") + "/ws"
}
