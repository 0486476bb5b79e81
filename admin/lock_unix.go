//go:build unix

package admin

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// tryLock takes the flock that badger (on its directory) and bbolt (on its
// file) hold on path while a database is open. Locks taken through another open file conflict even
// within one process, so a node running in this process counts too.
func tryLock(path string) (release func(), err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, ErrInUse
		}
		return nil, fmt.Errorf("flock: %w", err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
