package wsfront

import (
	"bytes"
	"encoding/binary"
	"net"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/lxzan/gws"
)

// A socket's outgoing frames go through its outbox rather than gws's write
// queue: gws writes each frame with its own write(2) and builds each frame
// anew for each socket, which made the write calls most of a node's CPU in
// a fan-out. The outbox takes frames whose bytes may be shared by every
// socket (an event is encoded once per node, websocket header included)
// and writes everything queued for the socket with one writev.
//
// Control frames (ping, pong, close) stay with gws. A write, whether gws's
// or the outbox's, is one call that holds the connection's write lock
// throughout (a writev on TCP, one Write on TLS), so frames never
// interleave on the wire.

// maxServerHeader is the longest header of an unmasked frame.
const maxServerHeader = 10

// outFrame is one frame queued for a socket.
type outFrame struct {
	// b is the frame's payload, or the whole frame on the wire, header
	// included, when wire is set (then b is shared and never changed).
	b    []byte
	wire bool
	// then, when set, runs once the frame was written or has failed.
	then func()
}

// appendHeader appends the header of a final, unmasked text frame of n
// payload bytes, as a server sends it.
func appendHeader(b []byte, n int) []byte {
	const finText = 0x80 | byte(gws.OpcodeText)
	switch {
	case n < 126:
		return append(b, finText, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, finText, 126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, finText, 127), uint64(n))
	}
}

// wireFrame returns the text frame of the payload that fill appends to a
// buffer, header included, built once so that any number of sockets can
// write the same bytes. Text frames must be UTF-8; a payload that is not
// (event data stored by a client of another kind) has its invalid bytes
// replaced, as JSON lets them occur only inside strings.
func wireFrame(sizeHint int, fill func([]byte) []byte) []byte {
	b := fill(make([]byte, maxServerHeader, maxServerHeader+sizeHint))
	payload := b[maxServerHeader:]
	if !utf8.Valid(payload) {
		payload = bytes.ToValidUTF8(payload, []byte(string(utf8.RuneError)))
		b = append(make([]byte, maxServerHeader, maxServerHeader+len(payload)), payload...)
	}
	var hdr [maxServerHeader]byte
	h := appendHeader(hdr[:0], len(payload))
	start := maxServerHeader - len(h)
	copy(b[start:], h)
	return b[start:]
}

// validPayload makes a frame built for one socket valid UTF-8 (see wireFrame).
func validPayload(b []byte) []byte {
	if utf8.Valid(b) {
		return b
	}
	return bytes.ToValidUTF8(b, []byte(string(utf8.RuneError)))
}

// enqueue adds frames to the socket's outbox, starting its writer if none
// runs. It reports false, without running their then, once the socket is
// closing.
func (sess *session) enqueue(frames ...outFrame) bool {
	sess.outMu.Lock()
	if sess.outEnded || sess.outClose != nil {
		sess.outMu.Unlock()
		return false
	}
	sess.out = append(sess.out, frames...)
	start := !sess.outBusy
	sess.outBusy = true
	sess.outMu.Unlock()
	if start {
		// The writer lives while the outbox has frames: it ends once it
		// is empty, and a failed write (the connection closed, or the
		// deadline a close sets passed) ends every later one at once.
		go sess.writeLoop()
	}
	return true
}

// closeRequest is a close frame waiting for the writer to finish.
type closeRequest struct {
	code   uint16
	reason string
}

// writeLoop writes the outbox until it is empty, a batch at a time: all
// frames queued while the previous batch was being written go out in one
// system call.
func (sess *session) writeLoop() {
	var batch []outFrame
	// A writer lives for a burst, so its buffers come from a pool.
	w := writerPool.Get().(*batchWriter)
	defer w.release()
	for {
		sess.outMu.Lock()
		if len(sess.out) == 0 {
			sess.outBusy = false
			cr := sess.outClose
			if cr != nil {
				sess.outEnded = true
			}
			sess.out = nil // an idle socket holds no queue
			sess.outMu.Unlock()
			if cr != nil {
				sess.writeClose(cr)
			}
			return
		}
		batch, sess.out = sess.out, batch[:0]
		failed := sess.outEnded
		sess.outMu.Unlock()

		if !failed {
			sess.writingSince.Store(time.Now().UnixNano())
			err := w.write(sess.conn.NetConn(), batch)
			sess.writingSince.Store(0)
			if err != nil {
				sess.outMu.Lock()
				sess.outEnded = true
				sess.outMu.Unlock()
			}
		}
		var size int64
		for i := range batch {
			size += int64(len(batch[i].b))
		}
		sess.queuedFrames.Add(-int64(len(batch)))
		sess.queuedBytes.Add(-size)
		for i := range batch {
			if then := batch[i].then; then != nil {
				then()
			}
		}
		clear(batch)
	}
}

// writeClose writes a close frame and closes the connection. The deadline
// closeWith set bounds both.
func (sess *session) writeClose(cr *closeRequest) {
	_ = sess.conn.WriteClose(cr.code, []byte(cr.reason))
	// WriteClose closes the connection once the frame is out (or
	// failed); the read loop then ends and closed runs.
	_ = sess.conn.NetConn().Close()
}

// requestClose closes the socket with code after the frames already
// queued, or at once when no writer runs.
func (sess *session) requestClose(code uint16, reason string) {
	_ = sess.conn.SetWriteDeadline(time.Now().Add(time.Second))
	cr := &closeRequest{code: code, reason: reason}
	sess.outMu.Lock()
	if sess.outClose != nil {
		sess.outMu.Unlock()
		return
	}
	sess.outClose = cr
	busy := sess.outBusy
	if !busy {
		sess.outEnded = true
	}
	sess.outMu.Unlock()
	if !busy {
		sess.writeClose(cr)
	}
}

// batchWriter turns a batch of frames into one write; its buffers are
// reused from batch to batch and, through writerPool, from writer to writer.
type batchWriter struct {
	hdrs []byte
	iov  [][]byte
}

var writerPool = sync.Pool{New: func() any { return new(batchWriter) }}

// release returns w to the pool unless a rare huge batch grew it.
func (w *batchWriter) release() {
	if cap(w.iov) <= 4096 && cap(w.hdrs) <= 64<<10 {
		writerPool.Put(w)
	}
}

func (w *batchWriter) write(conn net.Conn, batch []outFrame) error {
	need := 0
	for i := range batch {
		if !batch[i].wire {
			need += maxServerHeader
		}
	}
	if cap(w.hdrs) < need {
		w.hdrs = make([]byte, 0, need)
	}
	hdrs, iov := w.hdrs[:0], w.iov[:0]
	total := 0
	for i := range batch {
		f := &batch[i]
		total += len(f.b)
		if f.wire {
			iov = append(iov, f.b)
			continue
		}
		start := len(hdrs)
		hdrs = appendHeader(hdrs, len(f.b))
		total += len(hdrs) - start
		iov = append(iov, hdrs[start:], f.b)
	}
	w.iov = iov
	defer clear(iov)
	if len(iov) == 1 {
		_, err := conn.Write(iov[0])
		return err
	}
	// A writev leaves an iovec array on the connection for the next one,
	// which idle sockets should not keep for a reply: a lone small frame
	// is joined to its header instead.
	if _, ok := conn.(*net.TCPConn); ok && (len(batch) > 1 || total > 16<<10) {
		// One writev, under the connection's write lock throughout.
		bufs := net.Buffers(iov)
		_, err := bufs.WriteTo(conn)
		return err
	}
	// Other connections (TLS) write each buffer of a net.Buffers on its
	// own, and a ping could land between two: join them.
	joined := joinPool.Get().(*[]byte)
	b := (*joined)[:0]
	for _, p := range iov {
		b = append(b, p...)
	}
	_, err := conn.Write(b)
	if cap(b) <= 1<<20 {
		*joined = b[:0]
		joinPool.Put(joined)
	}
	return err
}

var joinPool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}
