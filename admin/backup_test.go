package admin_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/heraldhq/herald/admin"
)

// fakeDataDir lays out files the way a stopped node leaves them.
func fakeDataDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	files := map[string]string{
		"herald-node.json":               `{"node_id":"n1"}`,
		"state/MANIFEST":                 "m",
		"state/000001.sst":               strings.Repeat("s", 5000),
		"state/LOCK":                     "1234\n", // left by a crash: not data
		"raft/raft-badger/MANIFEST":      "m",
		"raft/raft-badger/000001.vlog":   "v",
		"raft/snapshots/g1/snapshots/x":  "snap",
		"raft/raft-bolt/group-1.db":      "bolt",
		"raft/snapshots/g2/snapshots/.k": "",
	}
	for name, body := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "raft", "empty"), 0o750); err != nil {
		t.Fatal(err)
	}
	return dir
}

func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if info.IsDir() {
			out[rel+"/"] = ""
			return nil
		}
		b, err := os.ReadFile(p)
		out[rel] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestAdminBackupRoundTrip(t *testing.T) {
	dir := fakeDataDir(t)
	out := filepath.Join(t.TempDir(), "b.tar.gz")
	m, err := admin.BackupFile(dir, out)
	if err != nil {
		t.Fatal(err)
	}
	if m.Format != admin.ManifestFormat || len(m.Files) != 8 {
		t.Fatalf("manifest: %+v", m)
	}
	target := filepath.Join(t.TempDir(), "new", "data")
	if _, err := admin.RestoreFile(out, target); err != nil {
		t.Fatal(err)
	}
	want := tree(t, dir)
	delete(want, filepath.Join("state", "LOCK"))
	got := tree(t, target)
	if len(got) != len(want) {
		t.Fatalf("restored tree %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("restored %s = %q, want %q", k, got[k], v)
		}
	}
	// An empty directory is a fine target; a non-empty one is not.
	empty := t.TempDir()
	if _, err := admin.RestoreFile(out, empty); err != nil {
		t.Fatalf("restore into an empty dir: %v", err)
	}
	if _, err := admin.RestoreFile(out, empty); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("restore into a non-empty dir: %v", err)
	}
	if _, err := admin.BackupFile(dir, out); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("backup over an existing file: %v", err)
	}
	if _, err := admin.BackupFile(dir, filepath.Join(dir, "inside.tar.gz")); err == nil {
		t.Fatal("backup into the data dir itself was accepted")
	}
	if _, err := admin.BackupFile(t.TempDir(), filepath.Join(t.TempDir(), "x.tar.gz")); err == nil || !strings.Contains(err.Error(), "Herald data directory") {
		t.Fatalf("backup of a dir that is not a node's: %v", err)
	}
}

// rewrite copies a backup archive, letting edit change or drop entries and
// add some at the end.
func rewrite(t *testing.T, archive []byte, edit func(h *tar.Header, body []byte) ([]byte, bool), extra ...func(*tar.Writer)) []byte {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	var buf bytes.Buffer
	gw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gw)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		body, keep := edit(h, body)
		if !keep {
			continue
		}
		h.Size = int64(len(body))
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(body)
	}
	for _, e := range extra {
		e(tw)
	}
	tw.Close()
	gw.Close()
	return buf.Bytes()
}

func TestAdminRestoreRefusesDamagedArchives(t *testing.T) {
	var good bytes.Buffer
	if _, err := admin.Backup(fakeDataDir(t), &good); err != nil {
		t.Fatal(err)
	}
	keep := func(h *tar.Header, b []byte) ([]byte, bool) { return b, true }
	addEntry := func(name string, typ byte) func(*tar.Writer) {
		return func(tw *tar.Writer) {
			tw.WriteHeader(&tar.Header{Name: name, Typeflag: typ, Mode: 0o644, Size: 1, Linkname: "/etc/passwd"})
			if typ == tar.TypeReg {
				tw.Write([]byte("x"))
			}
		}
	}
	for name, tc := range map[string]struct {
		archive []byte
		want    string
	}{
		"changed file": {rewrite(t, good.Bytes(), func(h *tar.Header, b []byte) ([]byte, bool) {
			if h.Name == "state/000001.sst" {
				b = bytes.ToUpper(b)
			}
			return b, true
		}), "does not match the manifest"},
		"missing file": {rewrite(t, good.Bytes(), func(h *tar.Header, b []byte) ([]byte, bool) {
			return b, h.Name != "raft/raft-badger/MANIFEST"
		}), "not in the archive"},
		"no manifest": {rewrite(t, good.Bytes(), func(h *tar.Header, b []byte) ([]byte, bool) {
			return b, h.Name != admin.ManifestName
		}), "no herald-backup.json"},
		"entry after the manifest": {rewrite(t, good.Bytes(), keep, addEntry("state/extra", tar.TypeReg)), "after the manifest"},
		"escaping path": {rewrite(t, good.Bytes(), func(h *tar.Header, b []byte) ([]byte, bool) {
			if h.Name == "state/000001.sst" {
				h.Name = "../evil"
			}
			return b, true
		}), "unsafe path"},
		"absolute path": {rewrite(t, good.Bytes(), func(h *tar.Header, b []byte) ([]byte, bool) {
			if h.Name == "state/000001.sst" {
				h.Name = "/tmp/evil"
			}
			return b, true
		}), "unsafe path"},
		"symlink": {rewrite(t, good.Bytes(), func(h *tar.Header, b []byte) ([]byte, bool) {
			if h.Name == "state/000001.sst" {
				h.Typeflag, h.Linkname, b = tar.TypeSymlink, "/etc/passwd", nil
			}
			return b, true
		}), "only files and directories"},
		"cut off":   {good.Bytes()[:good.Len()/2], "restore: "},
		"not a gz":  {[]byte("hello"), "not a gzip archive"},
		"empty tar": {rewrite(t, good.Bytes(), func(*tar.Header, []byte) ([]byte, bool) { return nil, false }), "no herald-backup.json"},
	} {
		parent := t.TempDir()
		target := filepath.Join(parent, "data")
		_, err := admin.Restore(bytes.NewReader(tc.archive), target)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error about %q", name, err, tc.want)
		}
		if left, _ := os.ReadDir(parent); len(left) != 0 {
			t.Errorf("%s: a failed restore left %v behind", name, left)
		}
	}
}

// The inside-the-data-directory check resolves symlinks: an --out through
// a link into the data directory is refused before anything is written.
func TestAdminBackupRefusesOutThroughSymlink(t *testing.T) {
	dir := fakeDataDir(t)
	before := tree(t, dir)
	links := t.TempDir()
	for name, target := range map[string]string{"to-data": dir, "to-state": filepath.Join(dir, "state")} {
		link := filepath.Join(links, name)
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
		_, err := admin.BackupFile(dir, filepath.Join(link, "b.tar.gz"))
		if err == nil || !strings.Contains(err.Error(), "must not be inside the data directory") {
			t.Errorf("backup to %s/b.tar.gz (a link to %s): %v, want a refusal", name, target, err)
		}
	}
	for name := range tree(t, dir) {
		if _, ok := before[name]; !ok {
			t.Errorf("the refused backups left %s in the data directory", name)
		}
	}
}

// An archive written into the data directory it backs up leaves itself out.
func TestAdminBackupLeavesOutItsOwnFile(t *testing.T) {
	dir := fakeDataDir(t)
	f, err := os.Create(filepath.Join(dir, "own.tar.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := admin.Backup(dir, f)
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range m.Files {
		if mf.Path == "own.tar.gz" {
			t.Fatalf("the archive lists itself: %+v", mf)
		}
	}
}

// A data directory reached through a symlink is backed up whole.
func TestAdminBackupThroughSymlinkedDataDir(t *testing.T) {
	dir := fakeDataDir(t)
	link := filepath.Join(t.TempDir(), "data-link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	direct, err := admin.Backup(dir, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	linked, err := admin.BackupFile(link, filepath.Join(t.TempDir(), "b.tar.gz"))
	if err != nil {
		t.Fatal(err)
	}
	if len(linked.Files) != len(direct.Files) || linked.Bytes != direct.Bytes {
		t.Fatalf("backup through a link: %d files, %d bytes; directly: %d files, %d bytes",
			len(linked.Files), linked.Bytes, len(direct.Files), direct.Bytes)
	}
}

// stagingWatcher is an archive reader that, on every read, measures the
// bytes a restore has written so far beside its target, so a test sees
// what an archive made the restore write before it was refused.
type stagingWatcher struct {
	*bytes.Reader
	parent  string
	maxSeen int64
}

func (w *stagingWatcher) Read(p []byte) (int, error) {
	var n int64
	_ = filepath.WalkDir(w.parent, func(_ string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	w.maxSeen = max(w.maxSeen, n)
	return w.Reader.Read(p)
}

// An archive entry that disagrees with the manifest is refused before it
// is written, not after: a few kilobytes of gzip that inflate to 32 MiB
// must not put 32 MiB on the disk.
func TestAdminRestoreChecksEntriesBeforeWriting(t *testing.T) {
	var good bytes.Buffer
	if _, err := admin.Backup(fakeDataDir(t), &good); err != nil {
		t.Fatal(err)
	}
	const bomb = 32 << 20
	inflate := func(target string) []byte {
		return rewrite(t, good.Bytes(), func(h *tar.Header, b []byte) ([]byte, bool) {
			if h.Name == target {
				b = make([]byte, bomb)
			}
			return b, true
		})
	}
	// An extra entry, with the original manifest after it.
	extra := rewrite(t, good.Bytes(), func(h *tar.Header, b []byte) ([]byte, bool) { return b, h.Name != admin.ManifestName },
		func(tw *tar.Writer) {
			tw.WriteHeader(&tar.Header{Name: "state/huge", Typeflag: tar.TypeReg, Mode: 0o644, Size: bomb})
			tw.Write(make([]byte, bomb))
			m := manifestOf(t, good.Bytes())
			tw.WriteHeader(&tar.Header{Name: admin.ManifestName, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(m))})
			tw.Write(m)
		})
	for name, tc := range map[string]struct {
		archive []byte
		want    string
	}{
		"file inflated":                 {inflate("state/000001.sst"), "33554432 bytes in the archive but 5000 in the manifest"},
		"file not in the manifest":      {extra, "state/huge is in the archive but not in the manifest"},
		"manifest files over its total": {withManifest(t, good.Bytes(), func(m *admin.Manifest) { m.Files[0].Size = bomb }), "more than the"},
		"manifest total over its files": {withManifest(t, good.Bytes(), func(m *admin.Manifest) { m.Bytes++ }), "add up to"},
		"manifest lists a file twice":   {withManifest(t, good.Bytes(), func(m *admin.Manifest) { m.Files = append(m.Files, m.Files[0]) }), "twice"},
		"manifest lists an unsafe path": {withManifest(t, good.Bytes(), func(m *admin.Manifest) { m.Files[0].Path = "../x" }), "unusable path"},
	} {
		if len(tc.archive) > 1<<20 {
			t.Fatalf("%s: the archive is %d bytes; it should be small", name, len(tc.archive))
		}
		parent := t.TempDir()
		w := &stagingWatcher{Reader: bytes.NewReader(tc.archive), parent: parent}
		_, err := admin.Restore(w, filepath.Join(parent, "data"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error about %q", name, err, tc.want)
		}
		if w.maxSeen > 1<<20 {
			t.Errorf("%s: the restore wrote %d bytes before it refused the archive", name, w.maxSeen)
		}
		if left, _ := os.ReadDir(parent); len(left) != 0 {
			t.Errorf("%s: a failed restore left %v behind", name, left)
		}
	}
}

// manifestOf returns the manifest entry of an archive.
func manifestOf(t *testing.T, archive []byte) []byte {
	t.Helper()
	var m []byte
	rewrite(t, archive, func(h *tar.Header, b []byte) ([]byte, bool) {
		if h.Name == admin.ManifestName {
			m = b
		}
		return b, true
	})
	return m
}

// withManifest rewrites an archive's manifest.
func withManifest(t *testing.T, archive []byte, edit func(*admin.Manifest)) []byte {
	t.Helper()
	return rewrite(t, archive, func(h *tar.Header, b []byte) ([]byte, bool) {
		if h.Name == admin.ManifestName {
			var m admin.Manifest
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			edit(&m)
			var err error
			if b, err = json.Marshal(m); err != nil {
				t.Fatal(err)
			}
		}
		return b, true
	})
}
