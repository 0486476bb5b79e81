package logstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// boltBackend keeps each group in its own raft-boltdb file.
type boltBackend struct {
	dir string
	log *slog.Logger

	mu     sync.Mutex // guards closed and open, serialises Group/DropGroup/Close
	closed bool
	open   map[uint64]*boltStore
}

func openBolt(opts Config) (*boltBackend, error) {
	dir := filepath.Join(opts.Dir, kindDirs[KindBolt])
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("logstore: create %s: %w", dir, err)
	}
	return &boltBackend{dir: dir, log: opts.Logger, open: make(map[uint64]*boltStore)}, nil
}

const (
	boltFilePrefix = "group-"
	boltFileSuffix = ".db"
)

func (b *boltBackend) path(id uint64) string {
	return filepath.Join(b.dir, boltFilePrefix+strconv.FormatUint(id, 10)+boltFileSuffix)
}

func (b *boltBackend) Group(id uint64) (Store, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, ErrClosed
	}
	if _, ok := b.open[id]; ok {
		return nil, fmt.Errorf("logstore: group %d is already open", id)
	}
	path := b.path(id)
	_, statErr := os.Stat(path)
	bs, err := raftboltdb.New(raftboltdb.Options{
		Path:   path,
		NoSync: plantedNoSync != nil && plantedNoSync(),
		// The new msgpack time format keeps AppendedAt's nanoseconds.
		MsgpackUseNewTimeFormat: true,
	})
	if err != nil {
		return nil, fmt.Errorf("logstore: group %d: open %s: %w", id, path, err)
	}
	if os.IsNotExist(statErr) {
		// A new file's directory entry must survive a crash too, or the
		// group's first acknowledged writes could vanish with it.
		if err := syncDir(b.dir); err != nil {
			_ = bs.Close()
			return nil, fmt.Errorf("logstore: group %d: %w", id, err)
		}
	}
	s := &boltStore{id: id, path: path, s: bs}
	b.open[id] = s
	return s, nil
}

func (b *boltBackend) CloseGroup(id uint64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	s, ok := b.open[id]
	if !ok {
		return nil
	}
	delete(b.open, id)
	if err := s.close(); err != nil {
		return fmt.Errorf("logstore: group %d: close %s: %w", id, s.path, err)
	}
	return nil
}

func (b *boltBackend) DropGroup(id uint64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	if s, ok := b.open[id]; ok {
		delete(b.open, id)
		if err := s.close(); err != nil {
			b.log.Warn("close raft log store before drop", "group", id, "path", s.path, "err", err)
		}
	}
	path := b.path(id)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("logstore: group %d: drop: %w", id, err)
	}
	if err := syncDir(b.dir); err != nil {
		return fmt.Errorf("logstore: group %d: drop: %w", id, err)
	}
	return nil
}

func (b *boltBackend) Groups() ([]uint64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, ErrClosed
	}
	entries, err := os.ReadDir(b.dir)
	if err != nil {
		return nil, fmt.Errorf("logstore: list groups: %w", err)
	}
	var ids []uint64
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, boltFilePrefix) || !strings.HasSuffix(name, boltFileSuffix) {
			continue
		}
		id, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(name, boltFilePrefix), boltFileSuffix), 10, 64)
		if err != nil {
			continue // not ours
		}
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids, nil
}

func (b *boltBackend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	var errs []error
	for id, s := range b.open {
		delete(b.open, id)
		if err := s.close(); err != nil {
			errs = append(errs, fmt.Errorf("logstore: group %d: close %s: %w", id, s.path, err))
		}
	}
	return errors.Join(errs...)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory %s for sync: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// boltStore guards a raft-boltdb store so that calls after close fail with
// ErrClosed instead of reaching a closed bbolt handle.
type boltStore struct {
	id   uint64 // id and path are set at construction, read-only after
	path string

	// rw is read-held by every call, write-held by close; it guards closed
	// and the use of s, which close closes.
	rw     sync.RWMutex
	closed bool
	s      *raftboltdb.BoltStore
}

func (s *boltStore) close() error {
	s.rw.Lock()
	defer s.rw.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.s.Close()
}

func (s *boltStore) enter() error {
	s.rw.RLock()
	if s.closed {
		s.rw.RUnlock()
		return ErrClosed
	}
	return nil
}

func (s *boltStore) leave() { s.rw.RUnlock() }

func (s *boltStore) wrap(what string, err error) error {
	return fmt.Errorf("logstore: group %d: %s (%s): %w", s.id, what, s.path, err)
}

func (s *boltStore) FirstIndex() (uint64, error) {
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.leave()
	v, err := s.s.FirstIndex()
	if err != nil {
		return 0, s.wrap("first index", err)
	}
	return v, nil
}

func (s *boltStore) LastIndex() (uint64, error) {
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.leave()
	v, err := s.s.LastIndex()
	if err != nil {
		return 0, s.wrap("last index", err)
	}
	return v, nil
}

func (s *boltStore) GetLog(index uint64, log *raft.Log) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	err := s.s.GetLog(index, log)
	if err != nil && !errors.Is(err, raft.ErrLogNotFound) {
		return s.wrap(fmt.Sprintf("get log %d", index), err)
	}
	return err
}

func (s *boltStore) StoreLog(log *raft.Log) error {
	return s.StoreLogs([]*raft.Log{log})
}

func (s *boltStore) StoreLogs(logs []*raft.Log) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	if len(logs) == 0 {
		return nil
	}
	if err := s.s.StoreLogs(logs); err != nil {
		return s.wrap(fmt.Sprintf("store logs %d..%d", logs[0].Index, logs[len(logs)-1].Index), err)
	}
	return nil
}

func (s *boltStore) DeleteRange(lo, hi uint64) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	if err := s.s.DeleteRange(lo, hi); err != nil {
		return s.wrap(fmt.Sprintf("delete range %d..%d", lo, hi), err)
	}
	return nil
}

func (s *boltStore) Set(key, val []byte) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	if err := s.s.Set(key, val); err != nil {
		return s.wrap(fmt.Sprintf("set %q", key), err)
	}
	return nil
}

func (s *boltStore) Get(key []byte) ([]byte, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	v, err := s.s.Get(key)
	if errors.Is(err, raftboltdb.ErrKeyNotFound) {
		return nil, ErrKeyNotFound
	}
	if err != nil {
		return nil, s.wrap(fmt.Sprintf("get %q", key), err)
	}
	return v, nil
}

func (s *boltStore) SetUint64(key []byte, val uint64) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	if err := s.s.SetUint64(key, val); err != nil {
		return s.wrap(fmt.Sprintf("set %q", key), err)
	}
	return nil
}

// GetUint64 checks the value's length itself: raft-boltdb would panic on a
// value that is not 8 bytes long.
func (s *boltStore) GetUint64(key []byte) (uint64, error) {
	v, err := s.Get(key)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("logstore: group %d: key %q in %s holds %d bytes, not a uint64", s.id, key, s.path, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}
