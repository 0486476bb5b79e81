package fsm

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Op names a state machine command.
type Op uint8

// Command kinds. The numbers are part of the log format: never reuse one.
const (
	OpJoin          Op = 1 // add or update a member; emits a join event
	OpLeave         Op = 2 // remove a member; emits a leave event
	OpPublish       Op = 3 // append a message event
	OpRoomConfig    Op = 4 // change a room's retention and rules
	OpRoomDelete    Op = 5 // delete a room; the next use creates a new epoch
	OpExpireNode    Op = 6 // drop the ephemeral members of a node's old sessions
	OpTick          Op = 7 // advance the clock and enforce age limits
	OpGroupDefaults Op = 8 // set the config given to rooms created from now on
	OpNamespaces    Op = 9 // replace the group's namespace rules (room config by name prefix)
)

var opNames = map[Op]string{
	OpJoin: "join", OpLeave: "leave", OpPublish: "publish", OpRoomConfig: "room_config",
	OpRoomDelete: "room_delete", OpExpireNode: "expire_node", OpTick: "tick",
	OpGroupDefaults: "group_defaults", OpNamespaces: "namespaces",
}

func (o Op) String() string {
	if s, ok := opNames[o]; ok {
		return s
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// Size limits checked when a command is decoded or applied. They are part of
// the replicated behaviour, so they are constants rather than configuration:
// two replicas with different limits would diverge. The front end enforces
// its own, lower, configurable limits before proposing.
const (
	MaxRoomBytes    = 1024
	MaxMemberBytes  = 256
	MaxKeyBytes     = 256
	MaxNodeIDBytes  = 256
	MaxMetaBytes    = 64 << 10
	MaxPayloadBytes = 1 << 20
	// MaxExpireLimit bounds the members one expire_node command removes, so
	// one log entry never turns into an unbounded write.
	MaxExpireLimit = 1000
	// MaxTickRooms bounds the rooms one tick command trims.
	MaxTickRooms = 1000
	// MaxNamespaces bounds the rules of a namespaces command: every
	// command resolves a room's rule by scanning them.
	MaxNamespaces = 256
)

// commandVersion is the first byte of every encoded command. A decoder keeps
// accepting every version it ever wrote, so an old log still applies.
const commandVersion = 1

// ConfigField is a bit set naming the RoomConfig fields a room_config or
// group_defaults command changes; the others keep their value.
type ConfigField uint8

// Room config fields.
const (
	FieldHistoryMaxCount ConfigField = 1 << iota
	FieldHistoryMaxAge
	FieldKeyWindowCount
	FieldKeyWindowAge
	FieldMembersOnly
	FieldNoClientPublish
	FieldTransientPresence
	FieldMaxMembers
	// firstConfigFields are the fields of the first release. Their values
	// are always encoded; the later ones only when the mask names one, so
	// commands and records that do not use them read as they always did.
	firstConfigFields = FieldHistoryMaxCount | FieldHistoryMaxAge | FieldKeyWindowCount |
		FieldKeyWindowAge | FieldMembersOnly
	laterConfigFields = FieldNoClientPublish | FieldTransientPresence | FieldMaxMembers
	allConfigFields   = firstConfigFields | laterConfigFields
)

// RoomConfig is the per-room behaviour that is part of the replicated state.
type RoomConfig struct {
	// HistoryMaxCount is how many events the room keeps; 0 means no count limit.
	HistoryMaxCount uint64
	// HistoryMaxAge is how long an event is kept, measured in log time; 0
	// means no age limit. Age limits are enforced by tick commands, so an
	// event may outlive it by up to one tick interval.
	HistoryMaxAge time.Duration
	// KeyWindowCount is how many idempotency keys the room remembers; 0 means
	// no count limit (then KeyWindowAge must be set).
	KeyWindowCount uint64
	// KeyWindowAge is how long, in log time, a key is remembered; 0 means no
	// age limit (then KeyWindowCount must be set).
	KeyWindowAge time.Duration
	// MembersOnly makes publish fail with ErrNotMember for a member that has
	// not joined the room.
	MembersOnly bool
	// NoClientPublish makes a publish marked FromClient (one a socket sent)
	// fail with ErrForbidden; the backend's publishes still go through.
	// The zero value is the first release's behaviour, as for every field
	// added later: records written before it existed decode to it.
	NoClientPublish bool
	// TransientPresence keeps joins and leaves out of the history: they
	// take no seq and reach live subscribers only (EventPresenceJoin,
	// EventPresenceLeave), so presence churn cannot push messages out of a
	// count-limited history.
	TransientPresence bool
	// MaxMembers caps the members of the room; a join of one more fails
	// with ErrRoomFull. 0 means no limit.
	MaxMembers uint64
}

// DefaultRoomConfig is what a room gets when nothing else was configured: a
// chat-sized history, a key window long enough for a client that reconnects
// and retries, and publishing open to everyone the front end authorized.
var DefaultRoomConfig = RoomConfig{
	HistoryMaxCount: 10_000,
	HistoryMaxAge:   7 * 24 * time.Hour,
	KeyWindowCount:  10_000,
	KeyWindowAge:    10 * time.Minute,
	MembersOnly:     false,
}

// Validate reports a config that would make the room misbehave.
func (c RoomConfig) Validate() error {
	if c.HistoryMaxAge < 0 || c.KeyWindowAge < 0 {
		return errors.New("room config: ages must not be negative")
	}
	if c.KeyWindowCount == 0 && c.KeyWindowAge == 0 {
		return errors.New("room config: the key window needs a count or an age limit, or it grows without bound")
	}
	return nil
}

// merge returns c with the fields named by mask taken from patch.
func (c RoomConfig) merge(patch RoomConfig, mask ConfigField) RoomConfig {
	c.take(patch, mask)
	return c
}

// differs returns the fields in which c and o differ.
func (c RoomConfig) differs(o RoomConfig) ConfigField { return c.take(o, 0) }

// take sets the fields named by mask from o, and returns the fields in
// which c differed from o before. It names every field once, so merge and
// differs cannot disagree on which fields there are.
func (c *RoomConfig) take(o RoomConfig, mask ConfigField) (differed ConfigField) {
	takeField(&c.HistoryMaxCount, o.HistoryMaxCount, FieldHistoryMaxCount, mask, &differed)
	takeField(&c.HistoryMaxAge, o.HistoryMaxAge, FieldHistoryMaxAge, mask, &differed)
	takeField(&c.KeyWindowCount, o.KeyWindowCount, FieldKeyWindowCount, mask, &differed)
	takeField(&c.KeyWindowAge, o.KeyWindowAge, FieldKeyWindowAge, mask, &differed)
	takeField(&c.MembersOnly, o.MembersOnly, FieldMembersOnly, mask, &differed)
	takeField(&c.NoClientPublish, o.NoClientPublish, FieldNoClientPublish, mask, &differed)
	takeField(&c.TransientPresence, o.TransientPresence, FieldTransientPresence, mask, &differed)
	takeField(&c.MaxMembers, o.MaxMembers, FieldMaxMembers, mask, &differed)
	return differed
}

func takeField[T comparable](dst *T, src T, bit, mask ConfigField, differed *ConfigField) {
	if *dst != src {
		*differed |= bit
	}
	if mask&bit != 0 {
		*dst = src
	}
}

// Namespace is a rule giving the rooms whose names start with Prefix the
// config fields named by Mask. The longest matching prefix wins; "" matches
// every room.
type Namespace struct {
	Prefix string
	Config RoomConfig
	Mask   ConfigField
}

// Namespaces is a group's set of rules. Revision orders the sets (the
// cluster uses the meta group index that recorded the set): a set whose
// revision is not above the group's is ignored, so proposing one twice,
// or late, is harmless.
type Namespaces struct {
	Revision uint64
	Rules    []Namespace // sorted by Prefix, no prefix twice
}

// Resolve returns the config a room called name gets from base and the
// longest rule matching it.
func (n *Namespaces) Resolve(name string, base RoomConfig) RoomConfig {
	best := -1
	for i := range n.Rules {
		p := n.Rules[i].Prefix
		if strings.HasPrefix(name, p) && (best < 0 || len(p) > len(n.Rules[best].Prefix)) {
			best = i
		}
	}
	if best < 0 {
		return base
	}
	return base.merge(n.Rules[best].Config, n.Rules[best].Mask)
}

// Validate reports a rule set apply would refuse.
func (n *Namespaces) Validate(base RoomConfig) error {
	if len(n.Rules) > MaxNamespaces {
		return fmt.Errorf("%d namespaces; at most %d", len(n.Rules), MaxNamespaces)
	}
	for i, r := range n.Rules {
		if len(r.Prefix) > MaxRoomBytes {
			return fmt.Errorf("namespace prefix is %d bytes; at most %d", len(r.Prefix), MaxRoomBytes)
		}
		if r.Prefix != "" {
			if err := checkName("namespace", r.Prefix); err != nil {
				return err
			}
		}
		if i > 0 && n.Rules[i-1].Prefix >= r.Prefix {
			return fmt.Errorf("namespaces are not sorted by prefix, or %q is given twice", r.Prefix)
		}
		if err := base.merge(r.Config, r.Mask).Validate(); err != nil {
			return fmt.Errorf("namespace %q: %w", r.Prefix, err)
		}
	}
	return nil
}

// Command is one state machine operation. Which fields matter depends on Op:
//
//	join:           Room, Member, Meta, Ephemeral, NodeID, NodeEpoch
//	leave:          Room, Member, ExpectSeq if HasExpectSeq (leave only if the
//	                member's latest join has that seq)
//	publish:        Room, Member, Data, Key (optional), ExpectSeq if HasExpectSeq
//	room_config:    Room, Config, ConfigMask
//	room_delete:    Room
//	expire_node:    NodeID, NodeEpoch (members of epochs below it expire), Limit
//	tick:           Limit (rooms trimmed at most; 0 means MaxTickRooms)
//	group_defaults: Config, ConfigMask
//	namespaces:     Namespaces
type Command struct {
	Op           Op
	Room         string
	Member       string
	Meta         []byte
	Ephemeral    bool
	NodeID       string
	NodeEpoch    uint64
	Data         []byte
	Key          string
	HasExpectSeq bool
	ExpectSeq    uint64
	Config       RoomConfig
	ConfigMask   ConfigField
	Limit        uint32
	// FromClient marks a publish a client sent through a socket, which a
	// NoClientPublish room refuses.
	FromClient bool
	Namespaces Namespaces
}

// Encode returns the command's versioned binary form, the bytes to propose
// to raft.
func (c *Command) Encode() []byte {
	e := encoder{Buf: make([]byte, 0, 32+len(c.Room)+len(c.Member)+len(c.Meta)+len(c.Data)+len(c.Key))}
	e.Byte(commandVersion)
	e.Byte(byte(c.Op))
	switch c.Op {
	case OpJoin:
		e.String(c.Room)
		e.String(c.Member)
		e.Bytes(c.Meta)
		e.Bool(c.Ephemeral)
		e.String(c.NodeID)
		e.Uvarint(c.NodeEpoch)
	case OpLeave:
		e.String(c.Room)
		e.String(c.Member)
		// Only a conditional leave carries its condition, so a plain
		// leave encodes as it always has.
		if c.HasExpectSeq {
			e.Bool(true)
			e.Uvarint(c.ExpectSeq)
		}
	case OpPublish:
		e.String(c.Room)
		e.String(c.Member)
		e.Bytes(c.Data)
		e.String(c.Key)
		e.Bool(c.HasExpectSeq)
		if c.HasExpectSeq {
			e.Uvarint(c.ExpectSeq)
		}
		// Only a client's publish carries the mark, so the backend's
		// encode as they always have.
		if c.FromClient {
			e.Bool(true)
		}
	case OpRoomConfig:
		e.String(c.Room)
		encodeConfig(&e, c.Config, c.ConfigMask)
	case OpRoomDelete:
		e.String(c.Room)
	case OpExpireNode:
		e.String(c.NodeID)
		e.Uvarint(c.NodeEpoch)
		e.Uvarint(uint64(c.Limit))
	case OpTick:
		e.Uvarint(uint64(c.Limit))
	case OpGroupDefaults:
		encodeConfig(&e, c.Config, c.ConfigMask)
	case OpNamespaces:
		encodeRules(&e, &c.Namespaces)
	}
	return e.Buf
}

// encodeRules writes a rule set, in commands and in the stored record.
func encodeRules(e *encoder, n *Namespaces) {
	e.Uvarint(n.Revision)
	e.Uvarint(uint64(len(n.Rules)))
	for _, r := range n.Rules {
		e.String(r.Prefix)
		encodeConfig(e, r.Config, r.Mask)
	}
}

func decodeRules(d *decoder) Namespaces {
	n := Namespaces{Revision: d.Uvarint()}
	count := d.Uvarint()
	if count > MaxNamespaces {
		d.Fail("%d namespaces; at most %d", count, MaxNamespaces)
		count = 0
	}
	for range count {
		if d.Err() != nil {
			break
		}
		var r Namespace
		r.Prefix = d.String(MaxRoomBytes)
		r.Config, r.Mask = decodeConfig(d)
		n.Rules = append(n.Rules, r)
	}
	return n
}

func encodeConfig(e *encoder, c RoomConfig, mask ConfigField) {
	e.Byte(byte(mask))
	e.Uvarint(c.HistoryMaxCount)
	e.Uvarint(uint64(c.HistoryMaxAge))
	e.Uvarint(c.KeyWindowCount)
	e.Uvarint(uint64(c.KeyWindowAge))
	e.Bool(c.MembersOnly)
	if mask&laterConfigFields != 0 {
		e.Bool(c.NoClientPublish)
		e.Bool(c.TransientPresence)
		e.Uvarint(c.MaxMembers)
	}
}

func decodeConfig(d *decoder) (RoomConfig, ConfigField) {
	mask := ConfigField(d.Byte())
	if mask&^allConfigFields != 0 {
		d.Fail("unknown room config fields %#x", uint8(mask&^allConfigFields))
	}
	c := RoomConfig{
		HistoryMaxCount: d.Uvarint(),
		HistoryMaxAge:   time.Duration(d.Duration()),
		KeyWindowCount:  d.Uvarint(),
		KeyWindowAge:    time.Duration(d.Duration()),
		MembersOnly:     d.Bool(),
	}
	if mask&laterConfigFields != 0 {
		c.NoClientPublish = d.Bool()
		c.TransientPresence = d.Bool()
		c.MaxMembers = d.Uvarint()
	}
	return c, mask
}

// DecodeCommand parses an encoded command. It returns an error wrapping
// ErrBadCommand for any input it cannot fully understand, and never panics.
// The returned command does not alias b.
func DecodeCommand(b []byte) (Command, error) { return decodeCommand(b, false) }

// decodeCommand can let Meta and Data alias b, for apply: raft does not
// change an entry after handing it to the FSM, and apply copies what it
// stores.
func decodeCommand(b []byte, alias bool) (Command, error) {
	d := decoder{Buf: b}
	clone := cloneBytes
	if alias {
		clone = func(b []byte) []byte {
			if len(b) == 0 {
				return nil // as cloneBytes does: empty is nil
			}
			return b
		}
	}
	var c Command
	if v := d.Byte(); d.Err() == nil && v != commandVersion {
		return c, fmt.Errorf("%w: unknown command version %d (this build reads version %d)", ErrBadCommand, v, commandVersion)
	}
	c.Op = Op(d.Byte())
	switch c.Op {
	case OpJoin:
		c.Room = d.String(MaxRoomBytes)
		c.Member = d.String(MaxMemberBytes)
		c.Meta = clone(d.Bytes(MaxMetaBytes))
		c.Ephemeral = d.Bool()
		c.NodeID = d.String(MaxNodeIDBytes)
		c.NodeEpoch = d.Uvarint()
	case OpLeave:
		c.Room = d.String(MaxRoomBytes)
		c.Member = d.String(MaxMemberBytes)
		if len(d.Buf) > 0 {
			c.HasExpectSeq = d.Bool()
			if !c.HasExpectSeq {
				d.Fail("a leave's condition flag is set to false")
			}
			c.ExpectSeq = d.Uvarint()
		}
	case OpPublish:
		c.Room = d.String(MaxRoomBytes)
		c.Member = d.String(MaxMemberBytes)
		c.Data = clone(d.Bytes(MaxPayloadBytes))
		c.Key = d.String(MaxKeyBytes)
		c.HasExpectSeq = d.Bool()
		if c.HasExpectSeq {
			c.ExpectSeq = d.Uvarint()
		}
		if len(d.Buf) > 0 {
			if c.FromClient = d.Bool(); !c.FromClient {
				d.Fail("a publish's client flag is set to false")
			}
		}
	case OpRoomConfig:
		c.Room = d.String(MaxRoomBytes)
		c.Config, c.ConfigMask = decodeConfig(&d)
	case OpRoomDelete:
		c.Room = d.String(MaxRoomBytes)
	case OpExpireNode:
		c.NodeID = d.String(MaxNodeIDBytes)
		c.NodeEpoch = d.Uvarint()
		c.Limit = decodeLimit(&d)
	case OpTick:
		c.Limit = decodeLimit(&d)
	case OpGroupDefaults:
		c.Config, c.ConfigMask = decodeConfig(&d)
	case OpNamespaces:
		c.Namespaces = decodeRules(&d)
	default:
		if d.Err() == nil {
			return Command{}, fmt.Errorf("%w: unknown op %d", ErrBadCommand, uint8(c.Op))
		}
	}
	if err := d.Done(); err != nil {
		return Command{}, fmt.Errorf("%w: %s: %v", ErrBadCommand, c.Op, err)
	}
	return c, nil
}

func decodeLimit(d *decoder) uint32 {
	v := d.Uvarint()
	if v > 1<<32-1 {
		d.Fail("limit %d overflows 32 bits", v)
	}
	return uint32(v)
}

func cloneBytes(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return append([]byte(nil), b...)
}
