package client

// cursor is where a subscription stands in its room: the incarnation it
// delivers and the seq it owes next. Its methods are the resume rules of
// docs/consistency.md, pure functions of the cursor and what a node said,
// each returning the notices the application is owed; a Subscription
// applies them under its lock.
type cursor struct {
	epoch    uint64 // 0: not known yet (a subscription without one)
	epochStr string
	deleted  bool   // epoch ended: only a newer one may follow
	next     uint64 // the seq owed next
}

// notice is a notice owed to the application, an Event of its Kind.
type notice struct {
	kind  Kind
	epoch string
	seq   uint64
}

// subscribed is what a node answered to a subscribe: the room's current
// incarnation, and whether the one asked for changed or was cut short.
type subscribed struct {
	epoch        uint64
	epochStr     string
	epochChanged bool
	truncated    bool
	firstSeq     uint64
}

// answered applies a subscribe's answer.
func (c *cursor) answered(a subscribed) []notice {
	switch {
	case a.epochChanged && a.epoch == 0:
		// The incarnation asked for is gone and none replaced it.
		if c.epoch != 0 && !c.deleted {
			c.deleted = true
			return []notice{{KindRoomDeleted, c.epochStr, c.next - 1}}
		}
		return nil
	case a.epochChanged && a.epoch > c.epoch:
		start := uint64(1)
		if a.truncated && a.firstSeq > 1 {
			start = a.firstSeq
		}
		var out []notice
		switch {
		case !c.deleted && c.epoch != 0:
			out = []notice{{KindEpochChanged, a.epochStr, start}}
		case start > 1:
			out = []notice{{KindTruncated, a.epochStr, start}}
		}
		c.enter(a.epoch, a.epochStr)
		c.next = start
		return out
	case c.epoch == 0 && !c.deleted:
		// Subscribed without an epoch: the room's is the one.
		c.epoch, c.epochStr = a.epoch, a.epochStr
	}
	if a.truncated && a.firstSeq > c.next && a.epoch == c.epoch {
		c.next = a.firstSeq
		return []notice{{KindTruncated, c.epochStr, a.firstSeq}}
	}
	return nil
}

func (c *cursor) enter(e uint64, str string) {
	c.epoch, c.epochStr, c.deleted, c.next = e, str, false, 1
}

// accept reports whether a push of incarnation e belongs to what the
// subscription delivers, moving it to e if e is newer.
func (c *cursor) accept(e uint64, str string) (bool, []notice) {
	switch {
	case e == 0 || e < c.epoch:
		return false, nil
	case e == c.epoch:
		return !c.deleted, nil
	}
	var out []notice
	if c.epoch != 0 && !c.deleted {
		// The node announces the end of an incarnation before the next
		// one's events; should it not have, the application still learns.
		out = []notice{{KindRoomDeleted, c.epochStr, c.next - 1}}
	}
	c.enter(e, str)
	return true, out
}

// verdict is what to do with an event of an accepted incarnation.
type verdict int

const (
	deliver verdict = iota // it is the seq owed
	repeat                 // already delivered: a resumed subscription repeats
	gap                    // a seq is missing: subscribe again from next
)

func (c *cursor) event(seq uint64) verdict {
	switch {
	case seq < c.next:
		return repeat
	case seq > c.next:
		return gap
	}
	return deliver
}

// truncated applies a push saying that history before firstSeq is gone.
func (c *cursor) truncated(e uint64, str string, firstSeq uint64) []notice {
	ok, out := c.accept(e, str)
	if ok && firstSeq > c.next {
		c.next = firstSeq
		out = append(out, notice{KindTruncated, str, firstSeq})
	}
	return out
}

// roomDeleted applies a push saying that incarnation e ended at lastSeq.
func (c *cursor) roomDeleted(e uint64, str string, lastSeq uint64) []notice {
	if e == 0 || e < c.epoch || (e == c.epoch && c.deleted) {
		return nil
	}
	c.epoch, c.epochStr, c.deleted = e, str, true
	return []notice{{KindRoomDeleted, str, lastSeq}}
}
