//go:build unix

package wsfront

import "syscall"

// openFilesLimit is the process's open-files limit (RLIMIT_NOFILE, the
// soft one: Go raises it to the hard one at startup), or 0 when unknown.
func openFilesLimit() uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	return uint64(rl.Cur)
}
