package lazyfs

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// pageSize is the granularity of before-images: a page is saved whole the
// first time any byte of it changes, as a disk's page cache would hold it.
const pageSize = 4096

// Options configure a mount.
type Options struct {
	// Name is the filesystem type's suffix in /proc/self/mountinfo
	// ("fuse.<Name>"); CleanupStale finds stale mounts by it. Default
	// "lazyfs".
	Name string
	// StrictMetadata holds the FS to POSIX's letter: a directory's fsync
	// makes durable its own entries, a file's fsync its own data and size,
	// and nothing else. By default the FS is a journaling one like ext4
	// or XFS: any fsync commits every name and size change made before it
	// (data still needs the file's own fsync).
	StrictMetadata bool
	// RecordWrites keeps the data of every unsynced write, which DropTorn
	// needs to keep a prefix of them; it costs as much memory as the
	// unsynced bytes, up to MaxRecorded (default 256 MiB) in all, beyond
	// which a file's torn drop falls back to a whole one.
	RecordWrites bool
	MaxRecorded  int64
	// Logf, when set, hears of every operation that waited for or held
	// the FS's lock longer than SlowOp (default 2 s): a stalled node can
	// then be told apart from a stalled filesystem.
	Logf   func(format string, args ...any)
	SlowOp time.Duration
}

// FS is one mounted lazy filesystem.
type FS struct {
	// backing to root are set by Mount, read-only after.
	backing, mnt, trash string
	opts                Options
	server              *fuse.Server
	root                *node

	// mu (taken through lock) guards files to recorded; the helpers in
	// state.go run with it held.
	mu       sync.Mutex
	files    map[uint64]*fileState // by backing inode: unsynced data
	journal  []entry               // directory entries not yet durable
	seq      int                   // names in the trash
	recorded int64                 // bytes in every fileState's redo log

	flips   atomic.Pointer[flipper]
	flipped atomic.Int64
	slow    atomic.Int64
}

// lock takes the FS's lock for op; the func it returns releases it and
// reports op if it waited and held it longer than Options.SlowOp.
func (f *FS) lock(op string) func() {
	start := time.Now()
	f.mu.Lock()
	return func() {
		f.mu.Unlock()
		if d := time.Since(start); d > f.opts.SlowOp {
			f.slow.Add(1)
			if f.opts.Logf != nil {
				f.opts.Logf("lazyfs %s: %s took %v", f.mnt, op, d.Round(time.Millisecond))
			}
		}
	}
}

// Slow is how many operations took longer than Options.SlowOp.
func (f *FS) Slow() int64 { return f.slow.Load() }

// Available says why this process cannot mount a lazy filesystem, or nil.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("lazyfs needs root to mount FUSE without fusermount")
	}
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("lazyfs needs /dev/fuse: %w", err)
	}
	_ = f.Close()
	return nil
}

// Mount serves backing at mountpoint, creating both if needed, after
// unmounting whatever a crashed process left mounted there. The trash for
// unlinked files is backing + ".lazyfs-trash", on the same filesystem so
// that moving a file there keeps its inode.
func Mount(backing, mountpoint string, opts Options) (*FS, error) {
	if opts.Name == "" {
		opts.Name = "lazyfs"
	}
	if opts.MaxRecorded <= 0 {
		opts.MaxRecorded = 256 << 20
	}
	if opts.SlowOp <= 0 {
		opts.SlowOp = 2 * time.Second
	}
	backing, err := filepath.Abs(backing)
	if err != nil {
		return nil, err
	}
	mountpoint, err = filepath.Abs(mountpoint)
	if err != nil {
		return nil, err
	}
	unmountStale(func(mp, _ string) bool { return mp == mountpoint })
	f := &FS{backing: backing, mnt: mountpoint, trash: backing + ".lazyfs-trash", opts: opts, files: map[uint64]*fileState{}}
	for _, d := range []string{backing, mountpoint} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	// Whatever a crashed run left in the trash is garbage: its unlinks
	// were never undone, and the mount starts with everything durable.
	if err := os.RemoveAll(f.trash); err != nil {
		return nil, err
	}
	if err := os.Mkdir(f.trash, 0o700); err != nil {
		return nil, err
	}
	var st syscall.Stat_t
	if err := syscall.Stat(backing, &st); err != nil {
		return nil, err
	}
	// The FUSE mount sits on a shared bind mount of its own mount point.
	// A process that copies this mount namespace (ip netns exec makes the
	// copies slaves) then sees the unmount too; with a private parent its
	// copy would keep the filesystem, and this server, alive as long as it
	// lives.
	if err := syscall.Mount(mountpoint, mountpoint, "", syscall.MS_BIND, ""); err != nil {
		return nil, fmt.Errorf("lazyfs: bind %s: %w", mountpoint, err)
	}
	if err := syscall.Mount("", mountpoint, "", syscall.MS_SHARED, ""); err != nil {
		_ = syscall.Unmount(mountpoint, syscall.MNT_DETACH)
		return nil, fmt.Errorf("lazyfs: make %s shared: %w", mountpoint, err)
	}
	lr := &fs.LoopbackRoot{Path: backing, Dev: st.Dev}
	f.root = &node{LoopbackNode: &fs.LoopbackNode{RootData: lr}, lfs: f}
	lr.RootNode = f.root
	// No kernel caching of names or attributes: Drop changes the backing
	// tree behind the kernel's back.
	var zero time.Duration
	server, err := fs.Mount(mountpoint, f.root, &fs.Options{
		EntryTimeout: &zero, AttrTimeout: &zero, NegativeTimeout: &zero,
		MountOptions: fuse.MountOptions{
			DirectMount: true, DirectMountStrict: true,
			FsName: backing, Name: opts.Name,
			// Writes of 1 MiB instead of 128 KiB: fewer round trips.
			MaxWrite: 1 << 20,
			// Every request logged, to see what a program does on the FS.
			Debug: os.Getenv("LAZYFS_DEBUG") != "",
		},
	})
	if err != nil {
		_ = syscall.Unmount(mountpoint, syscall.MNT_DETACH)
		return nil, fmt.Errorf("lazyfs: mount %s on %s: %w", backing, mountpoint, err)
	}
	f.server = server
	return f, nil
}

// Mountpoint is where the FS is mounted.
func (f *FS) Mountpoint() string { return f.mnt }

// Unmount unmounts the FS and waits up to timeout for its server to stop.
// The server outlives the timeout when a process in another mount
// namespace still holds a copy of the mount that the unmount did not
// reach (a namespace made private, or a copy in use); it then stops when
// that process exits.
func (f *FS) Unmount(timeout time.Duration) error {
	err := syscall.Unmount(f.mnt, 0)
	if err != nil {
		// Busy: detach it now, the kernel finishes when the last user
		// goes.
		err = syscall.Unmount(f.mnt, syscall.MNT_DETACH)
	}
	if err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("lazyfs: unmount %s: %w", f.mnt, err)
	}
	// The bind mount below it.
	_ = syscall.Unmount(f.mnt, syscall.MNT_DETACH)
	done := make(chan struct{})
	go func() { f.server.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		return fmt.Errorf("lazyfs: %s unmounted, but its server still runs after %v: another mount namespace holds it", f.mnt, timeout)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for ino, s := range f.files {
		_ = s.fd.Close()
		delete(f.files, ino)
	}
	return nil
}

// CleanupStale unmounts (lazily) every mount whose filesystem type is
// fuse.<name>: what a crashed process left behind. It returns the mount
// points it unmounted.
func CleanupStale(name string) []string {
	return unmountStale(func(_, fstype string) bool { return fstype == "fuse."+name })
}

func unmountStale(match func(mountpoint, fstype string) bool) []string {
	mf, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer mf.Close()
	var out []string
	sc := bufio.NewScanner(mf)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, x := range fields {
			if x == "-" {
				sep = i
				break
			}
		}
		if len(fields) < 5 || sep < 0 || sep+1 >= len(fields) {
			continue
		}
		mp := unescapeMount(fields[4])
		if match(mp, fields[sep+1]) && syscall.Unmount(mp, syscall.MNT_DETACH) == nil {
			// And the shared bind mount Mount put below it.
			_ = syscall.Unmount(mp, syscall.MNT_DETACH)
			out = append(out, mp)
		}
	}
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// DropStats is what a Drop forgot.
type DropStats struct {
	Files   int   // files rolled back
	Pages   int   // pages written back from before-images
	Cut     int64 // bytes cut off files that grew since their last sync
	Zeroed  int64 // bytes reset to zeros: past the size the data was last synced at, below a durable size set since (preallocated)
	Kept    int   // unsynced writes kept (DropTorn)
	Entries int   // directory entries undone
	// Detail lists each file rolled back: its path at the drop, the size
	// it had and the size it went back to, and the pages restored.
	Detail []string
}

func (d DropStats) String() string {
	s := fmt.Sprintf("%d files rolled back (%d pages restored, %d bytes zeroed, %d bytes cut), %d directory entries undone", d.Files, d.Pages, d.Zeroed, d.Cut, d.Entries)
	if d.Kept > 0 {
		s += fmt.Sprintf(", %d unsynced writes kept", d.Kept)
	}
	return s
}

// Drop forgets everything written since its last sync, as a power cut
// would. No process may have a file of the mount open.
func (f *FS) Drop() (DropStats, error) { return f.drop(nil) }

// DropTorn is Drop, except that each file keeps a random prefix of its
// unsynced writes, the last kept one possibly cut short: a power cut
// during writeback. It needs Options.RecordWrites; a file whose writes
// were not all recorded is dropped whole.
func (f *FS) DropTorn(rng *rand.Rand) (DropStats, error) {
	if rng == nil {
		rng = rand.New(rand.NewPCG(1, 2))
	}
	return f.drop(rng)
}

func (f *FS) drop(torn *rand.Rand) (DropStats, error) {
	var st DropStats
	var errs []error
	var touched []*fs.Inode
	f.mu.Lock()
	for ino, s := range f.files {
		var cur syscall.Stat_t
		_ = syscall.Fstat(int(s.fd.Fd()), &cur)
		name, _ := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(s.fd.Fd())))
		ps, cut, zeroed, err := s.rollback()
		if rel, rerr := filepath.Rel(f.backing, name); rerr == nil {
			name = rel
		}
		st.Detail = append(st.Detail, fmt.Sprintf("%s: %d → %d bytes, %d pages restored, %d bytes zeroed", name, cur.Size, s.restore, ps, zeroed))
		st.Files++
		st.Pages += ps
		st.Cut += cut
		st.Zeroed += zeroed
		if err == nil && torn != nil && s.complete && len(s.ops) > 0 {
			var k int
			k, err = s.replay(torn)
			st.Kept += k
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("roll back inode %d: %w", ino, err))
		}
		if s.inode != nil {
			touched = append(touched, s.inode)
		}
		_ = s.fd.Close()
		delete(f.files, ino)
	}
	f.recorded = 0
	for i := len(f.journal) - 1; i >= 0; i-- {
		if err := f.undo(f.journal[i]); err != nil {
			errs = append(errs, err)
		}
		st.Entries++
	}
	f.journal = nil
	if err := os.RemoveAll(f.trash); err != nil {
		errs = append(errs, err)
	}
	if err := os.Mkdir(f.trash, 0o700); err != nil {
		errs = append(errs, err)
	}
	f.mu.Unlock()
	// The kernel's notifications are sent outside the lock: the kernel may
	// wait on a request that needs it.
	for _, in := range touched {
		_ = in.NotifyContent(0, 0)
	}
	f.prune(f.root.EmbeddedInode(), f.backing)
	return st, errors.Join(errs...)
}

// prune forgets, in go-fuse's tree and the kernel's dentry cache, every
// name whose backing file is gone or is another file now.
func (f *FS) prune(dir *fs.Inode, path string) {
	for name, ch := range dir.Children() {
		var st syscall.Stat_t
		p := filepath.Join(path, name)
		if err := syscall.Lstat(p, &st); err != nil || st.Ino != ch.StableAttr().Ino {
			dir.RmChild(name)
			_ = dir.NotifyEntry(name)
			continue
		}
		if ch.IsDir() {
			f.prune(ch, p)
		}
	}
}

// Dirty reports how many files have unsynced data and how many directory
// entries are not durable.
func (f *FS) Dirty() (files, entries int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.files), len(f.journal)
}

// flipper flips bits in reads of the files it matches.
type flipper struct {
	match func(rel string) bool // match and prob are read-only
	prob  float64
	mu    sync.Mutex
	rng   *rand.Rand // guarded by mu: reads run concurrently
}

// SetFlips makes each read of a file whose path (relative to the root)
// match accepts flip one random bit of what it returns, with probability
// prob; a nil match turns flips off. The flipped data may stay in the
// kernel's page cache until the file is opened again.
func (f *FS) SetFlips(match func(rel string) bool, prob float64, seed uint64) {
	if match == nil {
		f.flips.Store(nil)
		return
	}
	f.flips.Store(&flipper{match: match, prob: prob, rng: rand.New(rand.NewPCG(seed, 0x666c6970))})
}

// Flipped is how many bits reads have flipped so far.
func (f *FS) Flipped() int64 { return f.flipped.Load() }

func (f *FS) maybeFlip(rel string, buf []byte) {
	fl := f.flips.Load()
	if fl == nil || len(buf) == 0 || !fl.match(rel) {
		return
	}
	fl.mu.Lock()
	hit := fl.rng.Float64() < fl.prob
	bit := fl.rng.IntN(len(buf) * 8)
	fl.mu.Unlock()
	if hit {
		buf[bit/8] ^= 1 << (bit % 8)
		f.flipped.Add(1)
	}
}
