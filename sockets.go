package herald

import (
	"time"

	"github.com/heraldhq/herald/serverapi"
)

// The server API's user ops act on the node's own sockets, which its
// websocket front holds; the backend hands them over.

var _ serverapi.Sockets = (*backend)(nil)

func (b *backend) DisconnectUser(user string, code uint16, reason string) int {
	return b.front.DisconnectUser(user, code, reason)
}

func (b *backend) BlockUser(user string, until time.Time) error {
	return b.front.BlockUser(user, until)
}

func (b *backend) UnsubscribeUser(user, room string) int { return b.front.UnsubscribeUser(user, room) }

func (b *backend) RefreshUser(user string, expires time.Time) int {
	return b.front.RefreshUser(user, expires)
}
