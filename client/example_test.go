package client_test

import (
	"context"
	"fmt"
	"log"

	"github.com/heraldhq/herald/client"
)

// An application that stores its position resumes after a restart of its
// own exactly where it stopped, on whichever node it reaches.
func ExampleSubscription_LastSeq() {
	ctx := context.Background()
	c, err := client.Dial(ctx, client.Options{
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
	c, err := client.Dial(ctx, client.Options{URLs: []string{"ws://127.0.0.1:7070/ws"}, User: "billing"})
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

func loadPosition() (uint64, string) { return 0, "" }
func savePosition(uint64, string)    {}
