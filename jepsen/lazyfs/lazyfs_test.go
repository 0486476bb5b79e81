package lazyfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/bits"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/leakcheck"

	"golang.org/x/sys/unix"

	"github.com/heraldhq/herald/internal/eventually"
)

// mount mounts a lazy FS in a temp dir for the test's lifetime.
func mount(t *testing.T, opts Options) (*FS, string) {
	t.Helper()
	if err := Available(); err != nil {
		t.Skipf("no FUSE here, the lazy filesystem cannot be tested: %v", err)
	}
	dir := t.TempDir()
	opts.Name = "lazyfs-test"
	f, err := Mount(filepath.Join(dir, "disk"), filepath.Join(dir, "mnt"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.Unmount(10 * time.Second); err != nil {
			t.Error(err)
		}
	})
	return f, f.Mountpoint()
}

func write(t *testing.T, p string, data []byte, sync bool) {
	t.Helper()
	w, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if sync {
		if err := w.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func syncDir(t *testing.T, p string) {
	t.Helper()
	d, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
}

func drop(t *testing.T, f *FS) DropStats {
	t.Helper()
	st, err := f.Drop()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func want(t *testing.T, p string, data []byte) {
	t.Helper()
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("%s holds %q (%d bytes), want %q (%d bytes)", p, trunc(got), len(got), trunc(data), len(data))
	}
}

func gone(t *testing.T, p string) {
	t.Helper()
	if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%s should not exist after the drop (err %v)", p, err)
	}
}

func trunc(b []byte) []byte {
	if len(b) > 40 {
		return b[:40]
	}
	return b
}

func TestUnsyncedWritesAreDropped(t *testing.T) {
	f, mnt := mount(t, Options{})
	a := filepath.Join(mnt, "a")
	write(t, a, []byte("durable"), true)
	syncDir(t, mnt)
	write(t, a, []byte("lost and longer than before"), false)
	write(t, filepath.Join(mnt, "new"), []byte("never synced"), false)
	want(t, a, []byte("lost and longer than before")) // readable before the cut
	st := drop(t, f)
	want(t, a, []byte("durable"))
	gone(t, filepath.Join(mnt, "new"))
	if st.Files != 2 || st.Entries != 1 {
		t.Errorf("drop: %v, want 2 files and 1 entry", st)
	}
	// The FS keeps working after a drop, and a second one forgets nothing
	// synced.
	write(t, a, []byte("second"), true)
	drop(t, f)
	want(t, a, []byte("second"))
}

func TestSyncedWritesAreKept(t *testing.T) {
	f, mnt := mount(t, Options{})
	sub := filepath.Join(mnt, "d")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	syncDir(t, mnt)
	// A file's fsync makes its data and its name durable (journaled
	// filesystems); the directory fsync above made "d" durable.
	write(t, filepath.Join(sub, "f"), bytes.Repeat([]byte("x"), 10000), true)
	big := bytes.Repeat([]byte("0123456789"), 3000)
	g := filepath.Join(sub, "g")
	write(t, g, big, true)
	// Overwrite the middle, sync, then overwrite again without.
	w, err := os.OpenFile(g, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt([]byte("SYNCED"), 5000); err != nil {
		t.Fatal(err)
	}
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt([]byte("UNSYNCED"), 9000); err != nil {
		t.Fatal(err)
	}
	if err := w.Truncate(7000); err != nil {
		t.Fatal(err)
	}
	w.Close()
	drop(t, f)
	want(t, filepath.Join(sub, "f"), bytes.Repeat([]byte("x"), 10000))
	exp := bytes.Clone(big)
	copy(exp[5000:], "SYNCED")
	want(t, g, exp)
}

func TestStrictMetadataNeedsTheDirectorysSync(t *testing.T) {
	f, mnt := mount(t, Options{StrictMetadata: true})
	a, b := filepath.Join(mnt, "a"), filepath.Join(mnt, "b")
	write(t, a, []byte("synced file, unsynced name"), true)
	write(t, b, []byte("synced file and name"), true)
	syncDir(t, mnt)
	c := filepath.Join(mnt, "c")
	write(t, c, []byte("synced file, unsynced name"), true)
	drop(t, f)
	want(t, a, []byte("synced file, unsynced name"))
	want(t, b, []byte("synced file and name"))
	gone(t, c)
}

func TestRenameAndUnlinkWithoutDirSyncAreUndone(t *testing.T) {
	f, mnt := mount(t, Options{})
	a, b, c := filepath.Join(mnt, "a"), filepath.Join(mnt, "b"), filepath.Join(mnt, "c")
	write(t, a, []byte("A"), true)
	write(t, b, []byte("B"), true)
	write(t, c, []byte("C"), true)
	syncDir(t, mnt)
	if err := os.Rename(a, b); err != nil { // replaces b
		t.Fatal(err)
	}
	if err := os.Remove(c); err != nil {
		t.Fatal(err)
	}
	want(t, b, []byte("A"))
	gone(t, c)
	st := drop(t, f)
	want(t, a, []byte("A"))
	want(t, b, []byte("B"))
	want(t, c, []byte("C"))
	if st.Entries != 2 {
		t.Errorf("drop: %v, want 2 entries undone", st)
	}

	// The usual atomic replace: write a temp file, fsync it, rename it
	// over, fsync the directory. Durable.
	tmp := filepath.Join(mnt, "b.tmp")
	write(t, tmp, []byte("B2"), true)
	if err := os.Rename(tmp, b); err != nil {
		t.Fatal(err)
	}
	syncDir(t, mnt)
	drop(t, f)
	want(t, b, []byte("B2"))
	gone(t, tmp)

	// Without the directory's fsync the rename is lost, and with it the
	// temp file's name: its create came before... and it was made durable
	// by its own fsync, so it comes back under its old name.
	write(t, tmp, []byte("B3"), true)
	if err := os.Rename(tmp, b); err != nil {
		t.Fatal(err)
	}
	drop(t, f)
	want(t, b, []byte("B2"))
	want(t, tmp, []byte("B3"))
}

func TestSizeChangesCommitWithAnyFsync(t *testing.T) {
	f, mnt := mount(t, Options{})
	p, q := filepath.Join(mnt, "prealloc"), filepath.Join(mnt, "other")
	write(t, p, nil, true)
	syncDir(t, mnt)
	w, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Truncate(3 * pageSize); err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt([]byte("never synced"), 100); err != nil {
		t.Fatal(err)
	}
	w.Close()
	// Another file's fsync commits the journal: p's size with it, as on
	// ext4, but not p's data.
	write(t, q, []byte("q"), true)
	drop(t, f)
	want(t, p, make([]byte, 3*pageSize))
	want(t, q, []byte("q"))
}

// mmapWrite writes data at off of the file at p through a shared mapping,
// msyncing it or not. It runs in a child process: a FUSE server that
// faults in pages of its own mount deadlocks on its own address space.
func mmapWrite(p string, off int, data string, sync bool) error {
	fd, err := unix.Open(p, unix.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	mem, err := unix.Mmap(fd, 0, 3*pageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return err
	}
	copy(mem[off:], data)
	if sync {
		if err := unix.Msync(mem, unix.MS_SYNC); err != nil {
			return err
		}
	}
	return unix.Munmap(mem)
}

func TestMain(m *testing.M) {
	if p := os.Getenv("LAZYFS_MMAP_CHILD"); p != "" {
		off, _ := strconv.Atoi(os.Getenv("LAZYFS_MMAP_OFF"))
		if err := mmapWrite(p, off, os.Getenv("LAZYFS_MMAP_DATA"), os.Getenv("LAZYFS_MMAP_SYNC") != ""); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	leakcheck.Main(m)
}

func TestMmapWritesNeedMsync(t *testing.T) {
	f, mnt := mount(t, Options{})
	p := filepath.Join(mnt, "wal")
	write(t, p, make([]byte, 3*pageSize), true)
	syncDir(t, mnt)
	m := func(data string, off int, sync bool) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, os.Args[0])
		cmd.Env = append(os.Environ(), "LAZYFS_MMAP_CHILD="+p, "LAZYFS_MMAP_OFF="+strconv.Itoa(off), "LAZYFS_MMAP_DATA="+data)
		if sync {
			cmd.Env = append(cmd.Env, "LAZYFS_MMAP_SYNC=1")
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("mmap write in a child: %v\n%s", err, out)
		}
	}
	m("synced", 10, true)
	m("unsynced", pageSize+10, false)
	drop(t, f)
	exp := make([]byte, 3*pageSize)
	copy(exp[10:], "synced")
	want(t, p, exp)
}

func TestTornDropKeepsAPrefix(t *testing.T) {
	f, mnt := mount(t, Options{RecordWrites: true})
	p := filepath.Join(mnt, "log")
	write(t, p, []byte("head|"), true)
	syncDir(t, mnt)
	var full []byte
	full = append(full, "head|"...)
	var partial, whole, none int
	for seed := range uint64(12) {
		w, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 20 {
			rec := bytes.Repeat([]byte{byte('a' + i)}, 100)
			if _, err := w.Write(rec); err != nil {
				t.Fatal(err)
			}
		}
		w.Close()
		exp := bytes.Clone(full)
		for i := range 20 {
			exp = append(exp, bytes.Repeat([]byte{byte('a' + i)}, 100)...)
		}
		st, err := f.DropTorn(rand.New(rand.NewPCG(seed, 7)))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(exp, got) || len(got) < len(full) {
			t.Fatalf("seed %d: torn drop left %d bytes that are not a prefix of the writes at least as long as the synced %d", seed, len(got), len(full))
		}
		switch {
		case len(got) == len(full):
			none++
		case len(got) == len(exp):
			whole++
		default:
			partial++
		}
		t.Logf("seed %d: %v; %d of %d unsynced bytes kept", seed, st, len(got)-len(full), len(exp)-len(full))
		// What is left is durable now, as after a reboot.
		full = got
		if fd, err := os.OpenFile(p, os.O_WRONLY, 0); err == nil {
			_ = fd.Sync()
			fd.Close()
		}
	}
	if partial == 0 {
		t.Errorf("12 torn drops never kept part of the unsynced writes (none %d, whole %d)", none, whole)
	}
}

func TestBitFlipsOnRead(t *testing.T) {
	f, mnt := mount(t, Options{})
	data := bytes.Repeat([]byte{0x55}, 8192)
	p := filepath.Join(mnt, "sst")
	write(t, p, data, true)
	write(t, filepath.Join(mnt, "other"), data, true)
	f.SetFlips(func(rel string) bool { return rel == "sst" }, 1, 1)
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	flipped := 0
	for i := range data {
		flipped += bits.OnesCount8(got[i] ^ data[i])
	}
	if flipped == 0 || int64(flipped) != f.Flipped() {
		t.Fatalf("%d bits differ, the FS says it flipped %d", flipped, f.Flipped())
	}
	want(t, filepath.Join(mnt, "other"), data)
	f.SetFlips(nil, 0, 0)
}

func TestCleanupStaleUnmountsLeftovers(t *testing.T) {
	if err := Available(); err != nil {
		t.Skipf("no FUSE here: %v", err)
	}
	dir := t.TempDir()
	f, err := Mount(filepath.Join(dir, "disk"), filepath.Join(dir, "mnt"), Options{Name: "lazyfs-stale-test"})
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "mnt", "x"), []byte("x"), true)
	got := CleanupStale("lazyfs-stale-test")
	if len(got) != 1 || got[0] != f.Mountpoint() {
		t.Fatalf("CleanupStale unmounted %v, want [%s]", got, f.Mountpoint())
	}
	// Unmounted already: Unmount only waits for the server.
	if err := f.Unmount(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "mnt", "x")); err == nil {
		t.Fatal("the file is still visible at the mount point")
	}
	want(t, filepath.Join(dir, "disk", "x"), []byte("x"))
}

// TestUnmountReachesCopiedNamespaces copies the mount namespace while the
// FS is mounted, as `ip netns exec` does for every node the harness starts,
// and expects the unmount to reach the copy, so the server stops.
func TestUnmountReachesCopiedNamespaces(t *testing.T) {
	if err := Available(); err != nil {
		t.Skipf("no FUSE here: %v", err)
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("no unshare(1) to copy the mount namespace")
	}
	dir := t.TempDir()
	f, err := Mount(filepath.Join(dir, "disk"), filepath.Join(dir, "mnt"), Options{Name: "lazyfs-test"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// A slave copy, as ip netns exec makes, held open for the test.
	cmd := exec.CommandContext(ctx, "unshare", "-m", "--propagation", "slave", "sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cancel()
		_ = cmd.Wait()
	}()
	// unshare runs sleep once it has copied the namespace.
	ours, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		t.Fatal(err)
	}
	proc := fmt.Sprintf("/proc/%d/", cmd.Process.Pid)
	eventually.True(t, 10*time.Second, "unshare to copy the mount namespace", func() bool {
		comm, _ := os.ReadFile(proc + "comm")
		ns, err := os.Readlink(proc + "ns/mnt")
		return string(comm) == "sleep\n" && err == nil && ns != ours
	})
	if err := f.Unmount(5 * time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestSlowOperationsAreReported(t *testing.T) {
	var mu sync.Mutex
	var lines []string
	f, mnt := mount(t, Options{SlowOp: time.Nanosecond, Logf: func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		lines = append(lines, fmt.Sprintf(format, args...))
	}})
	write(t, filepath.Join(mnt, "a"), []byte("a"), true)
	mu.Lock()
	defer mu.Unlock()
	if f.Slow() == 0 || int64(len(lines)) != f.Slow() || !strings.Contains(strings.Join(lines, "\n"), ": write took ") {
		t.Fatalf("%d slow operations counted, reported: %q", f.Slow(), lines)
	}
}

func TestSparseFilesRollBack(t *testing.T) {
	f, mnt := mount(t, Options{})
	p := filepath.Join(mnt, "sparse")
	w, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// A hole of 1 MiB, one page of data, another hole: synced.
	if _, err := w.WriteAt(bytes.Repeat([]byte("d"), pageSize), 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := w.Truncate(4 << 20); err != nil {
		t.Fatal(err)
	}
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	exp := make([]byte, 4<<20)
	copy(exp[1<<20:], bytes.Repeat([]byte("d"), pageSize))
	// Overwrite all of it, then cut it short, without a sync.
	if _, err := w.WriteAt(bytes.Repeat([]byte("x"), 4<<20), 0); err != nil {
		t.Fatal(err)
	}
	if err := w.Truncate(1000); err != nil {
		t.Fatal(err)
	}
	w.Close()
	drop(t, f)
	want(t, p, exp)
}
