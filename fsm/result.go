package fsm

import (
	"errors"
	"fmt"
	"time"
)

// Errors carried in Result.Err and returned by reads. Test with errors.Is;
// the wrapped message adds the room, member or seq involved.
var (
	// ErrBadCommand: the log entry is not a command this build understands.
	// The entry is skipped on every replica alike; nothing changes.
	ErrBadCommand = errors.New("bad command")
	// ErrInvalid: a well-formed command with an unusable argument (an empty
	// room name, a bad config). Nothing changes.
	ErrInvalid = errors.New("invalid argument")
	// ErrConflict: publish with ExpectSeq found the room at another seq.
	// Result.LastSeq holds the room's actual last seq.
	ErrConflict = errors.New("conflict")
	// ErrNotMember: leave of a member that is not in the room, or publish by
	// a non-member to a MembersOnly room.
	ErrNotMember = errors.New("not a member")
	// ErrForbidden: a client's publish to a room that takes publishes from
	// the backend only (NoClientPublish).
	ErrForbidden = errors.New("forbidden")
	// ErrRoomFull: a join of a new member to a room at its MaxMembers.
	ErrRoomFull = errors.New("room is full")
	// ErrRoomNotFound: a read or delete names a room that does not exist.
	ErrRoomNotFound = errors.New("room not found")
	// ErrStorage: the local store failed to write. The replica's state is
	// behind its log from here on and the host must stop the group and
	// recover it from a snapshot; FSM.Err reports the cause.
	ErrStorage = errors.New("storage failure")
	// ErrCorrupt: a stored record failed its checksum or did not decode.
	// It matches ErrStorage too. The replica is damaged from then on: it
	// refuses reads and applies (FSM.Damaged says why) until it is rebuilt
	// from its peers (docs/operations.md, "Corruption and repair"). Another
	// replica holds the right data, so a reader should retry elsewhere.
	ErrCorrupt = fmt.Errorf("%w: corrupt data", ErrStorage)
	// ErrNeedsRestore: the replica's state is incomplete (a snapshot restore
	// was interrupted or failed) and it refuses to apply until a restore
	// succeeds.
	ErrNeedsRestore = errors.New("state machine needs a snapshot restore")
	// ErrLagged closes a subscription whose buffer filled up; the subscriber
	// re-reads history from its last seq and subscribes again.
	ErrLagged = errors.New("subscriber fell behind")
	// ErrClosed: the FSM or subscription was closed.
	ErrClosed = errors.New("closed")
)

// EventType says what an event records.
type EventType uint8

// Event types. The numbers are stored: never reuse one.
const (
	EventJoin    EventType = 1
	EventLeave   EventType = 2
	EventMessage EventType = 3
	// EventRoomDeleted is delivered to subscribers only, never stored in
	// history: the room's epoch ended at Seq. It carries no seq of its own.
	EventRoomDeleted EventType = 4
	// EventPresenceJoin and EventPresenceLeave are the join and leave of a
	// TransientPresence room: delivered to subscribers only, never stored.
	// They take no seq; Seq is the room's last seq when they happened, so
	// a subscriber knows which event they follow.
	EventPresenceJoin  EventType = 5
	EventPresenceLeave EventType = 6
)

func (t EventType) String() string {
	switch t {
	case EventJoin:
		return "join"
	case EventLeave:
		return "leave"
	case EventMessage:
		return "message"
	case EventRoomDeleted:
		return "deleted"
	case EventPresenceJoin:
		return "presence_join"
	case EventPresenceLeave:
		return "presence_leave"
	}
	return fmt.Sprintf("event(%d)", uint8(t))
}

// Event is one entry of a room's sequence. Data is the message payload for
// messages and the member's meta for joins. Events handed out by the FSM are
// shared between readers: treat Data as read-only.
type Event struct {
	Room   string
	Epoch  uint64
	Seq    uint64
	Type   EventType
	Member string
	Data   []byte
	// Time is the log time of the entry that created the event (the leader's
	// clock when it appended the entry, made monotonic per group).
	Time time.Time
}

// Result is what applying one log entry did; raft hands it back through the
// ApplyFuture's Response on the node that proposed the entry.
type Result struct {
	Op    Op
	Room  string
	Epoch uint64
	// Seq is the seq assigned to the command's event, or for a duplicate
	// publish the seq of the original.
	Seq       uint64
	Duplicate bool
	// LastSeq is the room's last seq after the command (on ErrConflict: the
	// seq the room is actually at).
	LastSeq uint64
	// JoinToken is set by a join that took no seq (TransientPresence): a
	// conditional leave names that join with it instead of its seq.
	JoinToken uint64
	// Removed counts members removed by expire_node, rooms trimmed by tick.
	Removed int
	// More reports that expire_node or tick hit its limit and should be
	// proposed again to finish.
	More bool
	// Err is nil on success, else wraps one of the package's sentinel errors.
	Err error
}
