package multiraft_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/heraldhq/herald/multiraft"
	"github.com/heraldhq/herald/multiraft/kvtest"
	"github.com/heraldhq/herald/multiraft/logstore"
)

// syncCounter counts the log store's syncs of every host in the process.
type syncCounter struct{ n atomic.Uint64 }

func (*syncCounter) Committed(uint64, time.Duration)    {}
func (*syncCounter) Applied(uint64, int, time.Duration) {}
func (c *syncCounter) LogSynced(time.Duration)          { c.n.Add(1) }
func (*syncCounter) Forwarded(string)                   {}

// benchSyncs is the Observer of every benchmark cluster; benchmarks run one
// at a time, so runProposers reads the syncs of the run it measures.
var benchSyncs = &syncCounter{}

// benchCluster starts three hosts in this process with kvtest's state
// machine, whose apply is a map insert: the benchmarks measure the
// consensus layer (transport, log store, raft), not the state.
func benchCluster(b *testing.B, groups uint64, kind logstore.Kind, timing multiraft.Timing) []*multiraft.Host {
	b.Helper()
	return bootstrapHosts(b, groups, func() multiraft.Config {
		return multiraft.Config{LogStore: kind, Timing: timing, App: &kvtest.App{}, LeaseTTL: 10 * time.Second, Observer: benchSyncs}
	})
}

// leaderHost finds the host that leads group.
func leaderHost(b *testing.B, hosts []*multiraft.Host, group uint64) *multiraft.Host {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, h := range hosts {
			if st, err := h.Status(group); err == nil && st.State == raft.Leader.String() {
				return h
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.Fatalf("group %d has no leader", group)
	return nil
}

// latencies collects per-operation latencies from many goroutines.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d []time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d...)
	l.mu.Unlock()
}

// processCPU is the CPU time (user and system) this process has used: all
// three hosts of a benchmark cluster run in it, so CPU per commit is the
// whole cluster's, and unlike commits/s it holds up on a machine other work
// is loading.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (l *latencies) report(b *testing.B, elapsed time.Duration) {
	sort.Slice(l.d, func(i, j int) bool { return l.d[i] < l.d[j] })
	if len(l.d) == 0 {
		return
	}
	q := func(p float64) float64 { return float64(l.d[int(p*float64(len(l.d)-1))].Microseconds()) / 1000 }
	b.ReportMetric(float64(len(l.d))/elapsed.Seconds(), "commits/s")
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(0, "ns/op")
}

// benchProposers are the numbers of concurrent proposers measured.
var benchProposers = []int{64, 512, 4096}

// runProposers runs proposers goroutines, each proposing 100-byte commands
// through propose, b.N commands in all: each appends to a key of its own,
// so the state machine's lists stay one item long.
func runProposers(b *testing.B, proposers int, propose func(ctx context.Context, i int, cmd []byte) error) {
	var lat latencies
	var next atomic.Int64
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	b.ResetTimer()
	start, cpu0, syncs0 := time.Now(), processCPU(b), benchSyncs.n.Load()
	for p := range proposers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					break
				}
				cmd := benchCommand(i)
				t0 := time.Now()
				if err := propose(ctx, i+p, cmd); err != nil {
					b.Error(err)
					return
				}
				mine = append(mine, time.Since(t0))
			}
			lat.add(mine)
		}()
	}
	wg.Wait()
	elapsed, cpu := time.Since(start), processCPU(b)-cpu0
	b.StopTimer()
	lat.report(b, elapsed)
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-us/commit")
	// Summed over the three hosts: each commit is stored on all three.
	b.ReportMetric(float64(benchSyncs.n.Load()-syncs0)/float64(b.N), "syncs/commit")
}

// benchItem pads benchCommand's commands to about 100 bytes.
var benchItem = strings.Repeat("x", 88)

func benchCommand(i int) []byte { return kvtest.Append(fmt.Sprintf("%08d", i), benchItem) }

// BenchmarkCommit measures 100-byte proposals committed by 3 replicas with
// 64, 512 or 4,096 concurrent proposers spread over 1, 16 or 64 groups, for
// every raft log store, each proposer calling Propose on the group leader's
// node.
func BenchmarkCommit(b *testing.B) {
	for _, kind := range []logstore.Kind{logstore.KindBadger, logstore.KindWAL, logstore.KindBolt} {
		for _, groups := range []uint64{1, 16, 64} {
			for _, proposers := range benchProposers {
				if kind == logstore.KindBolt && groups == 64 && proposers > 512 {
					// 64 bolt files at two fsyncs per write fall so far
					// behind that leaders lose their lease (see
					// docs/benchmarks.md); the run would only measure
					// elections.
					continue
				}
				b.Run(fmt.Sprintf("store=%s/groups=%d/proposers=%d", kind, groups, proposers), func(b *testing.B) {
					benchCommit(b, groups, kind, proposers)
				})
			}
		}
	}
}

// benchCommit runs proposers closed loops on a new cluster of groups on
// kind's log store, spreading their commands over the groups and sending
// each to its group's leader.
func benchCommit(b *testing.B, groups uint64, kind logstore.Kind, proposers int) {
	hosts := benchCluster(b, groups, kind, multiraft.DefaultTiming())
	leaders := make([]*multiraft.Host, groups+1)
	for g := uint64(1); g <= groups; g++ {
		leaders[g] = leaderHost(b, hosts, g)
	}
	runProposers(b, proposers, func(ctx context.Context, i int, cmd []byte) error {
		g := 1 + uint64(i)%groups
		_, err := leaders[g].Propose(ctx, g, cmd)
		return err
	})
}

// BenchmarkCommitGroups measures 64 proposers, the closed loop of
// herald-bench's 64 publishers, spread over 1 to 64 groups: the trade
// behind the default group count of a small cluster (docs/benchmarks.md).
func BenchmarkCommitGroups(b *testing.B) {
	for _, groups := range []uint64{1, 2, 4, 8, 16, 32, 64} {
		b.Run(fmt.Sprintf("groups=%d", groups), func(b *testing.B) {
			benchCommit(b, groups, logstore.KindBadger, 64)
		})
	}
}

// BenchmarkCommitPlainRaft is the baseline: one hashicorp/raft group of 3
// replicas with NetworkTransport and raft-boltdb, as an application that
// does not use multiraft would run it.
func BenchmarkCommitPlainRaft(b *testing.B) {
	dir := b.TempDir()
	var rafts []*raft.Raft
	var servers []raft.Server
	var transports []*raft.NetworkTransport
	for i := 1; i <= 3; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		tr, err := raft.NewTCPTransport(addr, nil, 3, 10*time.Second, io.Discard)
		if err != nil {
			b.Fatal(err)
		}
		transports = append(transports, tr)
		servers = append(servers, raft.Server{ID: raft.ServerID(fmt.Sprint(i)), Address: tr.LocalAddr()})
	}
	for i, tr := range transports {
		store, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, fmt.Sprintf("raft-%d.db", i))})
		if err != nil {
			b.Fatal(err)
		}
		conf := raft.DefaultConfig()
		conf.LocalID = servers[i].ID
		conf.LogOutput = io.Discard
		snaps := raft.NewInmemSnapshotStore()
		if err := raft.BootstrapCluster(conf, store, store, snaps, tr, raft.Configuration{Servers: servers}); err != nil {
			b.Fatal(err)
		}
		sm, _ := (&kvtest.App{}).NewStateMachine(1)
		r, err := raft.NewRaft(conf, sm, store, store, snaps, tr)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() {
			r.Shutdown().Error()
			tr.Close()
			store.Close()
		})
		rafts = append(rafts, r)
	}
	var leader *raft.Raft
	deadline := time.Now().Add(30 * time.Second)
	for leader == nil {
		if time.Now().After(deadline) {
			b.Fatal("the plain raft group elected no leader in 30s")
		}
		for _, r := range rafts {
			if r.State() == raft.Leader {
				leader = r
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, proposers := range benchProposers {
		b.Run(fmt.Sprintf("proposers=%d", proposers), func(b *testing.B) {
			runProposers(b, proposers, func(_ context.Context, _ int, cmd []byte) error {
				return leader.Apply(cmd, 10*time.Second).Error()
			})
		})
	}
}
