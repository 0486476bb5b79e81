package rooms

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/internal/wire"
)

// RoomPage is one group's answer to a rooms query: its rooms in name order.
type RoomPage struct {
	Rooms []fsm.RoomInfo
	// More says the group has further rooms that match after the last.
	More bool
}

// roomsPage lists up to limit rooms of f whose names start with prefix and
// sort after after. It sorts every room name of the group on each call:
// fine for thousands of rooms per group, a sorted index past that.
func roomsPage(f *fsm.FSM, prefix, after string, limit int) (RoomPage, error) {
	names, err := f.Rooms()
	if err != nil {
		return RoomPage{}, err
	}
	i := sort.SearchStrings(names, prefix)
	if after >= prefix {
		j := sort.SearchStrings(names, after)
		if j < len(names) && names[j] == after {
			j++
		}
		i = max(i, j)
	}
	var p RoomPage
	for ; i < len(names) && strings.HasPrefix(names[i], prefix); i++ {
		if len(p.Rooms) == limit {
			p.More = true
			break
		}
		ri, err := f.Room(names[i])
		if errors.Is(err, fsm.ErrRoomNotFound) {
			continue // deleted since Rooms
		}
		if err != nil {
			return RoomPage{}, err
		}
		p.Rooms = append(p.Rooms, ri)
	}
	return p, nil
}

func appendRoomInfo(b []byte, ri *fsm.RoomInfo) []byte {
	b = wire.AppendString(b, ri.Room)
	b = binary.AppendUvarint(b, ri.Epoch)
	b = binary.AppendUvarint(b, ri.LastSeq)
	b = binary.AppendUvarint(b, ri.FirstSeq)
	b = binary.AppendUvarint(b, uint64(max(ri.MemberCount, 0)))
	b = binary.AppendUvarint(b, ri.Config.HistoryMaxCount)
	b = binary.AppendVarint(b, int64(ri.Config.HistoryMaxAge))
	b = binary.AppendUvarint(b, ri.Config.KeyWindowCount)
	b = binary.AppendVarint(b, int64(ri.Config.KeyWindowAge))
	b = wire.AppendBool(b, ri.Config.MembersOnly)
	b = wire.AppendBool(b, ri.Config.NoClientPublish)
	b = wire.AppendBool(b, ri.Config.TransientPresence)
	b = binary.AppendUvarint(b, ri.Config.MaxMembers)
	return append(b, byte(ri.OwnFields))
}

// readRoomInfo reads what appendRoomInfo wrote; withOptions false reads the
// shorter form of builds before the namespace options (answerRoom).
func readRoomInfo(r *reader, withOptions bool) fsm.RoomInfo {
	ri := fsm.RoomInfo{Room: r.String(fsm.MaxRoomBytes), Epoch: r.Uvarint(), LastSeq: r.Uvarint(), FirstSeq: r.Uvarint(),
		MemberCount: int(min(r.Uvarint(), math.MaxInt))}
	ri.Config = fsm.RoomConfig{HistoryMaxCount: r.Uvarint(), HistoryMaxAge: time.Duration(r.Varint()),
		KeyWindowCount: r.Uvarint(), KeyWindowAge: time.Duration(r.Varint()), MembersOnly: r.Bool()}
	if withOptions {
		ri.Config.NoClientPublish, ri.Config.TransientPresence = r.Bool(), r.Bool()
		ri.Config.MaxMembers = r.Uvarint()
		ri.OwnFields = fsm.ConfigField(r.Byte())
	}
	return ri
}

// roomsQueriesAtOnce bounds the groups one room listing reads at a time,
// so that a listing on a cluster of a thousand groups does not open a
// thousand reads at once.
const roomsQueriesAtOnce = 8

// Rooms lists the rooms of every group whose names start with prefix and
// sort after after, merged in name order: each group is read (linearizably
// unless stale) for its first limit matches, so the first limit of their
// union are the cluster's.
func (s *Service) Rooms(ctx context.Context, prefix, after string, limit int, stale bool) ([]fsm.RoomInfo, bool, error) {
	st := s.host.Cluster()
	if !st.Initialized() {
		return nil, false, unavailable("this node does not know its cluster yet")
	}
	q := Query{Kind: QueryRooms, Room: prefix, After: after, Limit: limit}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pages := make([]RoomPage, st.Groups)
	errs := make([]error, st.Groups)
	sem := make(chan struct{}, roomsQueriesAtOnce)
	var wg sync.WaitGroup
	for g := uint64(1); g <= st.Groups; g++ {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			errs[g-1] = ctx.Err()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ans, err := s.queryGroup(ctx, g, q, stale)
			if err == nil && ans.Rooms == nil {
				err = errors.New("rooms: rooms query answered without rooms")
			}
			if err == nil {
				pages[g-1] = *ans.Rooms
			}
			if err != nil {
				errs[g-1] = fmt.Errorf("group %d: %w", g, err)
				cancel() // the listing fails as a whole; stop the others
			}
		}()
	}
	wg.Wait()
	if err := firstCause(errs); err != nil {
		return nil, false, err
	}
	var all []fsm.RoomInfo
	more := false
	for _, p := range pages {
		all = append(all, p.Rooms...)
		more = more || p.More
	}
	slices.SortFunc(all, func(a, b fsm.RoomInfo) int { return strings.Compare(a.Room, b.Room) })
	if len(all) > limit {
		all, more = all[:limit], true
	}
	return all, more, nil
}

// firstCause is the first error that is not a cancellation caused by
// another one's failure.
func firstCause(errs []error) error {
	var first error
	for _, err := range errs {
		if err == nil {
			continue
		}
		if !errors.Is(err, context.Canceled) {
			return err
		}
		if first == nil {
			first = err
		}
	}
	return first
}

// NodeInfo is one node of the cluster.
type NodeInfo struct {
	ID    string
	State string
	// ClientURL is the base URL of its client port ("" if unknown).
	ClientURL    string
	LeaseExpired bool
}

// Nodes lists the cluster's nodes as this node knows them, sorted by id.
func (s *Service) Nodes() (string, []NodeInfo) {
	st := s.host.Cluster()
	if st == nil {
		return "", nil
	}
	out := make([]NodeInfo, 0, len(st.Nodes))
	for _, n := range st.Nodes {
		ni := NodeInfo{ID: n.ID, State: string(n.State), LeaseExpired: n.LeaseExpired}
		if n.ClientAddr != "" {
			ni.ClientURL = s.cfg.Scheme + "://" + n.ClientAddr
		}
		out = append(out, ni)
	}
	slices.SortFunc(out, func(a, b NodeInfo) int { return strings.Compare(a.ID, b.ID) })
	return st.ClusterID, out
}
