package transport

import "errors"

var (
	// ErrUnreachable is wrapped by errors caused by not being able to talk to
	// a peer: a failed dial, a peer in reconnect backoff, or a connection that
	// broke while a request was outstanding.
	ErrUnreachable = errors.New("transport: peer unreachable")

	// ErrStreamOverflow ends a Stream whose receiver fell more than the
	// stream buffer behind the sender; the server side is told to stop.
	ErrStreamOverflow = errors.New("transport: stream receiver fell behind, stream buffer overflowed")

	// ErrClosed is wrapped by errors returned after the Manager, a
	// GroupTransport, a pipeline or a Stream has been closed locally.
	ErrClosed = errors.New("transport: closed")

	// ErrNotSent is wrapped, together with the cause, by Call errors that
	// happened before the request was written to a connection: the remote
	// handler certainly did not run, so even a non-idempotent request may
	// be retried.
	ErrNotSent = errors.New("transport: request not sent")

	// ErrNotMember is wrapped by errors of requests a peer refused before
	// running anything because this node is not (yet) a member of the
	// cluster in its view, e.g. right after joining, before the peer has
	// applied the registration. Like ErrNotSent, any request may be retried.
	ErrNotMember = errors.New("transport: not a member of the cluster on the peer (yet)")

	// ErrTimeout is wrapped by errors returned when a peer did not answer a
	// request within Config.RPCTimeout.
	ErrTimeout = errors.New("transport: request timed out")
)

// RemoteError is an error that happened on the remote node: a handler's
// error, an unknown service, an unregistered group or a raft error. It only
// carries the message, since error values do not cross the network.
type RemoteError struct {
	Message string
}

// Error returns the remote message prefixed so logs show where it came from.
func (e *RemoteError) Error() string {
	return "transport: remote error: " + e.Message
}
