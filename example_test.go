package herald_test

import (
	"context"
	"log"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/multiraft"
	"github.com/heraldhq/herald/wsfront/auth"
)

// A one-node cluster embedded in a program; clients connect to
// ws://127.0.0.1:7071/ws.
func ExampleStart() {
	ctx := context.Background()
	secret := []byte("a shared secret of at least 32 bytes!!")
	node, err := herald.Start(ctx, herald.Config{
		NodeID:     "n1",
		DataDir:    "/var/lib/herald",
		ClientAddr: "127.0.0.1:7071",
		PeerAddr:   "127.0.0.1:7171",
		Bootstrap: &multiraft.BootstrapSpec{ClusterID: "demo", Groups: 64, Replication: 1,
			Nodes: []multiraft.Peer{{ID: "n1", Addr: "127.0.0.1:7171"}}},
		Auth: auth.Config{HMACSecret: secret},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer node.Close() // hands over leaderships, tells sockets 1001, stops
	log.Println("websockets at", node.WebsocketURL())
}
