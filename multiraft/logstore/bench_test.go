package logstore

import (
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// BenchmarkStoreLogs models raft under load: one writer per group, each
// storing one 100-byte entry per call and waiting for it to be durable.
func BenchmarkStoreLogs(b *testing.B) {
	for _, kind := range testKinds {
		for _, groups := range []int{1, 16, 256} {
			b.Run(fmt.Sprintf("%s/groups=%d", kind, groups), func(b *testing.B) {
				benchStoreLogs(b, kind, groups)
			})
		}
	}
}

func benchStoreLogs(b *testing.B, kind Kind, groups int) {
	be := openTest(b, kind, b.TempDir())
	defer be.Close()
	stores := make([]Store, groups)
	for i := range stores {
		stores[i] = mustGroup(b, be, uint64(i+1))
	}
	data := make([]byte, 100)
	var next atomic.Int64
	lat := make([][]time.Duration, groups)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for g := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for idx := uint64(1); next.Add(1) <= int64(b.N); idx++ {
				l := &raft.Log{Index: idx, Term: 1, Type: raft.LogCommand, Data: data, AppendedAt: time.Now()}
				t0 := time.Now()
				if err := stores[g].StoreLogs([]*raft.Log{l}); err != nil {
					b.Error(err)
					return
				}
				lat[g] = append(lat[g], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	all := slices.Concat(lat...)
	slices.Sort(all)
	if len(all) == 0 {
		return
	}
	pct := func(p float64) float64 {
		return float64(all[min(len(all)-1, int(p*float64(len(all))))].Microseconds())
	}
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "commits/s")
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}

// BenchmarkReadInOrder reads a reopened store's logs in index order, as
// raft's start-up scan and the replica's checks at start do: 16 groups of
// 3,000 entries of 200 bytes, the store reopened before each pass (so
// nothing is read from a store's own caches of the writes).
func BenchmarkReadInOrder(b *testing.B) {
	const groups, entries = 16, 3000
	for _, kind := range testKinds {
		b.Run(string(kind), func(b *testing.B) {
			dir := b.TempDir()
			be := openTest(b, kind, dir)
			for g := uint64(1); g <= groups; g++ {
				s := mustGroup(b, be, g)
				for lo := uint64(1); lo <= entries; lo += 100 {
					if err := s.StoreLogs(logsRange(lo, lo+99, 200)); err != nil {
						b.Fatal(err)
					}
				}
			}
			if err := be.Close(); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				be := openTest(b, kind, dir)
				b.StartTimer()
				var l raft.Log
				for g := uint64(1); g <= groups; g++ {
					s := mustGroup(b, be, g)
					for i := uint64(1); i <= entries; i++ {
						if err := s.GetLog(i, &l); err != nil {
							b.Fatal(err)
						}
					}
				}
				b.StopTimer()
				_ = be.Close()
				b.StartTimer()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*groups*entries), "ns/entry")
		})
	}
}

// BenchmarkWALIndexMemory reports the heap the wal store's index takes per
// entry: 8 groups of 20,480 entries (SnapshotThreshold + TrailingLogs, the
// most a busy group keeps).
func BenchmarkWALIndexMemory(b *testing.B) {
	const groups, entries = 8, 20480
	for range b.N {
		be := openTest(b, KindWAL, b.TempDir())
		var ms runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms)
		before := ms.HeapAlloc
		for g := uint64(1); g <= groups; g++ {
			s := mustGroup(b, be, g)
			for lo := uint64(1); lo <= entries; lo += 512 {
				if err := s.StoreLogs(logsRange(lo, lo+511, 100)); err != nil {
					b.Fatal(err)
				}
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&ms)
		b.ReportMetric(float64(int64(ms.HeapAlloc)-int64(before))/float64(groups*entries), "heap-B/entry")
		_ = be.Close()
	}
}
