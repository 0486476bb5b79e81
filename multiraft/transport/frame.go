package transport

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"
)

// MaxFrameSize caps the size of one frame (everything after its length
// prefix), so a broken or hostile peer cannot make a node allocate
// unbounded memory. Snapshot data is streamed after its frame and is not
// subject to this cap.
const MaxFrameSize = 64 << 20

const (
	protocolVersion = 2

	// frameHeaderLen is the length prefix, type, group id and request id.
	frameHeaderLen = 4 + 1 + 8 + 8

	// minFrameLen is the smallest valid value of the length prefix.
	minFrameLen = frameHeaderLen - 4

	// readChunk bounds up-front allocation for a large frame: its payload is
	// read in chunks so memory grows only as bytes actually arrive.
	readChunk = 1 << 20

	connBufferSize = 32 << 10

	// maxErrorLen bounds error messages sent to peers.
	maxErrorLen = 4096
)

var handshakeMagic = [4]byte{'H', 'R', 'L', 'D'}

// Connection kinds sent in the hello.
const (
	kindMux      byte = 1
	kindSnapshot byte = 2
)

// Frame types. Requests (types below 16 and ftCall/ftStreamOpen/ftCancel)
// only travel from the dialer of a connection to the acceptor.
const (
	ftAppendEntries   byte = 1
	ftRequestVote     byte = 2
	ftRequestPreVote  byte = 3
	ftTimeoutNow      byte = 4
	ftInstallSnapshot byte = 5

	ftRaftResp byte = 16 // status, then an encoded response or an error message

	ftCall       byte = 32 // service, request bytes
	ftCallResp   byte = 33 // status, then the reply or an error message
	ftStreamOpen byte = 34 // service, request bytes
	ftStreamMsg  byte = 35 // one message of a stream
	ftStreamEnd  byte = 36 // status, then empty or an error message
	ftCancel     byte = 37 // the caller gave up on a call or closed a stream
)

// Status bytes leading response payloads.
const (
	statusOK  byte = 0
	statusErr byte = 1
	// statusNotMember: the request was refused before anything ran
	// because the caller is not (yet) a member of the cluster here.
	statusNotMember byte = 2
)

// frame is one decoded frame. payload is owned by the frame: it is freshly
// allocated per frame so decoded messages may alias it.
type frame struct {
	typ     byte
	group   uint64
	id      uint64
	payload []byte
}

// newFrame starts a frame buffer; payload is appended to it and finishFrame
// fills in the length.
func newFrame(typ byte, group, id uint64, payloadHint int) []byte {
	b := make([]byte, frameHeaderLen, frameHeaderLen+payloadHint)
	b[4] = typ
	binary.BigEndian.PutUint64(b[5:13], group)
	binary.BigEndian.PutUint64(b[13:21], id)
	return b
}

// finishFrame writes the length prefix, refusing frames the peer would
// reject anyway.
func finishFrame(b []byte) ([]byte, error) {
	n := len(b) - 4
	if n > MaxFrameSize {
		return nil, fmt.Errorf("transport: frame of %d bytes exceeds the %d byte limit", n, MaxFrameSize)
	}
	binary.BigEndian.PutUint32(b[0:4], uint32(n))
	return b, nil
}

// statusFrame builds a response frame carrying either body or an error.
// A body too large for one frame turns into an error reply instead.
func statusFrame(typ byte, group, id uint64, body []byte, err error) []byte {
	if err == nil {
		b := newFrame(typ, group, id, 1+len(body))
		b = append(b, statusOK)
		b = append(b, body...)
		fb, ferr := finishFrame(b)
		if ferr == nil {
			return fb
		}
		err = ferr
	}
	msg := err.Error()
	var re *RemoteError
	if errors.As(err, &re) {
		msg = re.Message
	}
	if len(msg) > maxErrorLen {
		msg = msg[:maxErrorLen]
	}
	status := statusErr
	if errors.Is(err, ErrNotMember) {
		status = statusNotMember
	}
	b := newFrame(typ, group, id, 1+len(msg))
	b = append(b, status)
	b = append(b, msg...)
	fb, _ := finishFrame(b) // cannot fail: the message is bounded
	return fb
}

// parseStatus splits a status-prefixed payload into body or *RemoteError.
func parseStatus(p []byte) ([]byte, error) {
	if len(p) == 0 {
		return nil, errors.New("transport: empty response payload")
	}
	switch p[0] {
	case statusOK:
		return p[1:], nil
	case statusErr:
		return nil, &RemoteError{Message: string(p[1:])}
	case statusNotMember:
		return nil, fmt.Errorf("%w: %w", ErrNotMember, &RemoteError{Message: string(p[1:])})
	default:
		return nil, fmt.Errorf("transport: bad response status %d", p[0])
	}
}

// readFrame reads one frame. dc, when set, arms the per-read deadline only
// once a frame has started, so idle connections may stay quiet forever while
// a peer that stalls mid-frame is cut off.
func readFrame(r *bufio.Reader, dc *deadlineConn) (frame, error) {
	if dc != nil {
		dc.disarmRead()
	}
	var hdr [frameHeaderLen]byte
	// A frame has started with its first byte: a peer that stalls in
	// the rest of the length is cut off like one that stalls later.
	if _, err := io.ReadFull(r, hdr[:1]); err != nil {
		return frame{}, err
	}
	if dc != nil {
		dc.armRead()
	}
	if _, err := io.ReadFull(r, hdr[1:4]); err != nil {
		return frame{}, noEOF(err)
	}
	n := binary.BigEndian.Uint32(hdr[:4])
	if n < minFrameLen {
		return frame{}, fmt.Errorf("transport: frame length %d is shorter than a frame header", n)
	}
	if n > MaxFrameSize {
		return frame{}, fmt.Errorf("transport: frame length %d exceeds the %d byte limit", n, MaxFrameSize)
	}
	if _, err := io.ReadFull(r, hdr[4:]); err != nil {
		return frame{}, noEOF(err)
	}
	f := frame{
		typ:   hdr[4],
		group: binary.BigEndian.Uint64(hdr[5:13]),
		id:    binary.BigEndian.Uint64(hdr[13:21]),
	}
	p, err := readPayload(r, int(n)-minFrameLen)
	if err != nil {
		return frame{}, noEOF(err)
	}
	f.payload = p
	return f, nil
}

func readPayload(r io.Reader, n int) ([]byte, error) {
	if n <= readChunk {
		b := make([]byte, n)
		_, err := io.ReadFull(r, b)
		return b, err
	}
	b := make([]byte, 0, readChunk)
	for len(b) < n {
		k := min(n-len(b), readChunk)
		if cap(b)-len(b) < k {
			nb := make([]byte, len(b), min(2*cap(b), n))
			copy(nb, b)
			b = nb
		}
		m, err := io.ReadFull(r, b[len(b):len(b)+k])
		b = b[:len(b)+m]
		if err != nil {
			return nil, err
		}
	}
	return b, nil
}

// noEOF turns a clean EOF inside a frame into ErrUnexpectedEOF: the peer
// went away mid-frame, which is worth logging.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// deadlineConn applies progress-based deadlines: every underlying Write, and
// every Read while a frame is being read, must make progress within its
// timeout. The read side is used only by the connection's reader goroutine.
type deadlineConn struct {
	net.Conn
	readTimeout  time.Duration
	writeTimeout time.Duration

	readArmed   bool
	readPending bool          // a read deadline is currently set
	lastRecv    *atomic.Int64 // optional: unix nanos of the last successful read
}

func (c *deadlineConn) armRead() { c.readArmed = true }

func (c *deadlineConn) disarmRead() {
	c.readArmed = false
	if c.readPending {
		_ = c.Conn.SetReadDeadline(time.Time{})
		c.readPending = false
	}
}

func (c *deadlineConn) Read(p []byte) (int, error) {
	if c.readArmed && c.readTimeout > 0 {
		_ = c.Conn.SetReadDeadline(time.Now().Add(c.readTimeout))
		c.readPending = true
	}
	n, err := c.Conn.Read(p)
	if n > 0 && c.lastRecv != nil {
		c.lastRecv.Store(time.Now().UnixNano())
	}
	return n, err
}

func (c *deadlineConn) Write(p []byte) (int, error) {
	if c.writeTimeout > 0 {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(c.writeTimeout))
	}
	return c.Conn.Write(p)
}
