package multiraft

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/internal/wait"
	"github.com/heraldhq/herald/multiraft/meta"
	"github.com/heraldhq/herald/multiraft/transport"
)

func (h *Host) registerServices() {
	h.handlers = map[string]transport.Handler{
		svcPropose:      h.handlePropose,
		svcReadIndex:    h.handleReadIndex,
		svcMetaState:    h.handleMetaState,
		svcRegister:     h.handleRegister,
		svcLease:        h.handleLease,
		svcGroupInfo:    h.handleGroupInfo,
		svcGroupAdmin:   h.handleGroupAdmin,
		svcMetaJoin:     h.handleMetaJoin,
		svcBarrier:      h.handleBarrier,
		svcQuery:        h.handleQuery,
		svcOpRunning:    h.handleOpRunning,
		svcReplicaReset: h.handleReplicaReset,
	}
	for name, fn := range h.handlers {
		h.peers.Handle(name, fn)
	}
	h.peers.HandleStream(svcEvents, h.handleEvents)
}

func decodeClusterState(b []byte) (*meta.ClusterState, error) {
	st, err := meta.DecodeState(b)
	if err != nil {
		return nil, fmt.Errorf("multiraft: decode cluster state: %w", err)
	}
	return st, nil
}

// handleMetaState returns the meta state of this node's meta replica. A
// request byte of 1 asks for a linearizable read (leader only).
func (h *Host) handleMetaState(ctx context.Context, _ string, _ uint64, req []byte) ([]byte, error) {
	rep := h.replica(MetaGroup)
	if rep == nil {
		return errReply(h.noReplica(MetaGroup)), nil
	}
	if len(req) == 1 && req[0] == 1 {
		i, err := rep.readIndex(ctx)
		if err == nil {
			err = rep.waitApplied(ctx, i)
		}
		if err != nil {
			return errReply(err), nil
		}
	}
	st, _ := h.meta.State()
	return jsonReply(st), nil
}

// watchCluster keeps h.cluster current: from the local meta replica when
// there is one, else by polling a meta replica.
func (h *Host) watchCluster() {
	poll := max(h.cfg.LeaseTTL/4, 50*time.Millisecond)
	for {
		var st *meta.ClusterState
		var next <-chan struct{}
		if h.replica(MetaGroup) != nil {
			st, next = h.meta.State()
		} else {
			ctx, cancel := context.WithTimeout(h.ctx, poll)
			b, err := h.route(ctx, MetaGroup, svcMetaState, nil, false)
			cancel()
			if err == nil {
				st, err = decodeClusterState(b)
			}
			if err != nil {
				h.log.Debug("cluster state not available", "err", err)
			}
		}
		if st != nil && st.Index >= h.clusterIndex() {
			h.mu.Lock()
			removed := len(st.Removed) != len(h.cluster.Removed)
			h.cluster = st
			close(h.changed)
			h.changed = make(chan struct{})
			h.mu.Unlock()
			if removed {
				h.peers.Reauthorize()
			}
		}
		t := time.NewTimer(poll)
		select {
		case <-h.ctx.Done():
			t.Stop()
			return
		case <-next:
		case <-t.C:
		}
		t.Stop()
	}
}

func (h *Host) clusterIndex() uint64 {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.cluster.Index
}

func (h *Host) clusterChanged() <-chan struct{} {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.changed
}

// reconcileLoop makes the node's data replicas match the meta group: it
// starts (empty) replicas of groups it has been given and drops those it
// has been moved off.
func (h *Host) reconcileLoop() {
	for {
		changed := h.clusterChanged()
		h.reconcile()
		t := time.NewTimer(time.Second)
		select {
		case <-h.ctx.Done():
			t.Stop()
			return
		case <-changed:
		case <-t.C:
		}
		t.Stop()
	}
}

func (h *Host) reconcile() {
	st := h.Cluster()
	if !st.Initialized() {
		return
	}
	mine := st.GroupsOf(h.cfg.NodeID)
	for _, g := range mine {
		if h.replica(g) == nil && !h.damage.isBroken(g) {
			if err := h.ensureReplica(g, nil); err != nil && !errors.Is(err, ErrClosed) {
				h.log.Error("cannot start replica", "group", g, "err", err)
			}
		}
	}
	for _, g := range h.LocalGroups() {
		if g == MetaGroup || slices.Contains(mine, g) {
			continue
		}
		rep, ok := h.takeForDrop(g)
		if !ok {
			continue
		}
		if rep != nil {
			h.log.Info("dropping replica moved off this node", "group", g)
			if err := h.dropReplica(rep); err != nil {
				h.log.Error("dropping replica", "group", g, "err", err)
			}
		}
		h.endDrop(g)
	}
}

// Node leases (the rules are meta.Leases'). Every node renews its lease
// with the meta leader every LeaseTTL/4.

type leaseRequest struct {
	Node  string `json:"node"`
	Epoch uint64 `json:"epoch"`
}

type leaseReply struct {
	Expired bool `json:"expired"`
}

func (h *Host) handleRegister(ctx context.Context, _ string, _ uint64, req []byte) ([]byte, error) {
	var n meta.NodeInfo
	if err := json.Unmarshal(req, &n); err != nil || n.ID == "" || n.PeerAddr == "" {
		return errReply(fmt.Errorf("multiraft: malformed register request")), nil
	}
	if st, _ := h.meta.State(); st.Removed[n.ID] != 0 {
		return errReply(fmt.Errorf("%w: node %s %s %s; start the replacement under a new node id",
			ErrNodeRemoved, n.ID, removedReason, st.ClusterID)), nil
	}
	res, err := h.proposeLocal(ctx, MetaGroup, meta.Register(n))
	if err != nil {
		return errReply(err), nil
	}
	mr := res.(*meta.Result)
	if err := mr.Refused(); err != nil {
		return errReply(err), nil
	}
	if rep := h.replica(MetaGroup); rep != nil {
		h.leases.Renew(rep.raft.CurrentTerm(), n.ID, time.Now())
	}
	return jsonReply(mr), nil
}

func (h *Host) handleLease(_ context.Context, _ string, _ uint64, req []byte) ([]byte, error) {
	var lr leaseRequest
	if err := json.Unmarshal(req, &lr); err != nil {
		return errReply(fmt.Errorf("multiraft: malformed lease request")), nil
	}
	rep := h.replica(MetaGroup)
	if rep == nil {
		return errReply(h.noReplica(MetaGroup)), nil
	}
	if rep.raft.State() != raft.Leader {
		return errReply(rep.notLeader()), nil
	}
	st, _ := h.meta.State()
	switch st.Renewal(lr.Node, lr.Epoch) {
	case meta.RenewUnknown:
		return errReply(fmt.Errorf("%w: meta state on %s does not know epoch %d of %s yet", ErrUnavailable, h.cfg.NodeID, lr.Epoch, lr.Node)), nil
	case meta.RenewExpired:
		return jsonReply(leaseReply{Expired: true}), nil
	}
	h.leases.Renew(rep.raft.CurrentTerm(), lr.Node, time.Now())
	return jsonReply(leaseReply{}), nil
}

// leaseLoop registers the node (getting an epoch) and then keeps its lease.
// A lease the meta group declared expired makes the node register again
// under a new epoch.
func (h *Host) leaseLoop() {
	every := h.cfg.LeaseTTL / 4
	for {
		ctx, cancel := context.WithTimeout(h.ctx, max(every, time.Second))
		epoch := h.epoch.Load()
		var err error
		if epoch == 0 {
			err = h.register(ctx)
		} else {
			var b []byte
			b, err = h.route(ctx, MetaGroup, svcLease, mustJSON(leaseRequest{Node: h.cfg.NodeID, Epoch: epoch}), false)
			var lr leaseReply
			if err == nil {
				err = json.Unmarshal(b, &lr)
			}
			if err == nil && lr.Expired {
				h.log.Warn("node lease expired; registering under a new epoch", "epoch", epoch)
				err = h.register(ctx)
			}
		}
		cancel()
		if err != nil && h.ctx.Err() == nil {
			if epoch == 0 && strings.Contains(err.Error(), removedReason) {
				h.refuseRemoved(err)
			}
			h.log.Debug("lease renewal failed", "err", err)
		}
		if !wait.Sleep(h.ctx, every) {
			return
		}
	}
}

func (h *Host) register(ctx context.Context) error {
	n := meta.NodeInfo{ID: h.cfg.NodeID, PeerAddr: h.PeerAddr(), ClientAddr: h.cfg.ClientAddr}
	b, err := h.route(ctx, MetaGroup, svcRegister, mustJSON(n), true)
	if err != nil {
		return err
	}
	var res meta.Result
	if err := json.Unmarshal(b, &res); err != nil {
		return fmt.Errorf("multiraft: decode register reply: %w", err)
	}
	if res.Epoch == 0 {
		return errors.New("multiraft: meta group gave no epoch")
	}
	if h.epoch.Swap(res.Epoch) == 0 {
		close(h.epochReady)
	}
	h.log.Info("registered with the meta group", "epoch", res.Epoch)
	return nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("multiraft: encode %T: %v", v, err))
	}
	return b
}

// metaDutyLoop does the meta leader's periodic work on whichever node
// holds that leadership: expiring node leases and clearing the ephemeral
// state of expired epochs from every data group.
func (h *Host) metaDutyLoop() {
	every := max(h.cfg.LeaseTTL/4, 10*time.Millisecond)
	for wait.Sleep(h.ctx, every) {
		rep := h.replica(MetaGroup)
		if rep == nil || rep.raft.State() != raft.Leader {
			continue
		}
		term := rep.raft.CurrentTerm()
		st, _ := h.meta.State()
		if !st.Initialized() {
			continue
		}
		for _, id := range h.leases.Expired(st, term, time.Now(), h.cfg.LeaseTTL) {
			epoch := st.Nodes[id].Epoch
			h.log.Warn("node lease expired", "expired_node", id, "epoch", epoch)
			if _, err := h.proposeMeta(h.ctx, meta.ExpireLease(id, epoch)); err != nil {
				h.log.Debug("recording lease expiry", "expired_node", id, "err", err)
			}
		}
		st, _ = h.meta.State()
		h.growMeta(rep, st)
		for _, id := range st.NodeIDs() {
			n := st.Nodes[id]
			if target := n.ExpireTarget(); n.ExpiredBefore < target {
				if err := h.expireNode(st, id, target); err != nil && h.ctx.Err() == nil {
					h.log.Warn("expiring node state", "expired_node", id, "before_epoch", target, "err", err)
				}
			}
		}
	}
}

// expireNode removes a node's ephemeral state of epochs below before from
// every data group, then records that in the meta group.
func (h *Host) expireNode(st *meta.ClusterState, node string, before uint64) error {
	cmd := h.cfg.App.ExpireNodeCommand(node, before)
	for g := uint64(1); g <= st.Groups; g++ {
		for range 10_000 {
			res, err := h.Propose(h.ctx, g, cmd)
			if err != nil {
				return fmt.Errorf("group %d: %w", g, err)
			}
			if !h.cfg.App.MoreToDo(res) {
				break
			}
		}
	}
	_, err := h.proposeMeta(h.ctx, meta.RecordExpired(node, before))
	return err
}

// growMeta adds a node to the meta group's voters while it has fewer than
// it should: meta.Voters of the live active nodes. The node first
// joins as a non-voter and is promoted once it has caught up, so a node
// that dies on the way never counts towards the quorum.
func (h *Host) growMeta(rep *replica, st *meta.ClusterState) {
	f := rep.raft.GetConfiguration()
	if f.Error() != nil {
		return
	}
	voters := map[string]bool{}
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			voters[string(s.ID)] = true
		}
	}
	var live []string
	for _, id := range st.NodeIDs() {
		if st.Nodes[id].State == meta.NodeActive && st.NodeLive(id) {
			live = append(live, id)
		}
	}
	if len(voters) >= meta.Voters(len(live)) {
		return
	}
	for _, id := range live {
		if voters[id] {
			continue
		}
		if err := h.addMetaVoter(rep, id, st.Nodes[id].PeerAddr); err != nil {
			h.log.Warn("adding a node to the meta group", "new_member", id, "err", err)
		}
		return // one per round; the next round sees the new configuration
	}
}

func (h *Host) addMetaVoter(rep *replica, id, addr string) error {
	ctx, cancel := context.WithTimeout(h.ctx, 10*time.Second)
	defer cancel()
	b, err := h.send(ctx, raft.ServerAddress(addr), svcMetaJoin, MetaGroup, nil)
	if err == nil {
		_, err = decodeReply(b)
	}
	if err != nil {
		return fmt.Errorf("start its meta replica: %w", err)
	}
	if err := waitFuture(ctx, rep.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, 5*time.Second)); err != nil {
		return fmt.Errorf("add as non-voter: %w", err)
	}
	goal := rep.raft.CommitIndex()
	if err := h.waitFor(ctx, func(ctx context.Context) (bool, error) {
		st, err := h.NodeGroupStatus(ctx, addr, MetaGroup)
		return err == nil && st.AppliedIndex >= goal, nil
	}); err != nil {
		return fmt.Errorf("wait for it to apply index %d: %w", goal, err)
	}
	if err := waitFuture(ctx, rep.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, 5*time.Second)); err != nil {
		return fmt.Errorf("promote to voter: %w", err)
	}
	h.log.Info("node joined the meta group", "new_member", id)
	return nil
}

// handleMetaJoin starts an empty meta replica on this node, which the meta
// leader is about to add to the group.
func (h *Host) handleMetaJoin(context.Context, string, uint64, []byte) ([]byte, error) {
	if err := h.ensureReplica(MetaGroup, nil); err != nil {
		return errReply(err), nil
	}
	return okReply(nil), nil
}

// authorizePeer decides what an authenticated peer node may do here: a
// member of the cluster anything, a removed node nothing, and any other
// node only join (read the cluster state and register). Until this node
// knows its cluster (bootstrap, or its own join) every peer is a member.
func (h *Host) authorizePeer(id string) (transport.PeerAccess, error) {
	h.mu.RLock()
	st := h.cluster
	h.mu.RUnlock()
	if !st.Initialized() {
		return transport.AccessFull, nil
	}
	if _, ok := st.Nodes[id]; ok {
		return transport.AccessFull, nil
	}
	if st.Removed[id] != 0 {
		return 0, fmt.Errorf("%w: node %s %s %s", ErrNodeRemoved, id, removedReason, st.ClusterID)
	}
	return transport.AccessJoin, nil
}

// removedReason is in every refusal of a removed node's identity. The
// refusal reaches the node as the text of a handshake verdict or of a
// register reply, so the text is what it can recognise.
const removedReason = "was removed from cluster"

// refuseRemoved ends every wait for registration: the cluster will not
// take this node id back.
func (h *Host) refuseRemoved(err error) {
	h.removedOnce.Do(func() {
		h.removedErr = fmt.Errorf("%w: %s cannot join: %v", ErrNodeRemoved, h.cfg.NodeID, err)
		h.log.Error("the cluster refuses this node: it was removed; start the replacement under a new node id", "err", err)
		close(h.removed)
	})
}
