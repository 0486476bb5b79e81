package herald_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/multiraft"
	"github.com/heraldhq/herald/wsfront/auth"
)

// A one-node cluster embedded in a program. It takes free ports on loopback
// and a temporary data folder; a service gives fixed addresses, a folder
// that lasts, and reads its secrets from files.
func ExampleStart() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dataDir, err := os.MkdirTemp("", "herald-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dataDir)
	jwtSecret := []byte("the HMAC secret tokens are signed with, 32+ bytes")
	clusterSecret := []byte("the secret every node of the cluster shares")

	node, err := herald.Start(ctx, herald.Config{
		NodeID:        "n1",
		DataDir:       dataDir,
		ClientAddr:    "127.0.0.1:0",
		PeerAddr:      "127.0.0.1:0",
		ClusterSecret: clusterSecret,                      // peers prove it to each other; needed off loopback
		Auth:          auth.Config{HMACSecret: jwtSecret}, // or Insecure: true for local development
	})
	if err != nil {
		log.Fatal(err)
	}
	defer node.Close() // hands over leaderships, tells sockets 1001, stops

	// A new cluster: every initial node gets the same spec. With addresses
	// known in advance, herald.Config.Bootstrap does the same within Start.
	err = node.Bootstrap(ctx, multiraft.BootstrapSpec{ClusterID: "demo", Groups: 8, Replication: 1,
		Nodes: []multiraft.Peer{{ID: "n1", Addr: node.PeerAddr()}}})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Fprintln(os.Stderr, "websockets at", node.WebsocketURL())
	// Output:
}
