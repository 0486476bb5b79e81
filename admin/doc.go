// Package admin is a Herald node's operator interface: the HTTP JSON API
// served on the client port under /admin/v1/, a typed Go client for it, and
// the offline backup and restore of a stopped node's data directory.
//
// It owns the API's wire types, its authentication (a bearer token, or
// loopback-only access in development), the translation of operator
// requests into multiraft operations (status, replica moves, leader
// transfers, rebalancing, decommissioning) and room commands, and the
// background jobs that run the long ones. It must not change cluster state
// other than through multiraft.Host's API and committed fsm commands, and it
// keeps no state of its own beyond the jobs of the running process.
//
// Mount Handler on a node's front:
//
//	node.Front().Handle("/admin/v1/", admin.Handler(node, admin.Options{Token: token}))
//
// and talk to it with a Client:
//
//	c := admin.NewClient("http://127.0.0.1:7071", token)
//	st, err := c.Status(ctx)
//
// docs/admin.md describes every endpoint and the herald admin command.
package admin
