package fsm

import (
	"encoding/binary"
	"errors"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/y"
)

// getValue returns a copy of the value at key, or nil if there is none.
func getValue(txn *badger.Txn, key []byte) ([]byte, error) {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, storageErr(key, err)
	}
	v, err := item.ValueCopy(nil)
	if err != nil {
		return nil, storageErr(key, err)
	}
	return v, nil
}

// storageErr classifies a badger read error: a failed block or value log
// checksum is corruption like a failed record checksum.
func storageErr(key []byte, err error) error {
	if errors.Is(err, y.ErrChecksumMismatch) {
		return corrupt("stored", key, err)
	}
	return err
}

// scanPrefix calls fn for every key under prefix in order. The key and value
// passed to fn are valid only during the call. With values false, fn gets
// a nil value.
func scanPrefix(txn *badger.Txn, prefix []byte, values bool, fn func(k, v []byte) error) error {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = prefix
	opts.PrefetchValues = false
	it := txn.NewIterator(opts)
	defer it.Close()
	var buf []byte
	for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
		item := it.Item()
		var v []byte
		if values {
			var err error
			if buf, err = item.ValueCopy(buf[:0]); err != nil {
				return storageErr(item.KeyCopy(nil), err)
			}
			v = buf
		}
		if err := fn(item.Key(), v); err != nil {
			return err
		}
	}
	return nil
}

func beUint64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }

// errBudget stops a scan that used up its budget.
var errBudget = errors.New("budget used up")
