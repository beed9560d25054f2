package pipeline

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pipesnet/pipes/internal/history"
	"github.com/pipesnet/pipes/internal/identity"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/testutil"
)

// packets returns n packets that share one (with data of size bytes).
func packets(n, size int) []*Packet {
	pk := &Packet{Data: make([]byte, size)}
	out := make([]*Packet, n)
	for i := range out {
		out[i] = pk
	}
	return out
}

// TestHeldQueueBound: the held queue takes any item when empty and
// refuses what would pass maxHeldPackets or maxHeldBytes; take hands items
// out first in first out, within its bounds (the first always, if asked),
// and signals while items are left.
func TestHeldQueueBound(t *testing.T) {
	h := heldQueue{more: make(chan struct{}, 1)}
	if !h.add(ingest{pks: packets(maxHeldPackets+1, 0)}) {
		t.Fatal("an empty queue refused an item")
	}
	if h.add(ingest{pks: packets(1, 0)}) {
		t.Fatal("a full queue (packets) took an item")
	}
	if got := h.take(10, 10, false); len(got) != 0 {
		t.Fatal("take without first handed out an item beyond its bounds")
	}
	if got := h.take(10, 10, true); len(got) != 1 || len(got[0].pks) != maxHeldPackets+1 {
		t.Fatal("take with first did not hand out the first item")
	}
	<-h.more // the adds' signal
	select {
	case <-h.more:
		t.Fatal("signalled with nothing left")
	default:
	}

	half := maxHeldBytes/2 + 1
	if !h.add(ingest{pks: packets(1, half)}) || h.add(ingest{pks: packets(1, half)}) {
		t.Fatal("the byte bound is not kept")
	}
	h.take(groupPackets, maxHeldBytes, true)
	<-h.more

	for i := range 3 {
		h.add(ingest{pks: packets(10, 0), proof: &history.Proof{FirstSeq: uint64(i)}})
	}
	<-h.more
	first := h.take(15, 1<<20, true)
	if len(first) != 1 || first[0].proof.FirstSeq != 0 {
		t.Fatalf("took %d items, want the first only", len(first))
	}
	select {
	case <-h.more:
	default:
		t.Fatal("items are left but the writer is not signalled")
	}
	rest := h.take(25, 1<<20, false)
	if len(rest) != 2 || rest[0].proof.FirstSeq != 1 || rest[1].proof.FirstSeq != 2 {
		t.Fatal("items not handed out in order")
	}
	if h.packets != 0 || h.bytes != 0 || len(h.items) != 0 {
		t.Fatalf("empty queue counts %d packets, %d bytes", h.packets, h.bytes)
	}
}

// member is another member of the network: it signs packets of its own
// for a persistent pipeline.
type member struct {
	id   [32]byte
	key  *identity.KeyPair
	cert *identity.Cert
}

func newMember(t *testing.T, ca *identity.KeyPair) member {
	key, _ := identity.Generate()
	cert, err := identity.IssueCert(ca, "m", key.Public, testNet, "", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return member{id: cert.NodeID(), key: key, cert: cert}
}

// packet is m's packet seq on pipeline pipe, as one verified batch.
func (m member) packet(pipe [32]byte, seq uint64) ingest {
	data := fmt.Appendf(nil, "m %d", seq)
	id := packetID(pipe, m.id, seq, int64(seq), 0, [32]byte{}, false, data)
	pk := &Packet{ID: id, Pipeline: pipe, Sender: m.id, Seq: seq, HLC: int64(seq), Data: data}
	pr := &history.Proof{Sender: m.id, FirstSeq: seq, LastSeq: seq, Signature: signBatch(m.key, []ids.Packet{id})}
	return ingest{pks: []*Packet{pk}, proof: pr, cert: m.cert.Signed}
}

// since returns what the log of pipeline id holds after LogID after
// (LogIDs start at 0).
func since(t *testing.T, e *Engine, id [32]byte, after int64) []*history.Record {
	t.Helper()
	l, err := e.Log(id)
	if err != nil {
		t.Fatal(err)
	}
	var out []*history.Record
	if err := l.Since(after, 1<<20, func(r *history.Record) bool { out = append(out, r); return true }); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestWriterLogsInSenderOrder: packets a sender sent after a gap wait for
// it and are logged after it, each once, whichever queue they come by.
func TestWriterLogsInSenderOrder(t *testing.T) {
	e, d, ca := persistentEngine(t)
	p, _ := e.pipeOf(d.ID)
	m := newMember(t, ca)
	e.logs.enqueue(p, m.packet(d.ID, 3), true)
	e.logs.enqueue(p, m.packet(d.ID, 4), false)
	e.logs.enqueue(p, m.packet(d.ID, 1), true)
	e.logs.enqueue(p, m.packet(d.ID, 3), true) // a copy
	e.logs.enqueue(p, m.packet(d.ID, 2), false)
	testutil.WaitFor(t, "the four packets logged", func() bool { return p.plog.log.Head(m.id) == 4 })
	recs := since(t, e, d.ID, -1)
	if len(recs) != 4 {
		t.Fatalf("%d records logged, want 4", len(recs))
	}
	for i, r := range recs {
		if r.Sender != m.id || r.Seq != uint64(i+1) || r.ID != m.packet(d.ID, r.Seq).pks[0].ID {
			t.Fatalf("record %d: sender %x seq %d, want the member's seq %d", i, r.Sender[:4], r.Seq, i+1)
		}
		if i > 0 && r.LogID <= recs[i-1].LogID {
			t.Fatal("LogIDs do not increase")
		}
	}
}

// TestHeldQueueFullIsCounted: while a pipeline's writer is held, the held
// queue takes up to its bound and what is beyond is dropped and counted
// (sync fetches it again); let go, the writer logs what was queued.
func TestHeldQueueFullIsCounted(t *testing.T) {
	e0, d, ca := persistentEngine(t)
	cfg := e0.cfg
	e0.Close()
	gate := make(chan struct{})
	var once sync.Once
	cfg.testWriterGate = func(ids.Pipeline) { once.Do(func() { <-gate }) }
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	p, ok := e.pipeOf(d.ID)
	if !ok {
		t.Fatal("the stored pipeline was not loaded")
	}
	m := newMember(t, ca)
	var pks []*Packet
	var pids []ids.Packet
	for s := uint64(1); s <= maxHeldPackets+1; s++ {
		id := packetID(d.ID, m.id, s, int64(s), 0, [32]byte{}, false, nil)
		pks = append(pks, &Packet{ID: id, Pipeline: d.ID, Sender: m.id, Seq: s, HLC: int64(s)})
		pids = append(pids, id)
	}
	pr := &history.Proof{Sender: m.id, FirstSeq: 1, LastSeq: maxHeldPackets, Signature: signBatch(m.key, pids[:maxHeldPackets])}
	e.logs.enqueue(p, ingest{pks: pks[:maxHeldPackets], proof: pr, cert: m.cert.Signed}, true)
	e.logs.enqueue(p, ingest{pks: pks[maxHeldPackets:], cert: m.cert.Signed}, true)
	if got := p.stats.dropped.Load(); got != 1 {
		t.Fatalf("%d packets counted dropped, want the 1 beyond maxHeldPackets", got)
	}
	close(gate)
	testutil.WaitFor(t, "the held packets logged", func() bool { return p.plog.log.Head(m.id) == maxHeldPackets })
}

// TestReopenKeepsHistory: what was put on a persistent pipeline is there,
// in order, after the engine is made again on the same store; Follow
// hands it out from the start and then what is put later, whose sequence
// numbers go on from the stored ones.
func TestReopenKeepsHistory(t *testing.T) {
	e0, d, _ := persistentEngine(t)
	ctx := t.Context()
	var ids [][32]byte
	for i := range 5 {
		id, err := e0.Put(ctx, d.ID, fmt.Appendf(nil, "p%d", i), 0, [32]byte{})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	cfg := e0.cfg
	e0.Close()

	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if got, ok := e.Pipeline(d.ID); !ok || got.Name != "p" {
		t.Fatal("the pipeline is not known after reopening")
	}
	recs := since(t, e, d.ID, -1)
	if len(recs) != 5 {
		t.Fatalf("%d records after reopening, want 5", len(recs))
	}
	for i, r := range recs {
		if r.ID != ids[i] || string(r.Data) != fmt.Sprintf("p%d", i) || r.Seq != uint64(i+1) {
			t.Fatalf("record %d: %q seq %d", i, r.Data, r.Seq)
		}
	}

	var mu sync.Mutex
	var got []*Packet
	fctx, cancel := context.WithCancel(ctx)
	ended := make(chan struct{})
	err = e.Follow(fctx, d.ID, -1, func(_ context.Context, pk *Packet) bool {
		mu.Lock()
		got = append(got, pk)
		mu.Unlock()
		return true
	}, func() { close(ended) })
	if err != nil {
		t.Fatal(err)
	}
	id6, err := e.Put(ctx, d.ID, []byte("p5"), 0, [32]byte{})
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "six packets followed", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) >= 6 })
	cancel()
	<-ended
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 6 || got[5].ID != id6 || got[5].Seq != 6 || got[5].Sender != e.self {
		t.Fatalf("followed %d packets; the last should be the new Put, seq 6", len(got))
	}
	for i, pk := range got[:5] {
		if pk.ID != ids[i] || !pk.Logged {
			t.Fatalf("followed packet %d is not the stored one", i)
		}
	}
}

// TestFollowStopsWhenAsked: Follow ends (end called once) when fn returns
// false, and hands out nothing more.
func TestFollowStopsWhenAsked(t *testing.T) {
	e, d, _ := persistentEngine(t)
	for i := range 3 {
		if _, err := e.Put(t.Context(), d.ID, fmt.Appendf(nil, "x%d", i), 0, [32]byte{}); err != nil {
			t.Fatal(err)
		}
	}
	calls := 0
	ended := make(chan struct{})
	err := e.Follow(t.Context(), d.ID, 0, func(context.Context, *Packet) bool { calls++; return false }, func() { close(ended) })
	if err != nil {
		t.Fatal(err)
	}
	<-ended
	if calls != 1 {
		t.Fatalf("fn called %d times after returning false, want 1", calls)
	}
	if err := e.Follow(t.Context(), [32]byte{0xde}, 0, func(context.Context, *Packet) bool { return true }, func() {}); err == nil {
		t.Fatal("Follow of an unknown pipeline did not fail")
	}
}
