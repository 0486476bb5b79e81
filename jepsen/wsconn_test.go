package jepsen

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/testcluster"
	"github.com/heraldhq/herald/protocol"
)

// The harness's socket speaks herald.v1 to a real node: every op it sends,
// the replies' fields it records, an error's code, and an event push.
func TestWSConnSpeaksHerald(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Nodes: 1, Groups: 2})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	addr := strings.TrimPrefix(c.HTTP(0), "http://")
	sub, err := dialWS(ctx, "n1", addr, "sub", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.close()
	pub, err := dialWS(ctx, "n1", addr, "pub", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.close()
	call := func(c *wsConn, req *protocol.Request) *protocol.Frame {
		t.Helper()
		f, err := c.call(ctx, req, 10*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", req.Op, err)
		}
		return f
	}
	if f := call(pub, &protocol.Request{Op: protocol.OpJoin, Room: "r"}); replyCode(f) != "" || f.Seq != 1 {
		t.Fatalf("join: %+v", f)
	}
	from := uint64(2)
	if f := call(sub, &protocol.Request{Op: protocol.OpSubscribe, Room: "r", FromSeq: &from}); replyCode(f) != "" || f.LastSeq != 1 {
		t.Fatalf("subscribe: %+v", f)
	}
	data := []byte(`"v1"`)
	if f := call(pub, &protocol.Request{Op: protocol.OpPublish, Room: "r", Data: data, Key: "v1"}); replyCode(f) != "" || f.Seq != 2 {
		t.Fatalf("publish: %+v", f)
	}
	stale := uint64(0)
	f := call(pub, &protocol.Request{Op: protocol.OpPublish, Room: "r", Data: data, Key: "v1b", ExpectSeq: &stale})
	if replyCode(f) != protocol.CodeConflict || f.LastSeq != 2 || f.Err().Message == "" {
		t.Fatalf("conditional publish: %+v", f)
	}
	f = call(pub, historyRequest("r", 1))
	if evs := events(f); replyCode(f) != "" || f.LastSeq != 2 || len(evs) != 2 ||
		evs[0] != (Ev{Seq: 1, Type: "join", Member: "pub"}) || evs[1] != (Ev{Seq: 2, Member: "pub", Value: "v1"}) {
		t.Fatalf("history: %+v", f)
	}
	if f := call(pub, &protocol.Request{Op: protocol.OpMembers, Room: "r"}); replyCode(f) != "" ||
		len(f.Members) != 1 || f.Members[0].Member != "pub" || f.Seq != 2 {
		t.Fatalf("members: %+v", f)
	}
	select {
	case p := <-sub.pushes:
		if p.Ev != protocol.EvEvent || p.Room != "r" || p.Seq != 2 || dataValue(p.Data) != "v1" {
			t.Fatalf("push: %+v", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event pushed")
	}
}
