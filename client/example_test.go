package client_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/multiraft"
	"github.com/heraldhq/herald/wsfront/auth"
)

// Follow a room and publish to it. startNode runs a one-node cluster in
// this process; against `herald dev`, the URLs are ws://127.0.0.1:7071/ws,
// :7072 and :7073.
func Example() {
	url, stop := startNode()
	defer stop()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Config{
		URLs: []string{url}, // list several nodes: the client moves on when one fails
		User: "alice",       // with insecure auth; otherwise Token: a JWT naming the user
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	sub, err := c.Subscribe(ctx, "lobby", client.SubscribeOptions{})
	if err != nil {
		log.Fatal(err)
	}
	res, err := c.Publish(ctx, "lobby", map[string]string{"text": "hello"}, client.WithKey("alice-1"))
	if err != nil {
		log.Fatal(err)
	}
	ev, err := sub.Next(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("published seq", res.Seq)
	fmt.Println("received seq", ev.Seq, ev.Type, "from", ev.Member+":", string(ev.Data))
	// Output:
	// published seq 1
	// received seq 1 message from alice: {"text":"hello"}
}

// An application that stores its position resumes after a restart of its
// own exactly where it stopped, on whichever node it reaches.
func ExampleSubscription_LastSeq() {
	ctx := context.Background()
	c, err := client.Dial(ctx, client.Config{
		URLs: []string{"ws://127.0.0.1:7070/ws", "ws://127.0.0.1:7071/ws"},
		User: "indexer",
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	seq, epoch := loadPosition() // 0, "" the first time
	sub, err := c.Subscribe(ctx, "orders", client.SubscribeOptions{FromSeq: seq + 1, Epoch: epoch})
	if err != nil {
		log.Fatal(err)
	}
	for {
		ev, err := sub.Next(ctx)
		if err != nil {
			log.Fatal(err)
		}
		switch ev.Kind {
		case client.KindEvent:
			fmt.Println(ev.Seq, string(ev.Data))
		case client.KindTruncated, client.KindEpochChanged, client.KindRoomDeleted:
			fmt.Println("missed events:", ev.Kind, ev.Epoch, ev.Seq)
		}
		savePosition(sub.LastSeq())
	}
}

// Publishing once, even when the call has to be repeated after a restart
// of the application: the key is stored with the work it belongs to.
func ExampleWithKey() {
	ctx := context.Background()
	c, err := client.Dial(ctx, client.Config{URLs: []string{"ws://127.0.0.1:7070/ws"}, User: "billing"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	res, err := c.Publish(ctx, "invoices", map[string]any{"invoice": 1042, "total": "99.00"},
		client.WithKey("invoice-1042"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.Seq, res.Duplicate)
}

// startNode starts a one-node cluster with insecure auth on free loopback
// ports and returns its websocket URL and what stops it.
func startNode() (url string, stop func()) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir, err := os.MkdirTemp("", "herald-client-example")
	if err != nil {
		log.Fatal(err)
	}
	node, err := herald.Start(ctx, herald.Config{NodeID: "n1", DataDir: dir,
		ClientAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0", Auth: auth.Config{Insecure: true}})
	if err == nil {
		err = node.Bootstrap(ctx, multiraft.BootstrapSpec{ClusterID: "example", Groups: 4, Replication: 1,
			Nodes: []multiraft.Peer{{ID: "n1", Addr: node.PeerAddr()}}})
	}
	if err != nil {
		log.Fatal(err)
	}
	return node.WebsocketURL(), func() {
		node.Close()
		os.RemoveAll(dir)
	}
}

func loadPosition() (uint64, string) { return 0, "" }
func savePosition(uint64, string)    {}
