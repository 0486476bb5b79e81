// Package lazyfs is a FUSE filesystem for the consistency harness that
// forgets, on command, what was written but not fsynced: the page cache a
// power cut takes with it. It passes every operation through to a backing
// directory (a loopback), so what a process reads is what it wrote, and
// keeps on the side what a power cut would restore:
//
//   - File data. The first time a byte range of a file is overwritten or
//     truncated away after the file's last fsync or fdatasync, the FS saves
//     the range's old content (a before-image, per 4 KiB page; an all-zero
//     page costs nothing) and the file's size at that sync. Drop writes the
//     before-images back and truncates the file to that size. An fsync
//     forgets the file's before-images: its content is durable. Files are
//     tracked by backing inode, so a renamed or unlinked file rolls back too.
//   - Directory entries and sizes (metadata). Creating, linking,
//     unlinking and renaming are recorded in one journal, in order; an
//     unlinked or replaced file is moved aside (to a trash directory beside
//     the backing one) rather than deleted. Drop undoes the journal from
//     its end. By default the FS behaves as a journaling filesystem (ext4,
//     XFS) does: any fsync or fdatasync, of any file or directory, commits
//     the whole journal, and with it the sizes truncate and fallocate set
//     (the bytes they expose read as zeros after a drop unless the file's
//     own fsync made its data durable). So a file renamed into place
//     without an fsync of its data comes back empty, the classic
//     zero-length-file bug. With Options.StrictMetadata it holds to POSIX's
//     letter instead: a directory's fsync commits the journal up to the
//     last entry that touched that directory, and a file's fsync its own
//     data and size, nothing else. The durable part of the journal is
//     always a prefix of it.
//
// What it does not model: writes reordered within a file (a file is rolled
// back as a whole, or, with DropTorn, keeps a prefix of its unsynced
// writes in the order they were made); data that reached the disk without
// an fsync (the FS drops every unsynced byte, the worst case a real disk
// may show); metadata other than names and sizes (modes, times, xattrs
// pass through and are kept); fsync failures; and the durability of the
// backing directory itself: fsync never reaches the backing disk, since
// the harness, not the machine, decides what a power cut keeps.
//
// Two more faults are offered for the corruption work: DropTorn keeps a
// random prefix of each file's unsynced writes (the last one possibly cut
// mid-write), and SetFlips flips one random bit in reads of matching files.
//
// The FS runs inside the process that mounts it, on /dev/fuse with
// DirectMount (no fusermount binary), as root. Drop works while mounted,
// but only when no process has a file of the mount open (the harness kills
// the node first): writes in flight would race the rollback. It tells the
// kernel to forget cached pages and names it rolled back, and file pages
// are reloaded at each open anyway. The process must not touch its own
// mount through a shared mapping: a page fault it takes there waits on a
// FUSE server that needs its address space to answer.
//
// The FUSE mount sits on a shared bind mount of its mount point, so that
// an unmount reaches the slave copies other mount namespaces made of it
// (ip netns exec makes one per node the harness starts); a copy the
// unmount does not reach keeps the server alive until its process exits.
package lazyfs
