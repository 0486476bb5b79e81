package lazyfs

import (
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"
)

// fileState is what a file must go back to at a power cut: its content
// as of its last sync.
type fileState struct {
	// fd is the FS's own descriptor of the backing file, so the file can
	// be rolled back wherever its name went (renamed, in the trash).
	fd *os.File
	// size is the file's size at its last sync: below it, the pages
	// hold what a rollback restores.
	size int64
	// restore is the size a rollback leaves: size, or a later size set by
	// a truncate or fallocate and made durable by a journal commit.
	restore int64
	// meta is the size the last truncate or fallocate set, -1 if none.
	meta int64
	// pages holds the before-image of every page of [0, size) changed
	// since; nil means the page was all zeros.
	pages map[int64][]byte
	// ops are the unsynced writes in order (Options.RecordWrites);
	// complete is false once one was not recorded.
	ops      []redo
	complete bool
	inode    *fs.Inode
}

// redo is one unsynced change of a file.
type redo struct {
	kind      byte // 'w' write, 't' truncate, 'a' fallocate
	off, size int64
	mode      uint32
	data      []byte
}

// state returns the file's state, starting one (the file's content now is
// its durable content) at its first change since its last sync. Callers
// hold f.mu.
func (f *FS) state(ino uint64, fd int, in *fs.Inode) (*fileState, error) {
	if s := f.files[ino]; s != nil {
		if s.inode == nil {
			s.inode = in
		}
		return s, nil
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return nil, err
	}
	// Reopened read-write through /proc (a dup would share the handle's
	// access mode): the FS reads before-images and writes them back.
	// /proc reaches the file even once it is unlinked.
	own, err := os.OpenFile("/proc/self/fd/"+strconv.Itoa(fd), os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	s := &fileState{fd: own, size: st.Size, restore: st.Size, meta: -1,
		pages: map[int64][]byte{}, complete: f.opts.RecordWrites, inode: in}
	f.files[ino] = s
	return s, nil
}

// save keeps the before-image of the pages of [off, end) that lie below
// the durable size and were not saved yet.
func (s *fileState) save(off, end int64) error {
	end = min(end, s.size)
	if off < 0 || off >= end {
		return nil
	}
	// Holes read as zeros: find them with SEEK_DATA instead of reading
	// them, since files preallocated by ftruncate (badger's memtables and
	// value logs, hundreds of MB) are mostly holes.
	next := int64(-1) // the first data at or after the page, as last seen
	for p := off / pageSize; p*pageSize < end; p++ {
		if _, ok := s.pages[p]; ok {
			continue
		}
		start := p * pageSize
		if next < start {
			next = dataAt(s.fd, start)
		}
		if next >= start+min(pageSize, s.size-start) {
			s.pages[p] = nil
			continue
		}
		buf := make([]byte, min(pageSize, s.size-start))
		// Bytes past the end of the file now were cut off by a truncate
		// that saved them first; a short read here only meets zeros.
		if _, err := s.fd.ReadAt(buf, start); err != nil && !isEOF(err) {
			return err
		}
		if allZero(buf) {
			buf = nil
		}
		s.pages[p] = buf
	}
	return nil
}

func (f *FS) record(s *fileState, r redo) {
	if !s.complete {
		return
	}
	if f.recorded+int64(len(r.data)) > f.opts.MaxRecorded {
		s.complete = false
		for _, o := range s.ops {
			f.recorded -= int64(len(o.data))
		}
		s.ops = nil
		return
	}
	f.recorded += int64(len(r.data))
	s.ops = append(s.ops, r)
}

// rollback puts the file back as it was at its last sync.
// zeroed counts the bytes a rollback turns to zeros: those past the size
// the data was synced at, below a durable size set since.
func (s *fileState) rollback() (pages int, cut, zeroed int64, err error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(int(s.fd.Fd()), &st); err != nil {
		return 0, 0, 0, err
	}
	cut = max(st.Size-s.restore, 0)
	zeroed = max(s.restore-s.size, 0)
	// Down to what the data was synced at, then (a durable size change
	// since) up with zeros: the data written there never was.
	if err := s.fd.Truncate(min(s.size, s.restore)); err != nil {
		return 0, 0, 0, err
	}
	if err := s.fd.Truncate(s.restore); err != nil {
		return 0, 0, 0, err
	}
	zero := make([]byte, pageSize)
	for p, data := range s.pages {
		start := p * pageSize
		if start >= s.restore {
			continue
		}
		if data == nil {
			data = zero[:min(pageSize, s.size-start)]
		}
		data = data[:min(int64(len(data)), s.restore-start)]
		if _, err := s.fd.WriteAt(data, start); err != nil {
			return pages, cut, zeroed, err
		}
		pages++
	}
	return pages, cut, zeroed, nil
}

// replay applies a random prefix of the unsynced changes again, the last
// one possibly in part, and returns how many it applied.
func (s *fileState) replay(rng *rand.Rand) (int, error) {
	k := rng.IntN(len(s.ops) + 1)
	for i, o := range s.ops[:min(k+1, len(s.ops))] {
		data := o.data
		if i == k {
			if o.kind != 'w' || len(data) == 0 {
				break
			}
			data = data[:rng.IntN(len(data))] // torn in the middle
		}
		var err error
		switch o.kind {
		case 'w':
			_, err = s.fd.WriteAt(data, o.off)
		case 't':
			err = s.fd.Truncate(o.size)
		case 'a':
			err = unix.Fallocate(int(s.fd.Fd()), o.mode, o.off, o.size)
		}
		if err != nil {
			return i, err
		}
	}
	return min(k, len(s.ops)), nil
}

// syncFile makes a file's data and size durable and, unless
// StrictMetadata, commits the metadata journal. Callers hold f.mu.
func (f *FS) syncFile(ino uint64) {
	if s := f.files[ino]; s != nil {
		for _, o := range s.ops {
			f.recorded -= int64(len(o.data))
		}
		_ = s.fd.Close()
		delete(f.files, ino)
	}
	if !f.opts.StrictMetadata {
		f.commitAll()
	}
}

// commitAll makes every name and size change so far durable, as the
// commit of a filesystem's metadata journal does: ext4 and XFS commit it
// at any fsync, whichever file it was for. Data stays unsynced.
func (f *FS) commitAll() {
	if len(f.journal) > 0 {
		f.commit(len(f.journal) - 1)
	}
	for _, s := range f.files {
		if s.meta >= 0 {
			s.restore, s.meta = s.meta, -1
		}
	}
}

// Entry kinds.
const (
	created = iota // a new name (create, mkdir, mknod, symlink, link)
	removed        // unlink or rmdir: the file went to the trash
	renamed        // rename, over trash if it replaced a file
)

// entry is one change of a directory's entries not yet durable. Paths are
// relative to the root.
type entry struct {
	kind        int
	dir, name   string
	dir2, name2 string // a rename's new name
	trash       string // where a removed or replaced file waits
	ino         uint64 // the file the entry names
}

// syncDir makes durable the journal up to the last entry that changed
// dir, or all of it unless StrictMetadata. Callers hold f.mu.
func (f *FS) syncDir(dir string) {
	if !f.opts.StrictMetadata {
		f.commitAll()
		return
	}
	for i := len(f.journal) - 1; i >= 0; i-- {
		if e := f.journal[i]; e.dir == dir || (e.kind == renamed && e.dir2 == dir) {
			f.commit(i)
			return
		}
	}
}

// commit makes the journal's entries up to i durable.
func (f *FS) commit(i int) {
	for _, e := range f.journal[:i+1] {
		if e.trash != "" {
			_ = os.RemoveAll(e.trash)
		}
	}
	f.journal = append([]entry(nil), f.journal[i+1:]...)
}

func (f *FS) path(dir, name string) string { return filepath.Join(f.backing, dir, name) }

// toTrash moves a file out of the tree, keeping its inode.
func (f *FS) toTrash(p string) (string, error) {
	f.seq++
	t := filepath.Join(f.trash, strconv.Itoa(f.seq))
	return t, os.Rename(p, t)
}

func (f *FS) undo(e entry) error {
	var err error
	switch e.kind {
	case created:
		err = os.RemoveAll(f.path(e.dir, e.name))
	case removed:
		err = os.Rename(e.trash, f.path(e.dir, e.name))
	case renamed:
		err = os.Rename(f.path(e.dir2, e.name2), f.path(e.dir, e.name))
		if err == nil && e.trash != "" {
			err = os.Rename(e.trash, f.path(e.dir2, e.name2))
		}
	}
	if err != nil {
		return fmt.Errorf("undo %s: %w", e, err)
	}
	return nil
}

func (e entry) String() string {
	switch e.kind {
	case created:
		return "create " + filepath.Join(e.dir, e.name)
	case removed:
		return "remove " + filepath.Join(e.dir, e.name)
	}
	return "rename " + filepath.Join(e.dir, e.name) + " to " + filepath.Join(e.dir2, e.name2)
}

// dataAt is the offset of the first data at or after off, or the largest
// offset when only a hole follows (or the filesystem cannot tell, then
// every page is read).
func dataAt(f *os.File, off int64) int64 {
	n, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
	if errors.Is(err, unix.ENXIO) {
		return math.MaxInt64
	}
	if err != nil {
		return off
	}
	return n
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func isEOF(err error) bool { return errors.Is(err, io.EOF) }
