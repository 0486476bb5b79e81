// Package serverapi is the Go client of Herald's server API, the HTTP and
// JSON API an application's backend uses to publish to rooms and read them
// without a socket, and the API's wire types (docs/server-api.md). It
// imports no server package.
//
//	c, err := serverapi.New(apiKey, "http://10.0.0.5:7071", "http://10.0.0.6:7071")
//	res, err := c.Publish(ctx, serverapi.PublishRequest{Room: "lobby",
//		Data: json.RawMessage(`{"text":"hi"}`), Key: "order-42"})
//
// A publish with a key is exactly-once: the client retries it, on the next
// node, after any failure whose outcome is unknown, and the key makes a
// repeat return the first one's seq (Duplicate).
package serverapi
