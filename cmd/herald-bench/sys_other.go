//go:build !linux

package main

import (
	"errors"
	"os/exec"
	"time"
)

var errNoProc = errors.New("process statistics need Linux's /proc")

func setBindNoPort(uintptr) error        { return nil }
func selfCPU() time.Duration             { return 0 }
func procRSS(int) (int64, error)         { return 0, errNoProc }
func procCPU(int) (time.Duration, error) { return 0, errNoProc }
func openFileLimit() (uint64, error)     { return 0, errNoProc }
func machineBusy() (time.Duration, bool) { return 0, false }
func ephemeralPorts() int                { return 28000 }
func childAttrs(*exec.Cmd)               {}
