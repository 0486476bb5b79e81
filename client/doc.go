// Package client is the Go client of Herald's websocket protocol,
// herald.v1 (docs/protocol.md). It owns the client side of that protocol:
// keeping a connection to some node of the cluster (reconnecting with
// backoff and jitter to the next node when one fails), authenticating,
// publishing exactly once, resuming subscriptions without gap or
// duplicate, re-joining rooms on new sockets, and reading history and
// members. It does not import the server's packages, so programs can use
// it without pulling in a node.
//
//	c, err := client.Dial(ctx, client.Config{
//		URLs:  []string{"ws://n1:7070/ws", "ws://n2:7070/ws", "ws://n3:7070/ws"},
//		Token: token,
//	})
//	if err != nil {
//		return err
//	}
//	defer c.Close()
//
//	sub, err := c.Subscribe(ctx, "lobby", client.SubscribeOptions{FromSeq: 1})
//	if err != nil {
//		return err
//	}
//	go func() {
//		for {
//			ev, err := sub.Next(ctx)
//			if err != nil {
//				return
//			}
//			fmt.Println(ev.Seq, ev.Member, string(ev.Data))
//		}
//	}()
//
//	res, err := c.Publish(ctx, "lobby", map[string]string{"text": "hi"})
//
// # Exactly once
//
// Publish gives each call a random idempotency key and repeats the call,
// with that key, on any node, after anything that leaves its outcome open:
// the socket dying after the request was sent, unavailable,
// unknown_outcome, rate_limited. The node appends a key once, so the
// message lands once; the reply to a repeat says Duplicate. The guarantee
// holds within the node's key window (10 minutes and 10,000 keys per room
// by default), which a Publish context should not outlast.
//
// # Subscriptions
//
// A Subscription records the seq and epoch of the last event it took from
// the socket. On a new socket it subscribes again from the next seq, and
// it drops any event below it, so each seq reaches Next once, in order,
// whichever nodes the client went through. Notices ride in the same
// stream as Events of their Kind: KindTruncated (events were trimmed
// before delivery), KindEpochChanged (the room was deleted and created
// again while the subscription was away), KindRoomDeleted and
// KindPresence (a join or leave of a room that keeps them out of its
// history: no seq of its own, delivered only to a subscription that is
// live at that point, right after the event it follows). LastSeq
// gives the position to store for resuming after a restart of the
// application.
//
// # Presence
//
// Joins are presence bound to a socket: a node removes the member when its
// socket closes. The client therefore re-joins every room joined through
// it, with the same meta, on each new socket, before serving other
// requests there, until Leave. Each re-join is a join event in the room,
// as it would be for a browser reloading a page. A re-join or re-subscribe
// the node does not answer within Config.RequestTimeout is sent again.
//
// # Oversized requests
//
// A node tells its max_frame when the client authenticates, and a request
// whose frame is bigger fails with ErrTooLarge before it is sent. A node
// that tells no limits closes the socket (1009) for a frame over four
// times its max_frame; the client then fails that request with
// ErrTooLarge and never sends it again. ErrTooLarge is never retried.
//
// # Errors
//
// Nodes' refusals are *Error values with the protocol's code; compare them
// with errors.Is against ErrConflict, ErrForbidden, ErrUnauthorized,
// ErrNotFound and the others. Operations retry retryable errors
// themselves until their context ends.
package client
