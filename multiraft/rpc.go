package multiraft

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/heraldhq/herald/internal/wire"
	"github.com/heraldhq/herald/multiraft/meta"
)

// Peer services the host serves on the peer port. Each reply starts with a
// status byte so typed errors survive the trip between nodes.
const (
	svcPropose      = "mr.propose"    // group leader: apply a command
	svcReadIndex    = "mr.readindex"  // group leader: a linearizable read index
	svcMetaState    = "mr.meta.state" // any meta replica: the cluster state (stale)
	svcRegister     = "mr.meta.register"
	svcLease        = "mr.meta.lease"    // meta leader: renew a node lease
	svcGroupInfo    = "mr.group.status"  // any replica: its status
	svcGroupAdmin   = "mr.group.admin"   // group leader: membership changes
	svcMetaJoin     = "mr.meta.join"     // a node: start an empty meta replica to be added
	svcBarrier      = "mr.barrier"       // group leader: commit a barrier entry
	svcQuery        = "mr.query"         // a replica (the leader if linearizable): answer an application query
	svcOpRunning    = "mr.op.running"    // a node: does it run a group operation (replica change) now
	svcReplicaReset = "mr.replica.reset" // a node: drop a replica taken out of its group and start it empty
)

const (
	replyOK byte = iota
	replyNotLeader
	replyUnavailable
	replyUnknownOutcome
	replyNoReplica
	replyNoGroup
	replyMetaConflict
	replyClosed
	replyOther
	replyNotVoter
)

func okReply(payload []byte) []byte {
	out := make([]byte, 1+len(payload))
	copy(out[1:], payload)
	return out
}

func errReply(err error) []byte {
	var nl *NotLeaderError
	if errors.As(err, &nl) {
		b := []byte{replyNotLeader}
		b = binary.AppendUvarint(b, nl.Group)
		b = binary.AppendUvarint(b, uint64(len(nl.LeaderID)))
		b = append(b, nl.LeaderID...)
		return append(b, nl.LeaderAddr...)
	}
	code := replyOther
	switch {
	case errors.Is(err, ErrUnknownOutcome):
		code = replyUnknownOutcome
	case errors.Is(err, ErrUnavailable):
		code = replyUnavailable
	case errors.Is(err, ErrNoReplica):
		code = replyNoReplica
	case errors.Is(err, ErrNoGroup):
		code = replyNoGroup
	case errors.Is(err, meta.ErrConflict):
		code = replyMetaConflict
	case errors.Is(err, ErrClosed):
		code = replyClosed
	case errors.Is(err, ErrNotVoter):
		code = replyNotVoter
	}
	return append([]byte{code}, err.Error()...)
}

func decodeReply(b []byte) ([]byte, error) {
	if len(b) == 0 {
		return nil, errors.New("multiraft: empty reply from peer")
	}
	code, rest := b[0], b[1:]
	switch code {
	case replyOK:
		return rest, nil
	case replyNotLeader:
		group, n := binary.Uvarint(rest)
		if n <= 0 {
			return nil, errors.New("multiraft: malformed not-leader reply")
		}
		rest = rest[n:]
		l, n := binary.Uvarint(rest)
		if n <= 0 || uint64(len(rest)-n) < l {
			return nil, errors.New("multiraft: malformed not-leader reply")
		}
		rest = rest[n:]
		return nil, &NotLeaderError{Group: group, LeaderID: string(rest[:l]), LeaderAddr: string(rest[l:])}
	}
	kinds := map[byte]error{replyUnavailable: ErrUnavailable, replyUnknownOutcome: ErrUnknownOutcome,
		replyNoReplica: ErrNoReplica, replyNoGroup: ErrNoGroup, replyMetaConflict: meta.ErrConflict, replyClosed: ErrUnavailable, replyNotVoter: ErrNotVoter}
	if kind, ok := kinds[code]; ok {
		return nil, wire.Remote(kind, string(rest))
	}
	if code == replyOther {
		return nil, errors.New(string(rest))
	}
	return nil, fmt.Errorf("multiraft: unknown reply code %d from peer", code)
}

func jsonReply(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		return errReply(fmt.Errorf("multiraft: encode reply: %w", err))
	}
	return okReply(b)
}

func putIndex(i uint64) []byte { return binary.BigEndian.AppendUint64(nil, i) }

func getIndex(b []byte) (uint64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("multiraft: malformed index reply of %d bytes", len(b))
	}
	return binary.BigEndian.Uint64(b), nil
}
