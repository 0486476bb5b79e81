package admin

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/heraldhq/herald/fsm"
)

const roomTimeout = 10 * time.Second

// roomGroup validates a room name from the path and finds its group.
func (s *server) roomGroup(r *http.Request) (string, uint64, error) {
	room := r.PathValue("room")
	if err := fsm.CheckRoomName(room); err != nil {
		return "", 0, badRequest("%s", err)
	}
	g := s.host.GroupForKey(room)
	if g == 0 {
		return "", 0, s.notJoined()
	}
	return room, g, nil
}

// readRoom reads a room and its members, each linearizably.
func (s *server) readRoom(ctx context.Context, room string, g uint64) (Room, error) {
	rs := s.node.Rooms()
	ri, err := rs.Room(ctx, room)
	if err != nil {
		return Room{}, err
	}
	out := Room{Room: room, Group: g, Epoch: ri.Epoch, LastSeq: ri.LastSeq, FirstSeq: ri.FirstSeq, MemberCount: ri.MemberCount,
		Config: roomConfigOf(ri.Config), OwnSettings: settingNames(ri.OwnFields), Members: []Member{}}
	ms, err := rs.Members(ctx, room, false)
	if err != nil {
		return Room{}, err
	}
	for i, m := range ms.Members {
		if i == MaxMembersShown {
			out.MembersTruncated = true
			break
		}
		mb := Member{Name: m.Name, Ephemeral: m.Ephemeral, NodeID: m.NodeID, NodeEpoch: m.NodeEpoch, JoinedSeq: m.JoinedSeq}
		if utf8.Valid(m.Meta) {
			mb.Meta = string(m.Meta)
		} else {
			mb.MetaBase64 = m.Meta
		}
		out.Members = append(out.Members, mb)
	}
	return out, nil
}

func (s *server) showRoom(w http.ResponseWriter, r *http.Request) error {
	room, g, err := s.roomGroup(r)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), roomTimeout)
	defer cancel()
	out, err := s.readRoom(ctx, room, g)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// propose commits a room command and returns its result's error as the
// error.
func (s *server) propose(ctx context.Context, g uint64, cmd fsm.Command) (*fsm.Result, error) {
	out, err := s.host.Propose(ctx, g, cmd.Encode())
	if err != nil {
		return nil, err
	}
	res, ok := out.(*fsm.Result)
	if !ok {
		return nil, fmt.Errorf("group %d returned %T, not a room result", g, out)
	}
	return res, res.Err
}

func (s *server) deleteRoom(w http.ResponseWriter, r *http.Request) error {
	room, g, err := s.roomGroup(r)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), roomTimeout)
	defer cancel()
	s.log.Info("deleting a room", "room", room)
	res, err := s.propose(ctx, g, fsm.Command{Op: fsm.OpRoomDelete, Room: room})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, RoomDeleted{Room: room, Group: g, Epoch: res.Epoch, LastSeq: res.LastSeq})
	return nil
}

func (s *server) configRoom(w http.ResponseWriter, r *http.Request) error {
	room, g, err := s.roomGroup(r)
	if err != nil {
		return err
	}
	var req RoomConfigChange
	if err := decodeBody(w, r, &req); err != nil {
		return err
	}
	cmd := fsm.Command{Op: fsm.OpRoomConfig, Room: room}
	if cmd.Config, cmd.ConfigMask, err = req.fsm(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), roomTimeout)
	defer cancel()
	if cmd.ConfigMask&(fsm.FieldNoClientPublish|fsm.FieldTransientPresence|fsm.FieldMaxMembers) != 0 {
		// The room option needs every node to mark its sockets' publishes.
		if err := s.node.Rooms().EnableRoomOptions(ctx); err != nil {
			return err
		}
	}
	s.log.Info("configuring a room", "room", room, "change", req)
	if _, err := s.propose(ctx, g, cmd); err != nil {
		return err
	}
	out, err := s.readRoom(ctx, room, g)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// fsm gives the fields the change sets and the mask naming them.
func (c RoomConfigChange) fsm() (fsm.RoomConfig, fsm.ConfigField, error) {
	var cfg fsm.RoomConfig
	var mask fsm.ConfigField
	if c.HistoryMaxCount != nil {
		cfg.HistoryMaxCount = *c.HistoryMaxCount
		mask |= fsm.FieldHistoryMaxCount
	}
	if c.HistoryMaxAge != nil {
		if *c.HistoryMaxAge < 0 {
			return cfg, 0, badRequest("history_max_age must not be negative")
		}
		cfg.HistoryMaxAge = time.Duration(*c.HistoryMaxAge)
		mask |= fsm.FieldHistoryMaxAge
	}
	if c.KeyWindowCount != nil {
		cfg.KeyWindowCount = *c.KeyWindowCount
		mask |= fsm.FieldKeyWindowCount
	}
	if c.KeyWindowAge != nil {
		if *c.KeyWindowAge < 0 {
			return cfg, 0, badRequest("key_window_age must not be negative")
		}
		cfg.KeyWindowAge = time.Duration(*c.KeyWindowAge)
		mask |= fsm.FieldKeyWindowAge
	}
	if c.MembersOnly != nil {
		cfg.MembersOnly = *c.MembersOnly
		mask |= fsm.FieldMembersOnly
	}
	if c.ClientPublish != nil {
		cfg.NoClientPublish = !*c.ClientPublish
		mask |= fsm.FieldNoClientPublish
	}
	if c.PresenceHistory != nil {
		cfg.TransientPresence = !*c.PresenceHistory
		mask |= fsm.FieldTransientPresence
	}
	if c.MaxMembers != nil {
		cfg.MaxMembers = *c.MaxMembers
		mask |= fsm.FieldMaxMembers
	}
	if mask == 0 {
		return cfg, 0, badRequest("nothing to change: set one or more of history_max_count, history_max_age, key_window_count, key_window_age, members_only, client_publish, presence_history, max_members")
	}
	return cfg, mask, nil
}

// changeOf is the change setting the fields of cfg that mask names.
func changeOf(cfg fsm.RoomConfig, mask fsm.ConfigField) RoomConfigChange {
	var c RoomConfigChange
	set := func(f fsm.ConfigField) bool { return mask&f != 0 }
	if set(fsm.FieldHistoryMaxCount) {
		c.HistoryMaxCount = &cfg.HistoryMaxCount
	}
	if set(fsm.FieldHistoryMaxAge) {
		d := Duration(cfg.HistoryMaxAge)
		c.HistoryMaxAge = &d
	}
	if set(fsm.FieldKeyWindowCount) {
		c.KeyWindowCount = &cfg.KeyWindowCount
	}
	if set(fsm.FieldKeyWindowAge) {
		d := Duration(cfg.KeyWindowAge)
		c.KeyWindowAge = &d
	}
	if set(fsm.FieldMembersOnly) {
		c.MembersOnly = &cfg.MembersOnly
	}
	if set(fsm.FieldNoClientPublish) {
		v := !cfg.NoClientPublish
		c.ClientPublish = &v
	}
	if set(fsm.FieldTransientPresence) {
		v := !cfg.TransientPresence
		c.PresenceHistory = &v
	}
	if set(fsm.FieldMaxMembers) {
		c.MaxMembers = &cfg.MaxMembers
	}
	return c
}

// settingNames are the API's names of the config fields in mask.
func settingNames(mask fsm.ConfigField) []string {
	var out []string
	for _, f := range []struct {
		bit  fsm.ConfigField
		name string
	}{
		{fsm.FieldHistoryMaxCount, "history_max_count"}, {fsm.FieldHistoryMaxAge, "history_max_age"},
		{fsm.FieldKeyWindowCount, "key_window_count"}, {fsm.FieldKeyWindowAge, "key_window_age"},
		{fsm.FieldMembersOnly, "members_only"}, {fsm.FieldNoClientPublish, "client_publish"},
		{fsm.FieldTransientPresence, "presence_history"}, {fsm.FieldMaxMembers, "max_members"},
	} {
		if mask&f.bit != 0 {
			out = append(out, f.name)
		}
	}
	return out
}

// roomConfigOf is the API's view of a room's config.
func roomConfigOf(c fsm.RoomConfig) RoomConfig {
	return RoomConfig{HistoryMaxCount: c.HistoryMaxCount, HistoryMaxAge: Duration(c.HistoryMaxAge),
		KeyWindowCount: c.KeyWindowCount, KeyWindowAge: Duration(c.KeyWindowAge), MembersOnly: c.MembersOnly,
		ClientPublish: !c.NoClientPublish, PresenceHistory: !c.TransientPresence, MaxMembers: c.MaxMembers}
}

func (s *server) snapshot(w http.ResponseWriter, r *http.Request) error {
	var req SnapshotRequest
	timeout, err := readChange(w, r, &req, 2*time.Minute, maxSyncTimeout)
	if err != nil {
		return err
	}
	if !s.joined() {
		return s.notJoined()
	}
	groups := s.host.LocalGroups()
	if req.Group != nil {
		g := *req.Group
		st := s.host.Cluster()
		if err := checkGroup(st, g); err != nil {
			return err
		}
		if !slices.Contains(groups, g) {
			return notFound("no_local_replica", "node %s holds no replica of group %d; ask a node that does (replicas: %v)",
				s.host.NodeID(), g, holders(st, g))
		}
		groups = []uint64{g}
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	out := SnapshotReport{Node: s.host.NodeID(), Groups: []SnapshotResult{}}
	for _, g := range groups {
		start := time.Now()
		res := SnapshotResult{Group: g}
		if st, err := s.host.Status(g); err == nil {
			res.AppliedIndex = st.AppliedIndex
		}
		if err := s.host.Snapshot(ctx, g); err != nil {
			if req.Group != nil {
				return err
			}
			res.Error = err.Error()
			out.Failed++
		}
		res.Elapsed = Duration(time.Since(start).Round(100 * time.Microsecond))
		out.Groups = append(out.Groups, res)
	}
	s.log.Info("snapshots taken", "groups", len(out.Groups), "failed", out.Failed)
	writeJSON(w, http.StatusOK, out)
	return nil
}
