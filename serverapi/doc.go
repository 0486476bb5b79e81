// Package serverapi is a node's server API: HTTP and JSON under /api/v1/
// on the client port, for an application's backend to publish to rooms
// and read them without holding a socket (docs/server-api.md). Its wire
// types and Go client are in package client/serverapi.
//
// It owns the API's routes, its API-key check and the translation of each
// op into the same commits and reads the websocket front makes, with the
// same guarantees: a publish is answered only once committed, reads are
// linearizable unless asked stale, and errors carry protocol herald.v1's
// codes (package protocol), mapped by the room layer's one table
// (rooms.Commit, rooms.Read). It sees the cluster only through Backend,
// which the room layer's Service implements; it must not import multiraft,
// and it keeps no state beyond its configuration. The user ops
// (disconnect, unsubscribe, refresh) act on the node's own sockets through
// Config.Sockets, and reach the other nodes by sending each a copy marked
// local to its own server API.
//
// Mount it the way the admin API is mounted, in herald.Config.Mount:
//
//	h, err := serverapi.Handler(node.Rooms(), serverapi.Config{Keys: keys, Sockets: node.Front()})
//	node.Front().Handle(serverapi.Prefix, h)
package serverapi
