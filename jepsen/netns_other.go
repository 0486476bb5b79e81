//go:build !linux

package jepsen

import (
	"net"
	"time"
)

const netnsSupported = false

func listenIn(string, string) (net.Listener, error) { return nil, errUnsupported }

func dialIn(string, string, time.Duration) (net.Conn, error) { return nil, errUnsupported }
