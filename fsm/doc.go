// Package fsm is the room state machine that every replica of a Herald raft
// group applies in the same order.
//
// A group holds many rooms. Each room has members (presence, ordered with
// messages), one gap-free sequence of events (join, leave, message: seq 1,
// 2, 3, …), a bounded history of those events, a window of idempotency keys
// for exactly-once publish, and an epoch that names its incarnation (the
// index of the log entry that created it; a deleted and re-created room has
// a new one).
//
// # What it owns and what it must not touch
//
// The package owns the command encoding (Command, DecodeCommand), the
// room state and its storage layout in the node's badger DB (Store), and
// the events a committed entry produces. It does no network I/O and reads
// no wall clock and no randomness: time is the log entry's AppendedAt,
// made monotonic per group, so the same log yields the same state on every
// replica. It knows nothing of raft groups beyond its group id, and nothing
// of sockets, sessions or authentication.
//
// # Use
//
// One Store per node, one FSM per group replica:
//
//	store, err := fsm.OpenStore(fsm.DefaultStoreConfig(dir))
//	f, err := fsm.New(store, fsm.Config{Group: 7})
//	r, err := raft.NewRaft(conf, f, logs, stable, snaps, transport)
//
//	cmd := fsm.Command{Op: fsm.OpPublish, Room: "lobby", Member: "alice",
//		Data: []byte(`{"text":"hi"}`), Key: "c1-42"}
//	fut := r.Apply(cmd.Encode(), timeout)
//	res := fut.Response().(*fsm.Result) // res.Seq, res.Duplicate, res.Err
//
//	sub, info, err := f.Subscribe("lobby", 0) // events after info.LastSeq
//	for ev := range sub.C { … }                // then sub.Err()
//
//	page, err := f.History("lobby", fromSeq, 100)
//	page, err = f.HistoryBytes("lobby", fromSeq, 100, 1<<20) // also ≤ 1 MiB; page.More()
//
// Errors are values: Result.Err wraps one of the sentinel errors (ErrConflict,
// ErrNotMember, ErrInvalid, ErrBadCommand, …) and nothing a log entry or a
// snapshot contains makes the package panic.
//
// # Semantics decided here
//
//   - Rooms are created by the first join, publish or room_config, with the
//     group's defaults (DefaultRoomConfig until a group_defaults command).
//   - Publishing does not require membership unless the room is MembersOnly:
//     authorization is the front end's job, membership is presence.
//   - A publish with a key that is still in the room's window (by count and
//     by log time) returns the original seq with Duplicate set and appends
//     nothing. The key is checked before ExpectSeq, so the retry of a
//     conditional publish that succeeded sees its success. Keys belong to an
//     incarnation: a deleted room forgets them.
//   - A namespaces command gives the group rules by room name prefix. Once
//     it has some, a room follows the longest matching rule with the fields
//     it was given by room_config on top, resolved when used, so a new rule
//     set rewrites no room record; before the first, a room follows its
//     stored config alone, as it always did.
//   - Joins and leaves of a TransientPresence room take no seq and are not
//     stored (EventPresenceJoin/Leave): the seqs stay gap-free.
//   - History is trimmed by count at once and by age at each tick command
//     (and by count there too, after a rule lowered the limit).
//     A read below the trimmed point is answered from FirstSeq with
//     Truncated set.
//   - expire_node and tick do at most MaxExpireLimit members and
//     MaxTickRooms rooms per entry and set Result.More when the proposer
//     should send another.
//
// # Storage and durability
//
// ApplyBatch writes the effects of a run of entries and the applied index
// in one badger transaction, and skips entries at or below the stored
// applied index, so a restart neither loses nor repeats an entry: a host
// may start raft with NoSnapshotRestoreOnStart. Badger is opened without
// fsync; the raft log is the durable record. After a machine crash the
// stored applied index may fall behind the latest snapshot: the host then
// restores that snapshot (see AppliedIndex) and raft replays the rest.
// Trimmed history, evicted keys and deleted rooms are swept from the store
// a bounded amount per commit.
//
// Snapshot captures a badger read view and returns at once; Persist streams
// the group's keys with a CRC; Restore marks the group as restoring,
// replaces its keys, validates every record, and clears the mark. A failed
// restore leaves the FSM refusing to apply (ErrNeedsRestore) until one
// succeeds.
package fsm
