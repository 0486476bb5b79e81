//go:build !unix

package wsfront

// openFilesLimit is unknown on systems without RLIMIT_NOFILE.
func openFilesLimit() uint64 { return 0 }
