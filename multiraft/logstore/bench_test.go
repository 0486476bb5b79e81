package logstore

import (
	"fmt"
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
