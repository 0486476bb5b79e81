package wstest

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/protocol"
)

// RawConn is a websocket client that reads only when told to, to play a
// consumer that falls behind.
type RawConn struct {
	// Conn is the TCP connection, after the handshake.
	Conn net.Conn
	r    *bufio.Reader
}

// DialRaw opens a websocket to base (http://host:port) with a small
// receive buffer, which makes the socket fall behind sooner.
func DialRaw(t testing.TB, base string) *RawConn {
	t.Helper()
	return DialRawBuffer(t, base, 4096)
}

// DialRawBuffer is DialRaw with the given receive buffer (0: the
// system's). A tiny buffer also makes reading megabytes later crawl (the
// peer's window opens by a few KB per delayed ACK), so a test that reads
// big frames after not reading keeps the system's.
func DialRawBuffer(t testing.TB, base string, readBuffer int) *RawConn {
	t.Helper()
	addr := strings.TrimPrefix(base, "http://")
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	if tc, ok := conn.(*net.TCPConn); ok && readBuffer > 0 {
		_ = tc.SetReadBuffer(readBuffer)
	}
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: %s\r\n\r\n",
		addr, base64.StdEncoding.EncodeToString(key), protocol.Subprotocol)
	r := bufio.NewReader(conn)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(r, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	_ = conn.SetReadDeadline(time.Time{})
	return &RawConn{Conn: conn, r: r}
}

// Send writes one masked text frame, as clients must.
func (c *RawConn) Send(t testing.TB, text string) {
	t.Helper()
	frame := []byte{0x81}
	n := len(text)
	switch {
	case n < 126:
		frame = append(frame, 0x80|byte(n))
	case n < 1<<16:
		frame = append(frame, 0x80|126)
		frame = binary.BigEndian.AppendUint16(frame, uint16(n))
	default:
		frame = append(frame, 0x80|127)
		frame = binary.BigEndian.AppendUint64(frame, uint64(n))
	}
	mask := []byte{1, 2, 3, 4}
	frame = append(frame, mask...)
	for i := range n {
		frame = append(frame, text[i]^mask[i%4])
	}
	if _, err := c.Conn.Write(frame); err != nil {
		t.Fatal(err)
	}
}

// Websocket opcodes RawConn reads.
const (
	opText  = 0x1
	opClose = 0x8
)

// readFrame reads the next frame's opcode and payload.
func (c *RawConn) readFrame() (byte, []byte, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := uint64(hdr[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(c.r, b[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(c.r, b[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(c.r, payload); err != nil {
		return 0, nil, err
	}
	return hdr[0] & 0x0f, payload, nil
}

// CloseCode reads frames until the node's close frame and returns its
// code; ok is false if the connection ended without one (the close frame
// could not be written to a socket this far behind).
func (c *RawConn) CloseCode() (code uint16, ok bool) {
	_ = c.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		op, payload, err := c.readFrame()
		if err != nil {
			return 0, false
		}
		if op == opClose && len(payload) >= 2 {
			return binary.BigEndian.Uint16(payload), true
		}
	}
}

// ReadText reads the next text frame as JSON, skipping control frames; a
// close frame or a dead connection is an error.
func (c *RawConn) ReadText(timeout time.Duration) (Obj, error) {
	_ = c.Conn.SetReadDeadline(time.Now().Add(timeout))
	for {
		op, payload, err := c.readFrame()
		if err != nil {
			return nil, err
		}
		switch op {
		case opText:
			var f Obj
			if err := json.Unmarshal(payload, &f); err != nil {
				return nil, fmt.Errorf("invalid JSON from the server: %v", err)
			}
			return f, nil
		case opClose:
			code := uint16(0)
			if len(payload) >= 2 {
				code = binary.BigEndian.Uint16(payload)
			}
			return nil, fmt.Errorf("server closed the socket with %d %q", code, payload[min(len(payload), 2):])
		}
	}
}
