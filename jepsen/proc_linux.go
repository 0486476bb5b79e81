//go:build linux

package jepsen

import (
	"os"
	"strconv"
	"strings"
	"syscall"
)

// sysProcAttr makes a node die with the harness: if the harness crashes,
// the kernel kills its nodes, even paused ones.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// procStartTime is a process's start time in clock ticks since boot, which
// tells a process from a later one that reused its pid.
func procStartTime(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	s := string(b)
	// The command name may hold spaces; fields count from after it.
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return ""
	}
	return f[19]
}

func killPid(pid int) {
	_ = syscall.Kill(pid, syscall.SIGKILL)
}

// lockRun takes the machine-wide lock of harness runs: namespaces, bridge
// and the stale-process list are shared by every run on the machine.
func lockRun(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		return nil, errAnotherRun
	}
	return func() { _ = f.Close() }, nil
}
