package fsm

import "bytes"

// Sweeping deletes stored keys that left the logical state: events below a
// room's FirstSeq, idempotency keys below KeyFirst, and every key of a
// deleted incarnation. It runs at the end of each commit within a budget, so
// a large trim or delete never makes one commit unbounded. What it deletes
// is invisible to commands and reads, so replicas may sweep at different
// times without diverging.

// incarnationKinds are the record kinds stored per room incarnation.
var incarnationKinds = [...]byte{kindMember, kindEvent, kindKey, kindOrder}

func (t *tx) sweep(budget int) {
	keys := t.f.keys
	for name := range t.f.dirty {
		if budget <= 0 {
			return
		}
		tr := t.touch(name)
		if !tr.exists {
			delete(t.f.dirty, name)
			continue
		}
		r := &tr.rec
		for ; r.PhysFirstSeq < r.FirstSeq && budget > 0; r.PhysFirstSeq++ {
			t.del(keys.event(name, r.Epoch, r.PhysFirstSeq))
			budget--
		}
		for ; r.PhysKeyFirst < r.KeyFirst && budget > 0; r.PhysKeyFirst++ {
			t.sweepKey(name, r.Epoch, r.PhysKeyFirst)
			budget -= 2
		}
		if r.PhysFirstSeq >= r.FirstSeq && r.PhysKeyFirst >= r.KeyFirst {
			delete(t.f.dirty, name)
		}
	}
	for gk, g := range t.f.graves {
		if budget <= 0 {
			return
		}
		budget = t.sweepGrave(gk, g, budget)
	}
}

// sweepKey deletes key ordinal ord and its key record, unless the key was
// published again since and its record now belongs to a newer ordinal.
func (t *tx) sweepKey(name string, epoch, ord uint64) {
	keys := t.f.keys
	ok := keys.order(name, epoch, ord)
	if v := t.get(ok); v != nil {
		if key, _, err := decodeOrder(v); err == nil {
			kk := keys.idemKey(name, epoch, key)
			if kv := t.get(kk); kv != nil {
				if kr, err := decodeKeyRecord(kv); err != nil || kr.Ordinal == ord {
					t.del(kk)
				}
			}
		}
	}
	t.del(ok)
}

// sweepGrave deletes up to budget keys of a deleted incarnation and the
// grave itself once nothing is left. It returns the unused budget.
func (t *tx) sweepGrave(graveKey string, g graveRef, budget int) int {
	for _, kind := range incarnationKinds {
		prefix := t.f.keys.incarnation(kind, g.room, g.epoch)
		var batch [][]byte
		err := scanPrefix(t.read, prefix, false, func(k, _ []byte) error {
			if len(batch) >= budget {
				return errBudget
			}
			batch = append(batch, bytes.Clone(k))
			return nil
		})
		for _, k := range batch {
			t.del(k)
		}
		budget -= len(batch)
		if err == errBudget {
			return 0
		}
		if err != nil {
			t.fail(err)
			return 0
		}
	}
	t.del([]byte(graveKey))
	delete(t.f.graves, graveKey)
	return budget
}
