//go:build linux

package jepsen

import (
	"context"
	"net"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

const netnsSupported = true

// inNetns runs f on a thread switched into the named namespace. A socket
// belongs to the namespace it was created in, so what f opens stays there
// after the thread is gone. The thread is left locked so that Go discards
// it instead of reusing it in the wrong namespace.
func inNetns(name string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		ns, err := os.Open("/var/run/netns/" + name)
		if err != nil {
			errc <- err
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- f()
	}()
	return <-errc
}

// listenIn listens on addr inside a namespace.
func listenIn(name, addr string) (net.Listener, error) {
	var ln net.Listener
	err := inNetns(name, func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	})
	return ln, err
}

// dialIn connects to addr from inside a namespace.
func dialIn(name, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := inNetns(name, func() (err error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		var d net.Dialer
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	return c, err
}
