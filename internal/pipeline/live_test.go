package pipeline

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipesnet/pipes/internal/ids"
)

// oneEngine returns an engine alone on a fake network.
func oneEngine(t *testing.T) *Engine {
	t.Helper()
	_, ns := newTestNet(t, 1)
	return ns[0].e
}

// liveDef returns the definition of a broadcast pipeline that the engine
// does not know yet.
func liveDef(t *testing.T, name string) *Def {
	t.Helper()
	d, _, err := newDef(testNet, ids.Node{42}, name, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// livePacket returns a packet of pipeline d from sender, numbered n.
func livePacket(d *Def, sender ids.Node, n int, hlc int64) *Packet {
	return &Packet{ID: ids.Packet{byte(n), byte(n >> 8), byte(n >> 16), 0xaa}, Pipeline: d.ID, Sender: sender,
		Seq: uint64(n), HLC: hlc, Data: []byte(fmt.Sprint(n))}
}

// recorder is a sink that keeps what it is handed.
type recorder struct {
	mu    sync.Mutex
	got   []*Packet
	ended chan struct{}
}

func newRecorder() *recorder { return &recorder{ended: make(chan struct{})} }

func (r *recorder) deliver(pk *Packet) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, pk)
	return true
}

func (r *recorder) end() { close(r.ended) }

func (r *recorder) packets() []*Packet {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*Packet(nil), r.got...)
}

func (e *Engine) pendingCount() int {
	e.live.mu.Lock()
	defer e.live.mu.Unlock()
	return e.live.mu.npend
}

// Packets that come before their pipeline's definition wait for it, and
// pass the replay check in the order they came when it arrives: a packet
// far older than one before it is refused, a duplicate is refused, and the
// window they filled protects the pipeline afterwards.
func TestLivePendingPassInOrderOnDefinition(t *testing.T) {
	e := oneEngine(t)
	d := liveDef(t, "early")
	s := ids.Node{9}
	base := time.Now().UnixNano()
	newer := livePacket(d, s, 0, base+replayAge+1)
	older := livePacket(d, s, 1, base) // replayAge behind newer: a replay if it comes after it
	last := livePacket(d, s, 2, base+replayAge+2)
	e.deliver(d.ID, []*Packet{newer, older})
	e.deliver(d.ID, []*Packet{last, last})
	if n := e.pendingCount(); n != 4 {
		t.Fatalf("%d packets wait for the definition, want 4", n)
	}
	if _, ok := e.Pipeline(d.ID); ok {
		t.Fatal("pipeline known before its definition")
	}
	e.Restore(d)
	// In the order they came: newer passes, older is then a replay, last
	// passes and its copy is a replay. In any other order older would pass.
	if st := e.PipelineStats(d.ID); st.Delivered != 2 || st.Rejected != 2 {
		t.Fatalf("after the definition: %+v, want 2 delivered and 2 rejected", st)
	}
	if n := e.pendingCount(); n != 0 {
		t.Fatalf("%d packets still pending", n)
	}
	r := newRecorder()
	if err := e.Subscribe(t.Context(), d.ID, r.deliver, r.end); err != nil {
		t.Fatal(err)
	}
	fresh := livePacket(d, s, 3, base+replayAge+3)
	e.deliver(d.ID, []*Packet{newer, fresh})
	if got := r.packets(); len(got) != 1 || got[0] != fresh {
		t.Fatalf("subscriber got %d packets, want the fresh one only", len(got))
	}
	if st := e.PipelineStats(d.ID); st.Delivered != 3 || st.Rejected != 3 {
		t.Fatalf("stats %+v", st)
	}
}

// At most maxPending packets wait for definitions; the others are counted
// rejected. A shut down pipeline's packets do not wait at all.
func TestLivePendingBounded(t *testing.T) {
	e := oneEngine(t)
	d := liveDef(t, "flood")
	base := time.Now().UnixNano()
	const extra = 10
	before := e.Stats().Rejected
	for i := range maxPending + extra {
		e.deliver(d.ID, []*Packet{livePacket(d, ids.Node{1}, i, base+int64(i))})
	}
	if got := e.Stats().Rejected - before; got != extra {
		t.Fatalf("%d packets rejected beyond the bound, want %d", got, extra)
	}
	if n := e.pendingCount(); n != maxPending {
		t.Fatalf("%d pending, want %d", n, maxPending)
	}
	e.Restore(d)
	if st := e.PipelineStats(d.ID); st.Delivered != maxPending || st.Rejected != 0 {
		t.Fatalf("after the definition: %+v, want %d delivered", st, maxPending)
	}
	// Room again: a packet of another unknown pipeline waits.
	other := liveDef(t, "other")
	e.deliver(other.ID, []*Packet{livePacket(other, ids.Node{1}, 0, base)})
	if n := e.pendingCount(); n != 1 {
		t.Fatalf("%d pending, want 1", n)
	}
}

// A packet seen already, or older than the replay window, is refused and
// not handed to subscribers.
func TestLiveReplayRejected(t *testing.T) {
	e := oneEngine(t)
	d, err := e.Create(t.Context(), "replay", Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := newRecorder()
	if err := e.Subscribe(t.Context(), d.ID, r.deliver, r.end); err != nil {
		t.Fatal(err)
	}
	s := ids.Node{5}
	base := time.Now().UnixNano()
	pk := livePacket(d, s, 1, base)
	e.deliver(d.ID, []*Packet{pk})
	e.deliver(d.ID, []*Packet{pk})                                    // the same packet again
	e.deliver(d.ID, []*Packet{livePacket(d, s, 2, base-replayAge-1)}) // too old
	e.deliver(d.ID, []*Packet{livePacket(d, ids.Node{6}, 1, base)})   // another sender's window
	if got := r.packets(); len(got) != 2 || got[0] != pk || got[1].Sender != (ids.Node{6}) {
		t.Fatalf("subscriber got %d packets, want 2", len(got))
	}
	if st := e.PipelineStats(d.ID); st.Delivered != 2 || st.Rejected != 2 {
		t.Fatalf("stats %+v", st)
	}
}

// A subscription gets nothing after its end ran, when its context ends
// while packets are being delivered, when its pipeline is shut down and
// when the engine closes.
func TestLiveEndedSubscriptionGetsNothing(t *testing.T) {
	e := oneEngine(t)
	d, err := e.Create(t.Context(), "ends", Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Context ended while another goroutine delivers.
	ctx, cancel := context.WithCancel(t.Context())
	var over atomic.Bool
	var late, handed atomic.Int64
	first := make(chan struct{})
	ended := make(chan struct{})
	err = e.Subscribe(ctx, d.ID, func(*Packet) bool {
		if over.Load() {
			late.Add(1)
		}
		if handed.Add(1) == 1 {
			close(first)
		}
		return true
	}, func() { over.Store(true); close(ended) })
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		base := time.Now().UnixNano()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			e.deliver(d.ID, []*Packet{livePacket(d, ids.Node{3}, i, base+int64(i))})
		}
	}()
	<-first
	cancel()
	<-ended
	n := handed.Load()
	e.deliver(d.ID, []*Packet{livePacket(d, ids.Node{4}, 0, time.Now().UnixNano())})
	close(stop)
	<-done
	if late.Load() != 0 || handed.Load() != n {
		t.Fatalf("%d packets handed after the end (%d before, %d in all)", late.Load(), n, handed.Load())
	}

	// The pipeline shut down (ephemeral): its subscriptions end, and it
	// takes no new one.
	eph, err := e.Create(t.Context(), "eph", Options{Ephemeral: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := e.pipeOf(eph.ID)
	r := newRecorder()
	if err := e.Subscribe(t.Context(), eph.ID, r.deliver, r.end); err != nil {
		t.Fatal(err)
	}
	if err := e.Shutdown(eph.ID); err != nil {
		t.Fatal(err)
	}
	<-r.ended
	e.deliver(eph.ID, []*Packet{livePacket(eph, ids.Node{3}, 0, time.Now().UnixNano())})
	if e.deliverDatagram(p, &Packet{Sender: ids.Node{3}}) {
		t.Fatal("a datagram of a removed pipeline was delivered")
	}
	if got := r.packets(); len(got) != 0 {
		t.Fatalf("removed pipeline: %d packets handed after the end", len(got))
	}
	if err := e.Subscribe(t.Context(), eph.ID, r.deliver, r.end); !errors.Is(err, ErrUnknown) {
		t.Fatalf("subscribe to a removed pipeline: %v", err)
	}

	// Close ends every subscription.
	r = newRecorder()
	if err := e.Subscribe(t.Context(), d.ID, r.deliver, r.end); err != nil {
		t.Fatal(err)
	}
	e.Close()
	<-r.ended
	e.deliver(d.ID, []*Packet{livePacket(d, ids.Node{4}, 1, time.Now().UnixNano())})
	if got := r.packets(); len(got) != 0 {
		t.Fatalf("closed engine: %d packets handed after the end", len(got))
	}
	if err := e.Subscribe(t.Context(), d.ID, r.deliver, r.end); !errors.Is(err, ErrClosed) {
		t.Fatalf("subscribe on a closed engine: %v", err)
	}
}

// A full sink loses the packets, counted as dropped, and the other
// subscribers get every packet, in order.
func TestLiveFullSinkDropsForItselfOnly(t *testing.T) {
	e := oneEngine(t)
	d, err := e.Create(t.Context(), "full", Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	full := func(*Packet) bool { return false }
	if err := e.Subscribe(t.Context(), d.ID, full, func() {}); err != nil {
		t.Fatal(err)
	}
	r := newRecorder()
	if err := e.Subscribe(t.Context(), d.ID, r.deliver, r.end); err != nil {
		t.Fatal(err)
	}
	const n = 200
	base := time.Now().UnixNano()
	var pks []*Packet
	for i := range n {
		pks = append(pks, livePacket(d, ids.Node{7}, i, base+int64(i)))
	}
	e.deliver(d.ID, pks[:n/2])
	for _, pk := range pks[n/2:] {
		e.deliver(d.ID, []*Packet{pk})
	}
	got := r.packets()
	if len(got) != n {
		t.Fatalf("the other subscriber got %d packets, want %d", len(got), n)
	}
	for i, pk := range got {
		if pk != pks[i] {
			t.Fatalf("packet %d out of order (seq %d)", i, pk.Seq)
		}
	}
	if st := e.PipelineStats(d.ID); st.Delivered != n || st.Dropped != n {
		t.Fatalf("stats %+v: want %d delivered and %d dropped", st, n, n)
	}
	if st := e.Stats(); st.Dropped < n {
		t.Fatalf("engine stats %+v", st)
	}
}

// free reports whether m can be taken: it is not held by the caller (it
// may be held for a moment by another goroutine, so it is tried a while).
func free(m *sync.Mutex) bool {
	for range 10000 {
		if m.TryLock() {
			m.Unlock()
			return true
		}
		runtime.Gosched()
	}
	return false
}

// Sinks run under no lock of the registry nor of the live part's index: a
// sink may call the engine's read API, while pipelines are defined and
// removed, without deadlock.
func TestLiveSinkMayCallReadAPI(t *testing.T) {
	e := oneEngine(t)
	d, err := e.Create(t.Context(), "reader", Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var registryHeld, liveHeld, calls int
	sink := func(pk *Packet) bool {
		regFree, liveFree := free(&e.mu.Mutex), free(&e.live.mu.Mutex)
		if _, ok := e.Pipeline(pk.Pipeline); !ok {
			t.Error("sink: pipeline unknown")
		}
		_ = e.Pipelines()
		_ = e.PipelineStats(pk.Pipeline)
		_ = e.Stats()
		mu.Lock()
		defer mu.Unlock()
		calls++
		if !regFree {
			registryHeld++
		}
		if !liveFree {
			liveHeld++
		}
		return true
	}
	if err := e.Subscribe(t.Context(), d.ID, sink, func() {}); err != nil {
		t.Fatal(err)
	}
	base := time.Now().UnixNano()
	e.deliver(d.ID, []*Packet{livePacket(d, ids.Node{1}, 0, base)})

	// Meanwhile the registry defines and removes pipelines (Engine.mu, then
	// live.mu), and a second goroutine delivers.
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := range 50 {
			eph, err := e.Create(t.Context(), fmt.Sprintf("churn%d", i), Options{Ephemeral: true}, nil)
			if err != nil {
				t.Error(err)
				return
			}
			if err := e.Shutdown(eph.ID); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		for i := 1; i <= 200; i++ {
			e.deliver(d.ID, []*Packet{livePacket(d, ids.Node{2}, i, base+int64(i))})
		}
	}()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if calls != 201 {
		t.Fatalf("sink called %d times, want 201", calls)
	}
	if registryHeld != 0 || liveHeld != 0 {
		t.Fatalf("a sink ran with the registry's lock held %d times, the live index's %d times", registryHeld, liveHeld)
	}
}
