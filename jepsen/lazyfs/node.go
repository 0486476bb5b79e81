package lazyfs

import (
	"context"
	"os"
	"path/filepath"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// node is a loopback node whose changes the FS records. Every call that
// changes a name or data is overridden; the rest pass through.
type node struct {
	*fs.LoopbackNode
	lfs *FS
}

var (
	_ fs.NodeWrapChilder    = (*node)(nil)
	_ fs.NodeOpener         = (*node)(nil)
	_ fs.NodeCreater        = (*node)(nil)
	_ fs.NodeUnlinker       = (*node)(nil)
	_ fs.NodeRmdirer        = (*node)(nil)
	_ fs.NodeRenamer        = (*node)(nil)
	_ fs.NodeSetattrer      = (*node)(nil)
	_ fs.NodeFsyncer        = (*node)(nil)
	_ fs.NodeOpendirHandler = (*node)(nil)
)

// WrapChild makes every node the loopback creates one of ours.
func (n *node) WrapChild(_ context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	if ln, ok := ops.(*fs.LoopbackNode); ok {
		return &node{LoopbackNode: ln, lfs: n.lfs}
	}
	return ops
}

// rel is the node's path relative to the root.
func (n *node) rel() string { return n.Path(nil) }

func (n *node) backing() string { return filepath.Join(n.lfs.backing, n.rel()) }

// created journals a new name made by the loopback.
func (n *node) created(name string, err syscall.Errno) syscall.Errno {
	if err != 0 {
		return err
	}
	var st syscall.Stat_t
	if e := syscall.Lstat(n.lfs.path(n.rel(), name), &st); e != nil {
		return fs.ToErrno(e)
	}
	n.lfs.journal = append(n.lfs.journal, entry{kind: created, dir: n.rel(), name: name, ino: st.Ino})
	return 0
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	defer n.lfs.lock("mkdir")()
	in, err := n.LoopbackNode.Mkdir(ctx, name, mode, out)
	return in, n.created(name, err)
}

func (n *node) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	defer n.lfs.lock("mknod")()
	in, err := n.LoopbackNode.Mknod(ctx, name, mode, rdev, out)
	return in, n.created(name, err)
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	defer n.lfs.lock("symlink")()
	in, err := n.LoopbackNode.Symlink(ctx, target, name, out)
	return in, n.created(name, err)
}

func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	defer n.lfs.lock("link")()
	in, err := n.LoopbackNode.Link(ctx, target, name, out)
	return in, n.created(name, err)
}

// Tmpfile is refused: a file without a name, linked in later, is not
// modelled.
func (n *node) Tmpfile(context.Context, uint32, uint32, *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EOPNOTSUPP
}

// CopyFileRange is refused so that the kernel copies through reads and
// writes, which the FS records.
func (n *node) CopyFileRange(context.Context, fs.FileHandle, uint64, *fs.Inode, fs.FileHandle, uint64, uint64, uint64) (uint32, syscall.Errno) {
	return 0, syscall.ENOSYS
}

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	f := n.lfs
	defer f.lock("create")()
	p := f.path(n.rel(), name)
	var st syscall.Stat_t
	existed := syscall.Lstat(p, &st) == nil
	in, lf, _, errno := n.LoopbackNode.Create(ctx, name, flags&^syscall.O_TRUNC, mode, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	// The loopback's handle would let the kernel pass data straight to
	// the backing file, past the FS: use ours.
	if r, ok := lf.(fs.FileReleaser); ok {
		r.Release(ctx)
	}
	if !existed {
		if errno := n.created(name, 0); errno != 0 {
			return nil, nil, 0, errno
		}
	}
	h, errno := f.open(p, name, flags, in)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	return in, h, 0, 0
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	f := n.lfs
	defer f.lock("open")()
	h, errno := f.open(n.backing(), n.rel(), flags, n.EmbeddedInode())
	return h, 0, errno
}

// open opens the backing file for a handle; O_TRUNC goes through the FS
// so that the cut is recorded. Callers hold f.mu.
func (f *FS) open(p, rel string, flags uint32, in *fs.Inode) (*handle, syscall.Errno) {
	oflags := int(flags) &^ (syscall.O_APPEND | syscall.O_TRUNC | syscall.O_CREAT | syscall.O_EXCL | fuse.FMODE_EXEC)
	fd, err := syscall.Open(p, oflags|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		_ = syscall.Close(fd)
		return nil, fs.ToErrno(err)
	}
	h := &handle{lfs: f, fd: fd, ino: st.Ino, rel: rel, inode: in}
	if flags&syscall.O_TRUNC != 0 && st.Size > 0 {
		if errno := f.truncate(h.ino, fd, 0, in); errno != 0 {
			_ = syscall.Close(fd)
			return nil, errno
		}
	}
	return h, 0
}

// truncate cuts or extends a file, saving what a cut removes. Callers
// hold f.mu.
func (f *FS) truncate(ino uint64, fd int, size int64, in *fs.Inode) syscall.Errno {
	s, err := f.state(ino, fd, in)
	if err != nil {
		return fs.ToErrno(err)
	}
	if err := s.save(size, s.size); err != nil {
		return fs.ToErrno(err)
	}
	f.record(s, redo{kind: 't', size: size})
	s.meta = size
	return fs.ToErrno(syscall.Ftruncate(fd, size))
}

func (n *node) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if size, ok := in.GetSize(); ok {
		f := n.lfs
		unlock := f.lock("truncate")
		var errno syscall.Errno
		if h, ok := fh.(*handle); ok {
			errno = f.truncate(h.ino, h.fd, int64(size), n.EmbeddedInode())
		} else {
			fd, err := syscall.Open(n.backing(), syscall.O_WRONLY|syscall.O_CLOEXEC, 0)
			if err != nil {
				errno = fs.ToErrno(err)
			} else {
				var st syscall.Stat_t
				if err := syscall.Fstat(fd, &st); err != nil {
					errno = fs.ToErrno(err)
				} else {
					errno = f.truncate(st.Ino, fd, int64(size), n.EmbeddedInode())
				}
				_ = syscall.Close(fd)
			}
		}
		unlock()
		if errno != 0 {
			return errno
		}
		in.Valid &^= fuse.FATTR_SIZE
	}
	// The rest (mode, owner, times) passes through by path.
	return n.LoopbackNode.Setattr(ctx, nil, in, out)
}

func (n *node) Fsync(_ context.Context, fh fs.FileHandle, _ uint32) syscall.Errno {
	f := n.lfs
	defer f.lock("fsync")()
	if h, ok := fh.(*handle); ok {
		f.syncFile(h.ino)
		return 0
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(n.backing(), &st); err != nil {
		return fs.ToErrno(err)
	}
	if st.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		f.syncDir(n.rel())
	} else {
		f.syncFile(st.Ino)
	}
	return 0
}

func (n *node) Unlink(_ context.Context, name string) syscall.Errno {
	return n.remove(name, false)
}

func (n *node) Rmdir(_ context.Context, name string) syscall.Errno {
	return n.remove(name, true)
}

// remove moves a name to the trash instead of deleting it, so that Drop
// can bring it back.
func (n *node) remove(name string, dir bool) syscall.Errno {
	f := n.lfs
	defer f.lock("remove")()
	p := f.path(n.rel(), name)
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		return fs.ToErrno(err)
	}
	isDir := st.Mode&syscall.S_IFMT == syscall.S_IFDIR
	switch {
	case dir && !isDir:
		return syscall.ENOTDIR
	case !dir && isDir:
		return syscall.EISDIR
	case dir && !emptyDir(p):
		return syscall.ENOTEMPTY
	}
	t, err := f.toTrash(p)
	if err != nil {
		return fs.ToErrno(err)
	}
	f.journal = append(f.journal, entry{kind: removed, dir: n.rel(), name: name, trash: t, ino: st.Ino})
	return 0
}

func emptyDir(p string) bool {
	d, err := os.Open(p)
	if err != nil {
		return false
	}
	defer d.Close()
	names, _ := d.Readdirnames(1)
	return len(names) == 0
}

func (n *node) Rename(_ context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*node)
	if !ok || np.lfs != n.lfs {
		return syscall.EXDEV
	}
	if flags&^unix.RENAME_NOREPLACE != 0 {
		return syscall.EINVAL // RENAME_EXCHANGE and whiteouts are not modelled
	}
	f := n.lfs
	defer f.lock("rename")()
	src, dst := f.path(n.rel(), name), f.path(np.rel(), newName)
	var sst, dst2 syscall.Stat_t
	if err := syscall.Lstat(src, &sst); err != nil {
		return fs.ToErrno(err)
	}
	var trash string
	if syscall.Lstat(dst, &dst2) == nil {
		if flags&unix.RENAME_NOREPLACE != 0 {
			return syscall.EEXIST
		}
		if dst2.Ino == sst.Ino {
			return 0 // two names of one file: rename does nothing
		}
		srcDir, dstDir := sst.Mode&syscall.S_IFMT == syscall.S_IFDIR, dst2.Mode&syscall.S_IFMT == syscall.S_IFDIR
		switch {
		case dstDir && !srcDir:
			return syscall.EISDIR
		case srcDir && !dstDir:
			return syscall.ENOTDIR
		case dstDir && !emptyDir(dst):
			return syscall.ENOTEMPTY
		}
		t, err := f.toTrash(dst)
		if err != nil {
			return fs.ToErrno(err)
		}
		trash = t
	}
	if err := os.Rename(src, dst); err != nil {
		if trash != "" {
			_ = os.Rename(trash, dst)
		}
		return fs.ToErrno(err)
	}
	f.journal = append(f.journal, entry{kind: renamed, dir: n.rel(), name: name, dir2: np.rel(), name2: newName, trash: trash, ino: sst.Ino})
	return 0
}

func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	ds, errno := fs.NewLoopbackDirStream(n.backing())
	if errno != 0 {
		return nil, 0, errno
	}
	return &dirHandle{DirStream: ds, n: n}, 0, 0
}

// dirHandle is a loopback directory stream whose fsync makes the
// directory's entries durable.
type dirHandle struct {
	fs.DirStream
	n *node
}

var (
	_ fs.FileFsyncdirer   = (*dirHandle)(nil)
	_ fs.FileReaddirenter = (*dirHandle)(nil)
	_ fs.FileReleasedirer = (*dirHandle)(nil)
	_ fs.FileSeekdirer    = (*dirHandle)(nil)
)

func (d *dirHandle) Fsyncdir(context.Context, uint32) syscall.Errno {
	f := d.n.lfs
	defer f.lock("fsyncdir")()
	f.syncDir(d.n.rel())
	return 0
}

func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if r, ok := d.DirStream.(fs.FileReaddirenter); ok {
		return r.Readdirent(ctx)
	}
	return nil, syscall.ENOTSUP
}

func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if r, ok := d.DirStream.(fs.FileSeekdirer); ok {
		return r.Seekdir(ctx, off)
	}
	return syscall.ENOTSUP
}

func (d *dirHandle) Releasedir(ctx context.Context, flags uint32) {
	if r, ok := d.DirStream.(fs.FileReleasedirer); ok {
		r.Releasedir(ctx, flags)
		return
	}
	d.DirStream.Close()
}

// handle is an open file. Reads and writes go to the backing file through
// the FS, never by passthrough: the FS must see every write.
type handle struct {
	lfs   *FS
	fd    int
	ino   uint64
	rel   string // the path at open, for bit flips
	inode *fs.Inode
}

var (
	_ fs.FileReader    = (*handle)(nil)
	_ fs.FileWriter    = (*handle)(nil)
	_ fs.FileReleaser  = (*handle)(nil)
	_ fs.FileFlusher   = (*handle)(nil)
	_ fs.FileGetattrer = (*handle)(nil)
	_ fs.FileLseeker   = (*handle)(nil)
	_ fs.FileAllocater = (*handle)(nil)
)

func (h *handle) Read(_ context.Context, buf []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n, err := syscall.Pread(h.fd, buf, off)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	h.lfs.maybeFlip(h.rel, buf[:n])
	return fuse.ReadResultData(buf[:n]), 0
}

func (h *handle) Write(_ context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	f := h.lfs
	defer f.lock("write")()
	s, err := f.state(h.ino, h.fd, h.inode)
	if err != nil {
		return 0, fs.ToErrno(err)
	}
	if err := s.save(off, off+int64(len(data))); err != nil {
		return 0, fs.ToErrno(err)
	}
	if s.complete {
		f.record(s, redo{kind: 'w', off: off, data: append([]byte(nil), data...)})
	}
	n, err := syscall.Pwrite(h.fd, data, off)
	if err != nil {
		return uint32(max(n, 0)), fs.ToErrno(err)
	}
	return uint32(n), 0
}

func (h *handle) Allocate(_ context.Context, off, size uint64, mode uint32) syscall.Errno {
	f := h.lfs
	defer f.lock("allocate")()
	s, err := f.state(h.ino, h.fd, h.inode)
	if err != nil {
		return fs.ToErrno(err)
	}
	if err := s.save(int64(off), int64(off+size)); err != nil {
		return fs.ToErrno(err)
	}
	f.record(s, redo{kind: 'a', off: int64(off), size: int64(size), mode: mode})
	if err := unix.Fallocate(h.fd, mode, int64(off), int64(size)); err != nil {
		return fs.ToErrno(err)
	}
	var st syscall.Stat_t
	if syscall.Fstat(h.fd, &st) == nil {
		s.meta = st.Size
	}
	return 0
}

// Flush does nothing: closing a file syncs nothing.
func (h *handle) Flush(context.Context) syscall.Errno { return 0 }

func (h *handle) Release(context.Context) syscall.Errno {
	return fs.ToErrno(syscall.Close(h.fd))
}

func (h *handle) Getattr(_ context.Context, out *fuse.AttrOut) syscall.Errno {
	var st syscall.Stat_t
	if err := syscall.Fstat(h.fd, &st); err != nil {
		return fs.ToErrno(err)
	}
	out.FromStat(&st)
	return 0
}

func (h *handle) Lseek(_ context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	n, err := unix.Seek(h.fd, int64(off), int(whence))
	return uint64(n), fs.ToErrno(err)
}
