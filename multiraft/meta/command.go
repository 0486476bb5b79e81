package meta

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Command ops. The encoding is JSON with a version field: the meta group
// sees a few entries per second at most, and readable entries help
// operators debugging a cluster.
const (
	opInit         = "init"
	opRegister     = "register"
	opSetState     = "set_state"
	opSetReplicas  = "set_replicas"
	opLeaseExpired = "lease_expired"
	opExpired      = "expired"
	opRemoveNode   = "remove_node"
	opBeginOp      = "begin_op"
	opEndOp        = "end_op"
	opSetSettings  = "set_app_settings"
)

const commandVersion = 1

type command struct {
	V  int    `json:"v"`
	Op string `json:"op"`

	ClusterID   string              `json:"cluster_id,omitempty"`
	Groups      uint64              `json:"groups,omitempty"`
	Replication int                 `json:"replication,omitempty"`
	Nodes       []NodeInfo          `json:"nodes,omitempty"`
	Placement   map[uint64][]string `json:"placement,omitempty"`

	Node   *NodeInfo `json:"node,omitempty"`
	NodeID string    `json:"node_id,omitempty"`
	State  NodeState `json:"state,omitempty"`
	Epoch  uint64    `json:"epoch,omitempty"`
	Before uint64    `json:"before,omitempty"`

	Group    uint64   `json:"group,omitempty"`
	Replicas []string `json:"replicas,omitempty"`
	// Expect makes set_replicas a compare-and-set, so two executors (or a
	// resumed one) cannot undo each other's steps.
	Expect []string `json:"expect,omitempty"`

	// OpID is the group operation a set_replicas or end_op belongs to: while
	// a group has a record, only its own operation may change the group's
	// replicas. End makes set_replicas also clear the record, so the last
	// step of a move and its end are one entry.
	OpID uint64 `json:"op_id,omitempty"`
	End  bool   `json:"end,omitempty"`
	// Begin is the record a begin_op asks for (ID and Started come from
	// the entry); TakeOver names the abandoned record it replaces.
	Begin    *GroupOp `json:"begin,omitempty"`
	TakeOver uint64   `json:"take_over,omitempty"`

	// Settings are the application settings of init and set_app_settings;
	// set_app_settings replaces them only while they are still those of
	// ExpectIndex, so that two read-modify-writes cannot lose one's change.
	Settings    json.RawMessage `json:"settings,omitempty"`
	ExpectIndex uint64          `json:"expect_index,omitempty"`
}

func (c command) encode() []byte {
	c.V = commandVersion
	b, err := json.Marshal(c)
	if err != nil {
		// Only plain data types are marshalled; failure is a programming error.
		panic(fmt.Sprintf("multiraft: encode meta command: %v", err))
	}
	return b
}

// The commands, each as the log entry to propose to the meta group.

// Init makes a new cluster: its id, data group count, replication, first
// nodes, their replica placement and the application's first settings
// (optional). Only the first init of a cluster applies.
func Init(clusterID string, groups uint64, replication int, nodes []NodeInfo, placement map[uint64][]string, settings []byte) []byte {
	return command{Op: opInit, ClusterID: clusterID, Groups: groups, Replication: replication,
		Nodes: nodes, Placement: placement, Settings: settings}.encode()
}

// Register records a node's new process; the result's Epoch is its epoch.
func Register(n NodeInfo) []byte { return command{Op: opRegister, Node: &n}.encode() }

// SetState moves a node to state.
func SetState(node string, state NodeState) []byte {
	return command{Op: opSetState, NodeID: node, State: state}.encode()
}

// SetReplicas replaces group's replica list with next if it is still
// expect, under the group's operation opID (0: none may be in progress);
// end also clears that operation's record.
func SetReplicas(group, opID uint64, expect, next []string, end bool) []byte {
	return command{Op: opSetReplicas, Group: group, Expect: expect, Replicas: next, OpID: opID, End: end}.encode()
}

// BeginOp records op as group's replica change in progress, replacing the
// abandoned record takeOver when it is not zero.
func BeginOp(group uint64, op GroupOp, takeOver uint64) []byte {
	return command{Op: opBeginOp, Group: group, Begin: &op, TakeOver: takeOver}.encode()
}

// EndOp clears group's operation record opID.
func EndOp(group, opID uint64) []byte {
	return command{Op: opEndOp, Group: group, OpID: opID}.encode()
}

// ExpireLease records that the lease of node's epoch ran out.
func ExpireLease(node string, epoch uint64) []byte {
	return command{Op: opLeaseExpired, NodeID: node, Epoch: epoch}.encode()
}

// RecordExpired records that every data group dropped node's ephemeral
// state of the epochs below before.
func RecordExpired(node string, before uint64) []byte {
	return command{Op: opExpired, NodeID: node, Before: before}.encode()
}

// RemoveNode forgets a node that holds no replica, for good.
func RemoveNode(node string) []byte { return command{Op: opRemoveNode, NodeID: node}.encode() }

// SetAppSettings replaces the application's settings if they are still
// those set at expectIndex.
func SetAppSettings(settings []byte, expectIndex uint64) []byte {
	return command{Op: opSetSettings, Settings: settings, ExpectIndex: expectIndex}.encode()
}

// Result is what applying a command returns. It crosses between nodes as
// JSON.
type Result struct {
	Epoch uint64 `json:"epoch,omitempty"` // register: the node's new epoch
	Err   string `json:"err,omitempty"`   // why the command was refused; state unchanged
	// Op is, for begin_op, the record now standing: the new one, or the
	// one that made the command fail.
	Op *GroupOp `json:"op,omitempty"`
	// Index is, for set_app_settings, the entry's index: the settings'
	// new AppSettingsIndex.
	Index uint64 `json:"index,omitempty"`
}

// ErrConflict is the error of a command refused by the state it met (a
// compare-and-set that lost, an unknown node).
var ErrConflict = errors.New("multiraft: meta command refused")

// Refused returns why the command was refused, as an ErrConflict; nil if
// it was applied.
func (r *Result) Refused() error {
	if r == nil || r.Err == "" {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrConflict, r.Err)
}
