package admin

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Offline backup: a tar.gz of a stopped node's data directory (raft logs
// and snapshots in raft/, room state in state/) with a manifest that lists
// every file with its size and SHA-256. A running node's files change under
// the reader and badger's are not consistent until it closes, so a backup
// first takes the locks the node's databases hold while open (badger's
// directories, raft-bolt's database files) and keeps them until it is
// done: a running node makes it fail, and a node started meanwhile fails to
// open its storage.

// ManifestName is the manifest's name in the archive; it is the archive's
// last entry, written once every file has been hashed.
const ManifestName = "herald-backup.json"

// Manifest format.
const (
	ManifestFormat  = "herald-backup"
	ManifestVersion = 1
)

// ErrInUse says a data directory belongs to a running node.
var ErrInUse = errors.New("the data directory is in use by a running node")

// Manifest describes a backup.
type Manifest struct {
	Format    string         `json:"format"`
	Version   int            `json:"version"`
	Created   time.Time      `json:"created"`
	Host      string         `json:"host,omitempty"`
	SourceDir string         `json:"source_dir"`
	Files     []ManifestFile `json:"files"`
	Dirs      []string       `json:"dirs"`
	Bytes     int64          `json:"bytes"`
}

// ManifestFile is one file of a backup, by its slash-separated path in the
// data directory.
type ManifestFile struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	Mode   uint32 `json:"mode"`
	SHA256 string `json:"sha256"`
}

// lockTargets finds what a running node holds locks on: every badger
// directory (badger flocks the directory itself; its LOCK file only holds
// the pid) and every raft-bolt database file (bbolt flocks the file).
func lockTargets(dir string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch {
		case d.IsDir() && (exists(filepath.Join(p, "MANIFEST")) || exists(filepath.Join(p, "KEYREGISTRY"))):
			out = append(out, p)
		case d.Type().IsRegular() && filepath.Base(filepath.Dir(p)) == "raft-bolt" && strings.HasSuffix(d.Name(), ".db"):
			out = append(out, p)
		}
		return nil
	})
	return out, err
}

// lockDataDir takes every lock a running node would hold in dir, or fails
// with ErrInUse.
func lockDataDir(dir string) (release func(), err error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", dir)
	}
	if !exists(filepath.Join(dir, "state")) && !exists(filepath.Join(dir, "raft")) {
		return nil, fmt.Errorf("%s does not look like a Herald data directory: it has neither state/ nor raft/", dir)
	}
	files, err := lockTargets(dir)
	if err != nil {
		return nil, err
	}
	var releases []func()
	release = func() {
		for _, r := range slices.Backward(releases) {
			r()
		}
	}
	for _, f := range files {
		rel, err := tryLock(f)
		if err != nil {
			release()
			if errors.Is(err, ErrInUse) {
				return nil, fmt.Errorf("%w: %s is locked; stop the node first", ErrInUse, f)
			}
			return nil, fmt.Errorf("lock %s: %w", f, err)
		}
		releases = append(releases, rel)
	}
	return release, nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// BackupFile writes a backup of the stopped node's data directory dataDir
// to the new file out. It refuses a directory in use (ErrInUse) and an out
// that exists or lies inside dataDir.
func BackupFile(dataDir, out string) (*Manifest, error) {
	realData, err := realPath(dataDir)
	if err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	absOut, err := filepath.Abs(out)
	if err != nil {
		return nil, err
	}
	// The file does not exist yet, so its directory is what a symlink
	// could lead into the data directory.
	outDir, err := realPath(filepath.Dir(absOut))
	if err != nil {
		return nil, fmt.Errorf("directory of the backup file: %w", err)
	}
	absOut = filepath.Join(outDir, filepath.Base(absOut))
	if rel, err := filepath.Rel(realData, absOut); err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return nil, fmt.Errorf("the backup file %s must not be inside the data directory %s (it resolves to %s)", out, dataDir, absOut)
	}
	if exists(absOut) {
		return nil, fmt.Errorf("%s exists; choose a new file name", out)
	}
	// Written beside the target and renamed at the end, so that a backup
	// cut off halfway never looks like a complete one.
	tmp, err := os.CreateTemp(outDir, "."+filepath.Base(absOut)+".tmp-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	m, err := Backup(realData, tmp)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	if exists(absOut) {
		return nil, fmt.Errorf("%s appeared during the backup; not overwriting it", out)
	}
	if err := os.Rename(tmp.Name(), absOut); err != nil {
		return nil, err
	}
	return m, nil
}

// realPath is p made absolute with every symlink in it resolved; p must
// exist.
func realPath(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	return filepath.EvalSymlinks(abs)
}

// Backup writes a tar.gz of the stopped node's data directory to w. When w
// is a file inside the directory, the file itself is left out of the
// archive.
func Backup(dataDir string, w io.Writer) (*Manifest, error) {
	// The walk below does not follow symlinks, so a data directory reached
	// through one would otherwise back up as empty.
	dataDir, err := realPath(dataDir)
	if err != nil {
		return nil, err
	}
	release, err := lockDataDir(dataDir)
	if err != nil {
		return nil, err
	}
	defer release()
	// The archive being written must not archive itself, however the
	// caller's path led into the directory (bind mounts, hard links).
	var self os.FileInfo
	if f, ok := w.(*os.File); ok {
		self, _ = f.Stat()
	}
	m := &Manifest{Format: ManifestFormat, Version: ManifestVersion, Created: time.Now().UTC(), SourceDir: dataDir, Files: []ManifestFile{}, Dirs: []string{}}
	m.Host, _ = os.Hostname()
	gz := gzip.NewWriter(w)
	tw := tar.NewWriter(gz)
	err = filepath.WalkDir(dataDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dataDir, p)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		name := filepath.ToSlash(rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			m.Dirs = append(m.Dirs, name)
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: int64(info.Mode().Perm()), ModTime: info.ModTime()})
		case !d.Type().IsRegular():
			return fmt.Errorf("%s is not a regular file or directory; a data directory holds only those", p)
		case d.Name() == "LOCK":
			// Process state of the database that held it, not data.
			return nil
		case self != nil && os.SameFile(self, info):
			return nil
		}
		return addFile(tw, m, p, name, info)
	})
	if err != nil {
		return nil, fmt.Errorf("back up %s: %w", dataDir, err)
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: ManifestName, Mode: 0o644, Size: int64(len(b)), ModTime: m.Created}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(b); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	return m, nil
}

func addFile(tw *tar.Writer, m *Manifest, p, name string, info fs.FileInfo) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: int64(info.Mode().Perm()), Size: info.Size(), ModTime: info.ModTime()}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tw, h), io.LimitReader(f, info.Size()))
	if err != nil {
		return err
	}
	if n != info.Size() {
		return fmt.Errorf("%s shrank while it was read: is the node really stopped?", p)
	}
	m.Files = append(m.Files, ManifestFile{Path: name, Size: n, Mode: uint32(info.Mode().Perm()), SHA256: hex.EncodeToString(h.Sum(nil))})
	m.Bytes += n
	return nil
}

// RestoreFile restores the backup in file in into dataDir, which must not
// exist or be empty.
func RestoreFile(in, dataDir string) (*Manifest, error) {
	f, err := os.Open(in)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Restore(f, dataDir)
}

// maxManifestBytes bounds the manifest a restore reads into memory.
const maxManifestBytes = 256 << 20

// Restore unpacks a backup into dataDir, which must not exist or be empty.
// The manifest is the archive's last entry, and nothing may be written
// before it is known: an archive whose entries do not match it (a damaged
// one, or a few megabytes of gzip that inflate to gigabytes) must be
// refused at its first wrong entry, not after filling the disk. So Restore
// reads r twice: once to the end for the manifest, writing nothing, then
// again from the start to unpack, checking each entry's name and size
// against the manifest before writing it and its checksum right after. It
// unpacks into a directory beside dataDir and moves it into place only once
// every file matched, so a damaged or partial archive leaves nothing
// behind.
func Restore(r io.ReadSeeker, dataDir string) (*Manifest, error) {
	dataDir = filepath.Clean(dataDir)
	if entries, err := os.ReadDir(dataDir); err == nil && len(entries) > 0 {
		return nil, fmt.Errorf("%s is not empty; restore only into a new or empty directory", dataDir)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	m, raw, err := readManifest(r)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("restore: rewind the archive: %w", err)
	}
	parent := filepath.Dir(dataDir)
	if err := os.MkdirAll(parent, 0o750); err != nil {
		return nil, err
	}
	staging, err := os.MkdirTemp(parent, "."+filepath.Base(dataDir)+".restore-*")
	if err != nil {
		return nil, err
	}
	done := false
	defer func() {
		if !done {
			os.RemoveAll(staging)
		}
	}()
	if err := unpack(r, staging, m, raw); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	if exists(dataDir) {
		if err := os.Remove(dataDir); err != nil { // empty, checked above
			return nil, err
		}
	}
	if err := os.Rename(staging, dataDir); err != nil {
		return nil, err
	}
	done = true
	return m, nil
}

// readManifest reads the whole archive without writing anything, checks
// its shape (safe names, only files and directories, the manifest last)
// and returns the manifest, checked for consistency, with its bytes.
func readManifest(r io.Reader) (*Manifest, []byte, error) {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return nil, nil, fmt.Errorf("not a gzip archive: %w", err)
	}
	defer gz.Close()
	tr := tar.NewReader(gz)
	var raw []byte
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("read archive: %w", err)
		}
		if raw != nil {
			return nil, nil, fmt.Errorf("archive has %s after the manifest; it is not a Herald backup", hdr.Name)
		}
		name, err := entryName(hdr.Name)
		if err != nil {
			return nil, nil, err
		}
		switch {
		case name == ManifestName && hdr.Typeflag == tar.TypeReg:
			if hdr.Size > maxManifestBytes {
				return nil, nil, fmt.Errorf("manifest of %d bytes is implausibly large", hdr.Size)
			}
			if raw, err = io.ReadAll(io.LimitReader(tr, maxManifestBytes)); err != nil {
				return nil, nil, fmt.Errorf("read manifest: %w", err)
			}
		case hdr.Typeflag == tar.TypeDir, hdr.Typeflag == tar.TypeReg:
		default:
			return nil, nil, fmt.Errorf("archive entry %s has type %q; a Herald backup holds only files and directories", hdr.Name, hdr.Typeflag)
		}
	}
	if raw == nil {
		return nil, nil, fmt.Errorf("the archive has no %s: it is not a Herald backup, or it was cut off", ManifestName)
	}
	m := &Manifest{}
	if err := json.Unmarshal(raw, m); err != nil {
		return nil, nil, fmt.Errorf("manifest: %w", err)
	}
	if m.Format != ManifestFormat || m.Version != ManifestVersion {
		return nil, nil, fmt.Errorf("manifest says format %q version %d; this build reads %q version %d", m.Format, m.Version, ManifestFormat, ManifestVersion)
	}
	var total int64
	seen := make(map[string]bool, len(m.Files))
	for _, f := range m.Files {
		if name, err := entryName(f.Path); err != nil || name == ManifestName {
			return nil, nil, fmt.Errorf("manifest lists the unusable path %q", f.Path)
		}
		if seen[f.Path] {
			return nil, nil, fmt.Errorf("manifest lists %s twice", f.Path)
		}
		seen[f.Path] = true
		if f.Size < 0 || f.Size > m.Bytes-total {
			return nil, nil, fmt.Errorf("manifest lists %s with %d bytes, more than the %d bytes it says the backup holds", f.Path, f.Size, m.Bytes)
		}
		total += f.Size
	}
	if total != m.Bytes {
		return nil, nil, fmt.Errorf("manifest files add up to %d bytes, not the %d it says: it is damaged", total, m.Bytes)
	}
	return m, raw, nil
}

// unpack writes the archive's files and directories into dir, refusing it
// at the first entry that m does not list with that size, and at the first
// file whose checksum differs. raw is the manifest as read before: the
// archive must not have changed since.
func unpack(r io.Reader, dir string, m *Manifest, raw []byte) error {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return fmt.Errorf("not a gzip archive: %w", err)
	}
	defer gz.Close()
	tr := tar.NewReader(gz)
	want := make(map[string]ManifestFile, len(m.Files))
	for _, f := range m.Files {
		want[f.Path] = f
	}
	written := int64(0)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return fmt.Errorf("the archive has no %s any more: it changed during the restore", ManifestName)
		}
		if err != nil {
			return fmt.Errorf("read archive: %w", err)
		}
		name, err := entryName(hdr.Name)
		if err != nil {
			return err
		}
		switch {
		case name == ManifestName && hdr.Typeflag == tar.TypeReg:
			b, err := io.ReadAll(io.LimitReader(tr, maxManifestBytes))
			if err != nil {
				return fmt.Errorf("read manifest: %w", err)
			}
			if !bytes.Equal(b, raw) {
				return fmt.Errorf("the manifest changed during the restore")
			}
			for _, f := range m.Files {
				if _, left := want[f.Path]; left {
					return fmt.Errorf("%s is in the manifest but not in the archive", f.Path)
				}
			}
			return nil
		case hdr.Typeflag == tar.TypeDir:
			if err := os.MkdirAll(filepath.Join(dir, filepath.FromSlash(name)), 0o750); err != nil {
				return err
			}
		case hdr.Typeflag == tar.TypeReg:
			f, ok := want[name]
			switch {
			case !ok && slices.ContainsFunc(m.Files, func(f ManifestFile) bool { return f.Path == name }):
				return fmt.Errorf("archive holds %s twice", name)
			case !ok:
				return fmt.Errorf("%s is in the archive but not in the manifest", name)
			case hdr.Size != f.Size:
				return fmt.Errorf("%s is %d bytes in the archive but %d in the manifest: the archive is damaged", name, hdr.Size, f.Size)
			case f.Size > m.Bytes-written:
				return fmt.Errorf("%s would take the restore past the %d bytes the manifest says the backup holds", name, m.Bytes)
			}
			delete(want, name)
			u, err := writeEntry(io.LimitReader(tr, f.Size), filepath.Join(dir, filepath.FromSlash(name)), hdr)
			if err != nil {
				return fmt.Errorf("unpack %s: %w", name, err)
			}
			written += u.size
			if u.size != f.Size || u.sum != f.SHA256 {
				return fmt.Errorf("%s does not match the manifest (size %d, want %d; checksum %s, want %s): the archive is damaged", name, u.size, f.Size, u.sum, f.SHA256)
			}
		default:
			return fmt.Errorf("archive entry %s has type %q; a Herald backup holds only files and directories", hdr.Name, hdr.Typeflag)
		}
	}
}

// entryName cleans an archive path and refuses one that would land outside
// the target directory.
func entryName(raw string) (string, error) {
	name := strings.TrimSuffix(raw, "/")
	clean := path.Clean(name)
	if name == "" || clean != name || path.IsAbs(clean) || clean == "." || clean == ".." || strings.HasPrefix(clean, "../") ||
		strings.Contains(name, "\\") || strings.ContainsRune(name, 0) {
		return "", fmt.Errorf("archive entry %q has an unsafe path; it is not a Herald backup", raw)
	}
	return clean, nil
}

// unpacked is what writeEntry wrote: its size and SHA-256.
type unpacked struct {
	size int64
	sum  string
}

func writeEntry(r io.Reader, p string, hdr *tar.Header) (unpacked, error) {
	if hdr.Size < 0 {
		return unpacked{}, fmt.Errorf("negative size %d", hdr.Size)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
		return unpacked{}, err
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fs.FileMode(hdr.Mode).Perm()|0o600)
	if err != nil {
		return unpacked{}, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), r)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return unpacked{}, err
	}
	return unpacked{size: n, sum: hex.EncodeToString(h.Sum(nil))}, nil
}
