package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/heraldhq/herald/admin"
	"github.com/heraldhq/herald/multiraft"
)

// table writes aligned columns; flush prints them.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	if len(header) > 0 {
		t.row(toAny(header)...)
	}
	return t
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

func (t *table) row(cells ...any) {
	parts := make([]string, len(cells))
	for i, c := range cells {
		parts[i] = fmt.Sprint(c)
	}
	fmt.Fprintln(t.tw, strings.Join(parts, "\t"))
}

func (t *table) flush() { _ = t.tw.Flush() }

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func groupName(g admin.Group) string {
	if g.Meta {
		return "0 (meta)"
	}
	return fmt.Sprint(g.ID)
}

// replicaCell sums up one replica: its node, with what is unusual about it.
func replicaCell(g admin.Group, r admin.Replica) string {
	var notes []string
	if r.Node == g.Leader {
		notes = append(notes, "leader")
	}
	switch {
	case !r.Member && r.Assigned:
		notes = append(notes, "not in raft yet")
	case r.Member && !r.Assigned:
		notes = append(notes, "leaving")
	case r.Member && !r.Voter:
		notes = append(notes, "non-voter")
	}
	if st := r.Status; st != nil {
		switch {
		case st.Error != "":
			notes = append(notes, "unreachable")
		case st.Damaged != "":
			notes = append(notes, "damaged")
		case st.Stuck != "":
			notes = append(notes, fmt.Sprintf("stuck: no contact %v", time.Duration(st.LastContact).Round(100*time.Millisecond)))
			if st.State == "Candidate" {
				notes = append(notes, "campaigning")
			}
		case st.Lag > 0:
			notes = append(notes, fmt.Sprintf("lag %d", st.Lag))
		}
	}
	if len(notes) == 0 {
		return r.Node
	}
	return r.Node + "(" + strings.Join(notes, ", ") + ")"
}

func replicaCells(g admin.Group) string {
	cells := make([]string, len(g.Replicas))
	for i, r := range g.Replicas {
		cells[i] = replicaCell(g, r)
	}
	return strings.Join(cells, " ")
}

func lease(n admin.Node) string {
	if n.LeaseExpired {
		return "expired"
	}
	return "ok"
}

func nodeName(n admin.Node) string {
	if n.Self {
		return n.ID + "*"
	}
	return n.ID
}

func cmdStatus(s *session) error {
	if len(s.args) > 0 {
		return usagef("status takes no arguments")
	}
	ctx, cancel := s.request()
	defer cancel()
	st, err := s.client.Status(ctx)
	if err != nil {
		return err
	}
	err = s.print(st, func() {
		if st.ClusterID == "" {
			fmt.Fprintf(s.out, "node %s is not part of a cluster\n", st.Node)
		} else {
			fmt.Fprintf(s.out, "cluster %s: %d groups of %d replicas, answered by %s in %v\n", st.ClusterID, st.Groups, st.Replication,
				st.Node, time.Duration(st.Elapsed).Round(time.Millisecond))
		}
		fmt.Fprintf(s.out, "health: %s\n", st.Health.Verdict)
		for _, r := range st.Health.Reasons {
			fmt.Fprintf(s.out, "  - %s\n", r)
		}
		if st.StateSource == "local" {
			fmt.Fprintln(s.out, "(the meta group did not answer: nodes and replicas are this node's last known state)")
		}
		if st.Partial {
			fmt.Fprintf(s.out, "(partial: not everything answered within %v)\n", time.Duration(st.Timeout))
		}
		if len(st.Nodes) > 0 {
			fmt.Fprintln(s.out)
			t := newTable(s.out, "NODE", "STATE", "EPOCH", "LEASE", "REPLICAS", "LEADS", "PEER", "CLIENT")
			for _, n := range st.Nodes {
				t.row(nodeName(n.Node), n.State, n.Epoch, lease(n.Node), n.Replicas, n.Leads, n.PeerAddr, dash(n.ClientAddr))
			}
			t.flush()
		}
		if len(st.GroupList) > 0 {
			fmt.Fprintln(s.out)
			t := newTable(s.out, "GROUP", "LEADER", "TERM", "COMMIT", "APPLIED", "REPLICAS")
			for _, g := range st.GroupList {
				t.row(groupName(g), dash(g.Leader), g.Term, g.CommitIndex, g.AppliedIndex, replicaCells(g))
			}
			t.flush()
		}
		if st.Groups > 0 {
			fmt.Fprintf(s.out, "\nrooms: about %d (counted without quorum on %d of %d groups' local replicas)\n",
				st.Rooms.Count, st.Rooms.GroupsCounted, st.Rooms.GroupsTotal)
		}
		for _, j := range st.Jobs {
			fmt.Fprintf(s.out, "job %s (%s) is running: %d of %d done\n", j.ID, j.Kind, j.Done, j.Total)
		}
	})
	if err == nil && st.Health.Verdict == admin.HealthUnavailable {
		// Scripts and probes can tell from the exit code.
		return errors.New("the cluster is unavailable")
	}
	return err
}

func printNodes(s *session, nodes []admin.Node) {
	t := newTable(s.out, "NODE", "STATE", "EPOCH", "LEASE", "REPLICAS", "PEER", "CLIENT")
	for _, n := range nodes {
		t.row(nodeName(n), n.State, n.Epoch, lease(n), n.Replicas, n.PeerAddr, dash(n.ClientAddr))
	}
	t.flush()
}

func cmdNodesList(s *session) error {
	if len(s.args) > 0 {
		return usagef("nodes list takes no arguments")
	}
	ctx, cancel := s.request()
	defer cancel()
	nodes, err := s.client.Nodes(ctx)
	if err != nil {
		return err
	}
	return s.print(map[string]any{"nodes": nodes}, func() { printNodes(s, nodes) })
}

func cmdNodesAdd(s *session) error {
	if len(s.args) == 0 {
		return usagef("nodes add needs the peer address of at least one node of the cluster")
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.c.Duration("wait")+5*time.Second)
	defer cancel()
	n, err := s.client.AddNode(ctx, s.args)
	if err != nil {
		return err
	}
	return s.print(n, func() {
		fmt.Fprintf(s.out, "node %s joined the cluster (epoch %d, peer %s); it holds no replicas yet: run herald admin rebalance\n",
			n.ID, n.Epoch, n.PeerAddr)
	})
}

func cmdDecommission(s *session) error {
	id, err := s.arg("NODE_ID")
	if err != nil {
		return err
	}
	return s.runJob("decommission "+id, func(ctx context.Context) (*admin.Job, error) { return s.client.Decommission(ctx, id, s.jobOptions()) })
}

func cmdRemove(s *session) error {
	id, err := s.arg("NODE_ID")
	if err != nil {
		return err
	}
	return s.runJob("remove "+id, func(ctx context.Context) (*admin.Job, error) { return s.client.RemoveNode(ctx, id, s.jobOptions()) })
}

func (s *session) jobOptions() admin.JobOptions {
	return admin.JobOptions{Timeout: s.c.Duration("job-timeout")}
}

// runJob starts a job and, unless --detach, follows it, printing a line per
// step; Ctrl-C cancels it on the node.
func (s *session) runJob(what string, start func(context.Context) (*admin.Job, error)) error {
	ctx, cancel := s.request()
	j, err := start(ctx)
	cancel()
	if err != nil {
		return err
	}
	if s.c.Bool("detach") {
		return s.print(j, func() {
			fmt.Fprintf(s.out, "job %s started (%s); follow it with: herald admin jobs show %s\n", j.ID, what, j.ID)
		})
	}
	if !s.json {
		fmt.Fprintf(s.out, "job %s: %s\n", j.ID, what)
	}
	shown, lastMsg := 0, ""
	resumedShown := false
	update := func(j *admin.Job) {
		if s.json {
			return
		}
		if j.Resumed != nil && !resumedShown && (len(j.Moves) > 0 || j.Ended()) {
			resumedShown = true
			fmt.Fprintf(s.out, "finished the move an interrupted rebalance left: %v\n", j.Resumed)
		}
		if len(j.Moves) > 0 {
			for ; shown < j.Done && shown < len(j.Moves); shown++ {
				fmt.Fprintf(s.out, "[%d/%d] %v\n", shown+1, len(j.Moves), j.Moves[shown])
			}
			return
		}
		if j.Message != "" && j.Message != lastMsg && j.State == admin.JobRunning {
			lastMsg = j.Message
			fmt.Fprintf(s.out, "%s\n", j.Message)
		}
	}
	end, err := s.client.WaitJob(s.ctx, j.ID, 300*time.Millisecond, update)
	if err != nil && s.ctx.Err() != nil {
		// Ctrl-C: stop the job on the node too, so that it does not go on
		// unwatched; running the command again resumes.
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer ccancel()
		stopped, cerr := s.client.CancelJob(cctx, j.ID)
		if cerr != nil {
			return &interrupted{fmt.Sprintf("interrupted; the job %s may still be running on the node (cancel it with herald admin jobs cancel %s): %v", j.ID, j.ID, cerr)}
		}
		return &interrupted{fmt.Sprintf("interrupted: job %s %s after %d of %d steps; run the same command again to resume", stopped.ID, stopped.State, stopped.Done, stopped.Total)}
	}
	if err != nil {
		return err
	}
	return s.endJob(end)
}

func (s *session) endJob(j *admin.Job) error {
	err := s.print(j, func() {
		switch j.State {
		case admin.JobSucceeded:
			msg := j.Message
			if msg == "" {
				msg = "done"
			}
			fmt.Fprintf(s.out, "job %s succeeded: %s\n", j.ID, msg)
		default:
			fmt.Fprintf(s.out, "job %s %s after %d of %d steps\n", j.ID, j.State, j.Done, j.Total)
		}
	})
	if err != nil {
		return err
	}
	if j.State != admin.JobSucceeded {
		if j.Error != nil {
			return j.Error
		}
		return fmt.Errorf("job %s %s", j.ID, j.State)
	}
	return nil
}

func cmdGroupsList(s *session) error {
	if len(s.args) > 0 {
		return usagef("groups list takes no arguments")
	}
	return show(s, func(ctx context.Context) (*admin.GroupList, error) { return s.client.Groups(ctx) },
		func(gl *admin.GroupList) {
			t := newTable(s.out, "GROUP", "LEADER", "TERM", "COMMIT", "REPLICAS")
			for _, g := range gl.Groups {
				t.row(groupName(g), dash(g.Leader), g.Term, g.CommitIndex, replicaCells(g))
			}
			t.flush()
			if gl.Partial {
				fmt.Fprintln(s.out, "(partial: some leaders did not answer in time)")
			}
		})
}

func printGroup(s *session, g *admin.Group) {
	fmt.Fprintf(s.out, "group %s: leader %s, term %d, last index %d, commit index %d, applied %d\n",
		groupName(*g), dash(g.Leader), g.Term, g.LastIndex, g.CommitIndex, g.AppliedIndex)
	if g.Error != "" {
		fmt.Fprintf(s.out, "  %s\n", g.Error)
	}
	t := newTable(s.out, "NODE", "ROLE", "VOTER", "STATE", "APPLIED", "LAST", "LAG", "CONTACT", "NOTE")
	for _, r := range g.Replicas {
		role := "follower"
		if r.Node == g.Leader {
			role = "leader"
		}
		note := ""
		switch {
		case !r.Member && r.Assigned:
			note = "assigned, not in the raft group yet"
		case r.Member && !r.Assigned:
			note = "in the raft group, no longer assigned"
		}
		state, applied, last, lag, contact := "-", "-", "-", "-", "-"
		if st := r.Status; st != nil {
			if st.Error != "" {
				note = strings.TrimSpace(note + " unreachable: " + st.Error)
			} else {
				state, applied, last, lag = st.State, fmt.Sprint(st.AppliedIndex), fmt.Sprint(st.LastIndex), fmt.Sprint(st.Lag)
				if r.Node != g.Leader {
					contact = time.Duration(st.LastContact).Round(time.Millisecond).String()
				}
				if st.Stuck != "" {
					note = strings.TrimSpace(note + " stuck: " + st.Stuck)
				}
				if st.Damaged != "" {
					note = strings.TrimSpace(note + " damaged: " + st.Damaged)
				}
			}
		}
		for _, u := range g.Unreachable {
			if u.Node == r.Node {
				note = strings.TrimSpace(fmt.Sprintf("%s leader has had no answer for %v", note, time.Duration(u.Since).Round(100*time.Millisecond)))
			}
		}
		t.row(r.Node, role, r.Voter, state, applied, last, lag, contact, dash(note))
	}
	t.flush()
}

func cmdGroupsShow(s *session) error {
	g, err := s.groupArg()
	if err != nil {
		return err
	}
	return show(s, func(ctx context.Context) (*admin.Group, error) { return s.client.Group(ctx, g) },
		func(grp *admin.Group) { printGroup(s, grp) })
}

func cmdGroupsMove(s *session) error {
	g, err := s.groupArg()
	if err != nil {
		return err
	}
	from, to := s.c.String("from"), s.c.String("to")
	if from == "" || to == "" {
		return usagef("groups move needs --from NODE and --to NODE")
	}
	return show(s, func(ctx context.Context) (*admin.Group, error) { return s.client.MoveReplica(ctx, g, from, to) },
		func(grp *admin.Group) {
			fmt.Fprintf(s.out, "moved group %d's replica from %s to %s\n", g, from, to)
			printGroup(s, grp)
		})
}

func cmdGroupsRepair(s *session) error {
	g, err := s.groupArg()
	if err != nil {
		return err
	}
	node := s.c.String("node")
	if node == "" {
		return usagef("groups repair needs --node NODE")
	}
	return show(s, func(ctx context.Context) (*admin.Group, error) { return s.client.RepairReplica(ctx, g, node) },
		func(grp *admin.Group) {
			fmt.Fprintf(s.out, "rebuilt group %d's replica on %s from its peers\n", g, node)
			printGroup(s, grp)
		})
}

func cmdGroupsTransfer(s *session) error {
	g, err := s.groupArg()
	if err != nil {
		return err
	}
	to := s.c.String("to")
	if to == "" {
		return usagef("groups transfer-leader needs --to NODE")
	}
	return show(s, func(ctx context.Context) (*admin.Group, error) { return s.client.TransferLeader(ctx, g, to) },
		func(grp *admin.Group) {
			fmt.Fprintf(s.out, "group %d is led by %s (term %d)\n", g, grp.Leader, grp.Term)
		})
}

func cmdRebalance(s *session) error {
	if len(s.args) > 0 {
		return usagef("rebalance takes no arguments")
	}
	if !s.c.Bool("dry-run") {
		return s.runJob("rebalance", func(ctx context.Context) (*admin.Job, error) { return s.client.Rebalance(ctx, s.jobOptions()) })
	}
	return show(s, func(ctx context.Context) (*admin.Plan, error) { return s.client.PlanRebalance(ctx) },
		func(p *admin.Plan) {
			if len(p.Moves) == 0 {
				fmt.Fprintln(s.out, "balanced: nothing to move")
			} else {
				t := newTable(s.out, "#", "KIND", "GROUP", "FROM", "TO")
				for i, m := range p.Moves {
					t.row(i+1, m.Kind, m.Group, m.From, m.To)
				}
				t.flush()
			}
			fmt.Fprintln(s.out)
			t := newTable(s.out, "NODE", "REPLICAS", "LEADS")
			ids := make([]string, 0, len(p.Replicas))
			for id := range p.Replicas {
				ids = append(ids, id)
			}
			sort.Strings(ids)
			for _, id := range ids {
				r, l := p.Replicas[id], p.Leaders[id]
				t.row(id, fmt.Sprintf("%d -> %d", r.Before, r.After), fmt.Sprintf("%d -> %d", l.Before, l.After))
			}
			t.flush()
			if p.LeadersKnown < int(p.Groups) {
				fmt.Fprintf(s.out, "(%d of %d groups' leaders answered; the others are left out of leader balancing)\n", p.LeadersKnown, p.Groups)
			}
			if len(p.Moves) > 0 {
				fmt.Fprintln(s.out, "(dry run: nothing changed; run without --dry-run to apply)")
			}
		})
}

func printRoom(s *session, r *admin.Room) {
	t := newTable(s.out)
	t.row("room:", r.Room)
	t.row("group:", r.Group)
	t.row("epoch:", r.Epoch)
	t.row("last seq:", r.LastSeq)
	if r.FirstSeq > r.LastSeq {
		t.row("first retained seq:", fmt.Sprintf("%d (history empty)", r.FirstSeq))
	} else {
		t.row("first retained seq:", r.FirstSeq)
	}
	t.row("members:", r.MemberCount)
	t.row("history max count:", limit(r.Config.HistoryMaxCount))
	t.row("history max age:", limitAge(r.Config.HistoryMaxAge))
	t.row("key window count:", limit(r.Config.KeyWindowCount))
	t.row("key window age:", limitAge(r.Config.KeyWindowAge))
	t.row("members only:", r.Config.MembersOnly)
	t.row("client publish:", r.Config.ClientPublish)
	t.row("presence history:", r.Config.PresenceHistory)
	t.row("max members:", limit(r.Config.MaxMembers))
	if len(r.OwnSettings) > 0 {
		t.row("own settings:", strings.Join(r.OwnSettings, ", ")+" (over the namespace's)")
	}
	t.flush()
	if len(r.Members) == 0 {
		return
	}
	fmt.Fprintln(s.out)
	mt := newTable(s.out, "MEMBER", "JOINED SEQ", "EPHEMERAL", "NODE", "META")
	for _, m := range r.Members {
		node := "-"
		if m.Ephemeral {
			node = fmt.Sprintf("%s@%d", m.NodeID, m.NodeEpoch)
		}
		meta := m.Meta
		if len(m.MetaBase64) > 0 {
			meta = fmt.Sprintf("(%d bytes of binary)", len(m.MetaBase64))
		}
		if len(meta) > 60 {
			meta = meta[:57] + "..."
		}
		mt.row(m.Name, m.JoinedSeq, m.Ephemeral, node, dash(meta))
	}
	mt.flush()
	if r.MembersTruncated {
		fmt.Fprintf(s.out, "(first %d of %d members)\n", len(r.Members), r.MemberCount)
	}
}

// shown formats a field a rule sets, and "-" for one it leaves out.
func shown[T any](v *T, format func(T) string) string {
	if v == nil {
		return "-"
	}
	return format(*v)
}

func limit(n uint64) string {
	if n == 0 {
		return "no limit"
	}
	return fmt.Sprint(n)
}

func limitAge(d admin.Duration) string {
	if d == 0 {
		return "no limit"
	}
	return time.Duration(d).String()
}

func cmdRoomsShow(s *session) error {
	room, err := s.arg("ROOM")
	if err != nil {
		return err
	}
	return show(s, func(ctx context.Context) (*admin.Room, error) { return s.client.Room(ctx, room) },
		func(r *admin.Room) { printRoom(s, r) })
}

func cmdRoomsDelete(s *session) error {
	room, err := s.arg("ROOM")
	if err != nil {
		return err
	}
	return show(s, func(ctx context.Context) (*admin.RoomDeleted, error) { return s.client.DeleteRoom(ctx, room) },
		func(d *admin.RoomDeleted) {
			fmt.Fprintf(s.out, "room %q deleted: epoch %d ended at seq %d\n", d.Room, d.Epoch, d.LastSeq)
		})
}

func cmdRoomsConfig(s *session) error {
	room, err := s.arg("ROOM")
	if err != nil {
		return err
	}
	ch, err := configChange(s, "rooms config")
	if err != nil {
		return err
	}
	return show(s, func(ctx context.Context) (*admin.Room, error) { return s.client.ConfigureRoom(ctx, room, ch) },
		func(r *admin.Room) { printRoom(s, r) })
}

// configChange reads the roomConfigFlags that were given.
func configChange(s *session, what string) (admin.RoomConfigChange, error) {
	var ch admin.RoomConfigChange
	c := s.c
	u64 := func(name string) *uint64 {
		if !c.IsSet(name) {
			return nil
		}
		v := c.Uint64(name)
		return &v
	}
	dur := func(name string) *admin.Duration {
		if !c.IsSet(name) {
			return nil
		}
		v := admin.Duration(c.Duration(name))
		return &v
	}
	flag := func(name string) *bool {
		if !c.IsSet(name) {
			return nil
		}
		v := c.Bool(name)
		return &v
	}
	ch.HistoryMaxCount, ch.HistoryMaxAge = u64("history-max-count"), dur("history-max-age")
	ch.KeyWindowCount, ch.KeyWindowAge = u64("key-window-count"), dur("key-window-age")
	ch.MembersOnly, ch.ClientPublish, ch.PresenceHistory = flag("members-only"), flag("client-publish"), flag("presence-history")
	ch.MaxMembers = u64("max-members")
	if ch == (admin.RoomConfigChange{}) {
		return ch, usagef("%s needs at least one of --history-max-count, --history-max-age, --key-window-count, --key-window-age, --members-only, --client-publish, --presence-history, --max-members", what)
	}
	return ch, nil
}

func cmdNamespacesList(s *session) error {
	if len(s.args) > 0 {
		return usagef("namespaces list takes no arguments")
	}
	return show(s, func(ctx context.Context) (*admin.Namespaces, error) { return s.client.Namespaces(ctx) },
		func(ns *admin.Namespaces) { printNamespaces(s, ns) })
}

func cmdNamespacesSet(s *session) error {
	prefix, err := s.arg("PREFIX")
	if err != nil {
		return err
	}
	ch, err := configChange(s, "namespaces set")
	if err != nil {
		return err
	}
	rule := admin.Namespace{Prefix: prefix, RoomConfigChange: ch}
	return show(s, func(ctx context.Context) (*admin.Namespaces, error) { return s.client.SetNamespace(ctx, rule) },
		func(ns *admin.Namespaces) { printNamespaces(s, ns) })
}

func cmdNamespacesDelete(s *session) error {
	prefix, err := s.arg("PREFIX")
	if err != nil {
		return err
	}
	return show(s, func(ctx context.Context) (*admin.Namespaces, error) { return s.client.DeleteNamespace(ctx, prefix) },
		func(ns *admin.Namespaces) { printNamespaces(s, ns) })
}

func printNamespaces(s *session, ns *admin.Namespaces) {
	if len(ns.Namespaces) == 0 {
		fmt.Fprintf(s.out, "no namespaces (revision %d): rooms have the built-in defaults and their own settings\n", ns.Revision)
		return
	}
	t := newTable(s.out, "PREFIX", "HISTORY COUNT", "HISTORY AGE", "KEY COUNT", "KEY AGE", "MEMBERS ONLY", "CLIENT PUBLISH", "PRESENCE HISTORY", "MAX MEMBERS")
	for _, n := range ns.Namespaces {
		c := n.RoomConfigChange
		t.row(fmt.Sprintf("%q", n.Prefix), shown(c.HistoryMaxCount, limit), shown(c.HistoryMaxAge, limitAge),
			shown(c.KeyWindowCount, limit), shown(c.KeyWindowAge, limitAge), shown(c.MembersOnly, strconv.FormatBool),
			shown(c.ClientPublish, strconv.FormatBool), shown(c.PresenceHistory, strconv.FormatBool), shown(c.MaxMembers, limit))
	}
	t.flush()
	fmt.Fprintf(s.out, "revision %d; fields shown as - have their defaults\n", ns.Revision)
}

func cmdSnapshot(s *session) error {
	if len(s.args) > 0 {
		return usagef("snapshot takes no arguments (use --group N for one group)")
	}
	var req admin.SnapshotRequest
	if s.c.IsSet("group") {
		g := s.c.Uint64("group")
		req.Group = &g
	}
	ctx, cancel := s.request()
	defer cancel()
	rep, err := s.client.Snapshot(ctx, req)
	if err != nil {
		return err
	}
	err = s.print(rep, func() {
		t := newTable(s.out, "GROUP", "APPLIED", "TOOK", "RESULT")
		for _, g := range rep.Groups {
			res := "ok"
			if g.Error != "" {
				res = g.Error
			}
			name := fmt.Sprint(g.Group)
			if g.Group == multiraft.MetaGroup {
				name = "0 (meta)"
			}
			t.row(name, g.AppliedIndex, time.Duration(g.Elapsed).Round(time.Millisecond), res)
		}
		t.flush()
		fmt.Fprintf(s.out, "node %s: %d snapshots, %d failed\n", rep.Node, len(rep.Groups)-rep.Failed, rep.Failed)
	})
	if err == nil && rep.Failed > 0 {
		return fmt.Errorf("%d of %d snapshots failed", rep.Failed, len(rep.Groups))
	}
	return err
}

func printJobs(s *session, jobs []admin.Job) {
	t := newTable(s.out, "JOB", "KIND", "NODE", "STATE", "DONE", "STARTED", "MESSAGE")
	for _, j := range jobs {
		msg := j.Message
		if j.Error != nil {
			msg = j.Error.Message
		}
		t.row(j.ID, j.Kind, dash(j.Node), j.State, fmt.Sprintf("%d/%d", j.Done, j.Total), j.Started.Local().Format(time.DateTime), dash(msg))
	}
	t.flush()
}

func cmdJobsList(s *session) error {
	ctx, cancel := s.request()
	defer cancel()
	jobs, err := s.client.Jobs(ctx)
	if err != nil {
		return err
	}
	return s.print(map[string]any{"jobs": jobs}, func() { printJobs(s, jobs) })
}

func cmdJobsShow(s *session) error {
	id, err := s.arg("JOB_ID")
	if err != nil {
		return err
	}
	return show(s, func(ctx context.Context) (*admin.Job, error) { return s.client.Job(ctx, id) },
		func(j *admin.Job) {
			printJobs(s, []admin.Job{*j})
			for i, m := range j.Moves {
				mark := " "
				if i < j.Done {
					mark = "x"
				}
				fmt.Fprintf(s.out, "  [%s] %v\n", mark, m)
			}
		})
}

func cmdJobsCancel(s *session) error {
	id, err := s.arg("JOB_ID")
	if err != nil {
		return err
	}
	return show(s, func(ctx context.Context) (*admin.Job, error) { return s.client.CancelJob(ctx, id) },
		func(j *admin.Job) { printJobs(s, []admin.Job{*j}) })
}

func cmdBackup(s *session) error {
	dir, out := s.c.String("data-dir"), s.c.String("out")
	if dir == "" || out == "" || len(s.args) > 0 {
		return usagef("backup needs --data-dir DIR and --out FILE, and nothing else")
	}
	m, err := admin.BackupFile(dir, out)
	if err != nil {
		return err
	}
	return s.print(m, func() {
		fmt.Fprintf(s.out, "backed up %s to %s: %d files, %d directories, %s\n", dir, out, len(m.Files), len(m.Dirs), bytesText(m.Bytes))
	})
}

func cmdRestore(s *session) error {
	in, dir := s.c.String("in"), s.c.String("data-dir")
	if in == "" || dir == "" || len(s.args) > 0 {
		return usagef("restore needs --in FILE and --data-dir DIR, and nothing else")
	}
	m, err := admin.RestoreFile(in, dir)
	if err != nil {
		return err
	}
	return s.print(m, func() {
		fmt.Fprintf(s.out, "restored %s into %s: %d files, %s, backed up %s from %s on %s\n", in, dir, len(m.Files), bytesText(m.Bytes),
			m.Created.Local().Format(time.DateTime), m.SourceDir, dash(m.Host))
	})
}

func bytesText(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}
