//go:build !unix

package admin

import "errors"

// tryLock cannot tell a running node's files from a stopped one's without
// flock, and a backup of a running node is not consistent, so it refuses.
func tryLock(string) (func(), error) {
	return nil, errors.New("offline backup needs flock, which this platform lacks")
}
