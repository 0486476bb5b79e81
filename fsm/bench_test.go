package fsm

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/hashicorp/raft"
	"github.com/heraldhq/herald/internal/leakcheck"
)

// publishBatches prepares batches of size publishes of payload bytes each,
// spread round-robin over rooms, with or without idempotency keys.
func publishBatches(m *logMaker, batches, size, rooms, payload int, keyed bool) [][]*raft.Log {
	data := make([]byte, payload)
	for i := range data {
		data[i] = 'a' + byte(i%26)
	}
	out := make([][]*raft.Log, batches)
	n := 0
	for i := range out {
		out[i] = make([]*raft.Log, size)
		for j := range out[i] {
			c := Command{Op: OpPublish, Room: fmt.Sprintf("room-%04d", n%rooms), Member: "bench", Data: data}
			if keyed {
				c.Key = fmt.Sprintf("k-%d", n)
			}
			out[i][j] = m.entry(c)
			n++
		}
	}
	return out
}

// BenchmarkApplyBatch measures apply throughput: batches of publishes of
// 100-byte payloads into 1,000 rooms. batch=64 is the shape raft hands
// ApplyBatch under load in one group; batch=1 is the shape of load spread
// thin over many groups, where every commit carries one entry. Run with
// -cpu 1 for the one-core figure.
func BenchmarkApplyBatch(b *testing.B) {
	for _, size := range []int{1, 64} {
		for _, keyed := range []bool{false, true} {
			b.Run(fmt.Sprintf("batch=%d/keyed=%v", size, keyed), func(b *testing.B) {
				r := newReplica(b, 1)
				batches := publishBatches(newLogMaker(), b.N, size, 1000, 100, keyed)
				b.ReportAllocs()
				b.ResetTimer()
				for _, batch := range batches {
					r.f.ApplyBatch(batch)
				}
				b.StopTimer()
				b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "events/s")
			})
		}
	}
}

// BenchmarkHistoryRead100 reads pages of 100 events at random offsets of a
// room with 10,000 events.
func BenchmarkHistoryRead100(b *testing.B) {
	r := newReplica(b, 1)
	for _, batch := range publishBatches(newLogMaker(), 10_000/64+1, 64, 1, 100, false) {
		r.f.ApplyBatch(batch)
	}
	rng := rand.New(rand.NewPCG(1, 1))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		h, err := r.f.History("room-0000", 1+uint64(rng.IntN(9_900)), 100)
		if err != nil || len(h.Events) != 100 {
			b.Fatalf("history: %d events, %v", len(h.Events), err)
		}
	}
}

// The snapshot benchmarks share one group of 1,000,000 events (1,000 rooms
// of 1,000 100-byte messages), built once per test binary.
var million struct {
	once sync.Once
	dir  string
	err  error
}

func millionEvents(b *testing.B) *replica {
	million.once.Do(func() {
		million.dir, million.err = os.MkdirTemp("", "herald-fsm-bench-")
		if million.err != nil {
			return
		}
		store, err := OpenStore(DefaultStoreConfig(million.dir))
		if err != nil {
			million.err = err
			return
		}
		f, err := New(store, Config{Group: 1})
		if err != nil {
			million.err = err
			return
		}
		for _, batch := range publishBatches(newLogMaker(), 1_000_000/64+1, 64, 1000, 100, false) {
			f.ApplyBatch(batch)
		}
		million.err = store.Close()
	})
	if million.err != nil {
		b.Fatal(million.err)
	}
	r := &replica{t: b, dir: million.dir, group: 1}
	r.open()
	return r
}

func TestMain(m *testing.M) {
	leakcheck.Main(m, func() {
		if million.dir != "" {
			os.RemoveAll(million.dir)
		}
	})
}

// midStream measures the heap held halfway through a stream: after half
// of total bytes pass through, it collects garbage and reads the bytes in
// live objects. A stream that buffered its content would hold about half
// of it here; one that streams holds only the store's fixed caches.
type midStream struct {
	total, n   int64
	base, heap uint64 // live heap at the start and halfway
}

func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func (m *midStream) observe(n int) {
	before := m.n
	m.n += int64(n)
	if before == 0 {
		m.base = liveHeap()
	}
	if before < m.total/2 && m.n >= m.total/2 {
		m.heap = liveHeap()
	}
}

// grown is how much more the heap held halfway than at the start.
func (m *midStream) grown() float64 { return (float64(m.heap) - float64(m.base)) / 1e6 }

type midWriter struct {
	w io.Writer
	*midStream
}

func (m midWriter) Write(p []byte) (int, error) { m.observe(len(p)); return m.w.Write(p) }

type midReader struct {
	io.ReadCloser
	*midStream
}

func (m midReader) Read(p []byte) (int, error) {
	n, err := m.ReadCloser.Read(p)
	m.observe(n)
	return n, err
}

// BenchmarkSnapshot1M persists a snapshot of 1,000,000 events to a file.
func BenchmarkSnapshot1M(b *testing.B) {
	r := millionEvents(b)
	path := filepath.Join(b.TempDir(), "snap")
	size := writeSnapshotFile(b, r.f, path, nil)
	mid := &midStream{total: size}
	b.ResetTimer()
	for b.Loop() {
		mid.n = 0
		writeSnapshotFile(b, r.f, path, mid)
	}
	b.ReportMetric(float64(size)/1e6, "MB")
	b.ReportMetric(float64(mid.heap)/1e6, "mid-heap-MB")
	b.ReportMetric(mid.grown(), "mid-heap-growth-MB")
}

// BenchmarkRestore1M restores that snapshot into another group's FSM.
func BenchmarkRestore1M(b *testing.B) {
	src := millionEvents(b)
	path := filepath.Join(b.TempDir(), "snap")
	size := writeSnapshotFile(b, src.f, path, nil)
	dst := newReplica(b, 2)
	mid := &midStream{total: size}
	b.ResetTimer()
	for b.Loop() {
		mid.n = 0
		file, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		if err := dst.f.Restore(midReader{file, mid}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if info, err := dst.f.Room("room-0999"); err != nil || info.LastSeq != 1000 {
		b.Fatalf("restored room: %+v %v", info, err)
	}
	b.ReportMetric(float64(size)/1e6, "MB")
	b.ReportMetric(float64(mid.heap)/1e6, "mid-heap-MB")
	b.ReportMetric(mid.grown(), "mid-heap-growth-MB")
}

func writeSnapshotFile(b *testing.B, f *FSM, path string, mid *midStream) int64 {
	snap, err := f.Snapshot()
	if err != nil {
		b.Fatal(err)
	}
	defer snap.Release()
	file, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	var out io.Writer = file
	if mid != nil {
		out = midWriter{file, mid}
	}
	w := bufio.NewWriter(out)
	if err := snap.(*snapshot).writeTo(w); err != nil {
		b.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	size, _ := file.Seek(0, io.SeekCurrent)
	if err := file.Close(); err != nil {
		b.Fatal(err)
	}
	return size
}

// BenchmarkBadgerFloor writes what one ApplyBatch of BenchmarkApplyBatch
// (keyed=false) writes, straight to badger with no state machine: 64 event
// records and the applied index in one transaction (room records are not
// rewritten when only their last seq moved). It is the floor under apply
// throughput on this store.
func BenchmarkBadgerFloor(b *testing.B) {
	r := newReplica(b, 1)
	keys := r.f.keys
	ev := encodeEvent(&Event{Type: EventMessage, Member: "bench", Data: make([]byte, 100)}, 1)
	applied := appliedState{Index: 1}.encode()
	n := 0
	b.ResetTimer()
	for b.Loop() {
		w := r.f.db.NewTransaction(true)
		for range 64 {
			name := fmt.Sprintf("room-%04d", n%1000)
			n++
			if err := w.Set(keys.event(name, 1, uint64(n)), ev); err != nil {
				b.Fatal(err)
			}
		}
		if err := w.Set(keys.applied(), applied); err != nil {
			b.Fatal(err)
		}
		if err := w.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*64)/b.Elapsed().Seconds(), "events/s")
}
