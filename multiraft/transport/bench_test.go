package transport

import (
	"fmt"
	"sync"
	"testing"

	"github.com/hashicorp/raft"
)

func benchEntries(n, size int) []*raft.Log {
	var out []*raft.Log
	for i := 0; i < n; i++ {
		out = append(out, &raft.Log{Index: uint64(i + 1), Term: 1, Type: raft.LogCommand, Data: make([]byte, size)})
	}
	return out
}

// BenchmarkAppendEntries measures one synchronous AppendEntries round trip
// carrying 8 entries of 256 bytes.
func BenchmarkAppendEntries(b *testing.B) {
	_, _, ga, gb := pair(b, 1)
	stop := make(chan struct{})
	defer close(stop)
	go serveAll(ga, stop)
	args := makeAppendRPC()
	args.Entries = benchEntries(8, 256)
	var out raft.AppendEntriesResponse
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := gb.AppendEntries("a", ga.LocalAddr(), &args, &out); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHeartbeat measures heartbeats through the fast path, from one
// group and from 64 groups at once over the shared connection.
func BenchmarkHeartbeat(b *testing.B) {
	for _, groups := range []int{1, 64} {
		b.Run(fmt.Sprintf("groups=%d", groups), func(b *testing.B) {
			am := newTestManager(b, "a")
			bm := newTestManager(b, "b")
			var senders []*GroupTransport
			for g := 0; g < groups; g++ {
				ga := mustGroup(b, am, uint64(g))
				ga.SetHeartbeatHandler(func(rpc raft.RPC) {
					rpc.Respond(&raft.AppendEntriesResponse{Term: 10, Success: true}, nil)
				})
				senders = append(senders, mustGroup(b, bm, uint64(g)))
			}
			b.ReportAllocs()
			b.ResetTimer()
			var wg sync.WaitGroup
			per := (b.N + groups - 1) / groups
			for _, g := range senders {
				wg.Add(1)
				go func() {
					defer wg.Done()
					hb := heartbeatRPC()
					var out raft.AppendEntriesResponse
					for i := 0; i < per; i++ {
						if err := g.AppendEntries("a", am.Addr(), &hb, &out); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
		})
	}
}

// BenchmarkPipeline pipelines AppendEntries (8 entries of 256 bytes) from
// several groups in parallel over the one shared connection; ns/op is per
// AppendEntries across all groups.
func BenchmarkPipeline(b *testing.B) {
	for _, groups := range []int{1, 16, 128} {
		b.Run(fmt.Sprintf("groups=%d", groups), func(b *testing.B) {
			am := newTestManager(b, "a")
			bm := newTestManager(b, "b")
			stop := make(chan struct{})
			defer close(stop)
			var pipes []raft.AppendPipeline
			for g := 0; g < groups; g++ {
				go serveAll(mustGroup(b, am, uint64(g)), stop)
				p, err := mustGroup(b, bm, uint64(g)).AppendEntriesPipeline("a", am.Addr())
				if err != nil {
					b.Fatal(err)
				}
				defer func() { _ = p.Close() }()
				pipes = append(pipes, p)
			}
			args := makeAppendRPC()
			args.Entries = benchEntries(8, 256)
			b.ReportAllocs()
			b.SetBytes(int64(8 * 256))
			b.ResetTimer()
			var wg sync.WaitGroup
			per := (b.N + groups - 1) / groups
			for _, p := range pipes {
				wg.Add(2)
				go func() {
					defer wg.Done()
					for i := 0; i < per; i++ {
						if _, err := p.AppendEntries(&args, new(raft.AppendEntriesResponse)); err != nil {
							b.Error(err)
							return
						}
					}
				}()
				go func() {
					defer wg.Done()
					for i := 0; i < per; i++ {
						if err := (<-p.Consumer()).Error(); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
		})
	}
}
