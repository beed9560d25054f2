package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/pipesnet/pipes/internal/identity"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/kinds"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

var testNet = [32]byte{7}

// fakeNet connects engines in memory: broadcasts go to every other engine
// through Validate and Deliver, routed messages straight to the target.
type fakeNet struct {
	mu      sync.Mutex
	engines map[[32]byte]*Engine
	keys    map[[32]byte][]byte
	sent    []routedMsg // every routed message, for inspection
	bcasts  [][]byte    // every broadcast batch
}

type fakeHost struct {
	net  *fakeNet
	self [32]byte
}

func (h *fakeHost) Broadcast(ctx context.Context, kind uint32, payload []byte) error {
	h.net.mu.Lock()
	var targets []*Engine
	for id, e := range h.net.engines {
		if id != h.self {
			targets = append(targets, e)
		}
	}
	if kind == kinds.Batch {
		h.net.bcasts = append(h.net.bcasts, payload)
	}
	h.net.mu.Unlock()
	for _, e := range targets {
		if v, err := e.Validate(kind, payload, h.self); err == nil {
			e.Deliver(kind, payload, h.self, v)
		}
	}
	return nil
}

func (h *fakeHost) Send(ctx context.Context, dst ids.Node, kind uint32, payload []byte) error {
	h.net.mu.Lock()
	e := h.net.engines[dst]
	h.net.sent = append(h.net.sent, routedMsg{src: h.self, kind: kind, payload: payload})
	h.net.mu.Unlock()
	if e == nil {
		return errors.New("no route")
	}
	e.DeliverRouted(h.self, kind, payload)
	return nil
}

// SendDirect: in the fake network no two nodes are peers, so every private
// message is sealed.
func (h *fakeHost) SendDirect(ctx context.Context, dst ids.Node, kind uint32, payload []byte) error {
	return errors.New("not a peer")
}

// Peers: no two nodes of the fake network are peers.
func (h *fakeHost) Peers() []ids.Node { return nil }

// Online: every node of the fake network.
func (h *fakeHost) Online() []ids.Node {
	h.net.mu.Lock()
	defer h.net.mu.Unlock()
	var out []ids.Node
	for id := range h.net.engines {
		if id != h.self {
			out = append(out, id)
		}
	}
	return out
}

// SendDatagram delivers at once; the fake network neither loses nor
// limits datagrams.
func (h *fakeHost) SendDatagramWait(ctx context.Context, dst ids.Node, payload []byte) error {
	h.net.mu.Lock()
	e := h.net.engines[dst]
	h.net.mu.Unlock()
	if e == nil {
		return errors.New("no route")
	}
	e.DeliverDatagram(payload)
	return nil
}

func (h *fakeHost) HPKEKey(node ids.Node) ([]byte, bool) {
	h.net.mu.Lock()
	defer h.net.mu.Unlock()
	k, ok := h.net.keys[node]
	return k, ok
}

type testNode struct {
	e    *Engine
	id   [32]byte
	key  *identity.KeyPair
	cert *identity.Cert
}

func newTestNet(t *testing.T, n int) (*fakeNet, []testNode) {
	t.Helper()
	fn := &fakeNet{engines: map[[32]byte]*Engine{}, keys: map[[32]byte][]byte{}}
	var nodes []testNode
	for i := range n {
		ident, _ := identity.Generate()
		key, _ := identity.Generate()
		cert, err := identity.IssueCert(ident, fmt.Sprintf("n%d", i), key.Public, testNet, "", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		hk, err := kem.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		id := cert.NodeID()
		e, err := New(Config{Network: testNet, Key: key, Cert: cert, HPKE: hk, Host: &fakeHost{net: fn, self: id}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(e.Close)
		fn.engines[id] = e
		fn.keys[id] = hk.PublicKey().Bytes()
		nodes = append(nodes, testNode{e: e, id: id, key: key, cert: cert})
	}
	return fn, nodes
}

// collect subscribes to pipeline id on e and returns a function that
// waits for want packets (or fails after a generous limit).
func collect(t *testing.T, e *Engine, id [32]byte) func(want int) []*Packet {
	t.Helper()
	var mu sync.Mutex
	var got []*Packet
	err := e.Subscribe(t.Context(), id, func(p *Packet) bool {
		mu.Lock()
		got = append(got, p)
		mu.Unlock()
		return true
	}, func() {})
	if err != nil {
		t.Fatal(err)
	}
	return func(want int) []*Packet {
		t.Helper()
		limit := 20 * time.Second
		if want < 0 { // only what is there after a short while
			want, limit = 1<<30, 100*time.Millisecond
		}
		deadline := time.Now().Add(limit)
		for {
			mu.Lock()
			n := len(got)
			mu.Unlock()
			if n >= want || time.Now().After(deadline) {
				mu.Lock()
				defer mu.Unlock()
				return append([]*Packet(nil), got...)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

func wait(t *testing.T, e *Engine, id [32]byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.Wait(ctx, id); err != nil {
		t.Fatalf("pipeline not known: %v", err)
	}
}

func TestBroadcastDeliversVerifiedPacketsOnce(t *testing.T) {
	_, ns := newTestNet(t, 3)
	a, b, c := ns[0], ns[1], ns[2]
	d, err := a.e.Create(t.Context(), "chat", Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	again, err := a.e.Create(t.Context(), "chat", Options{}, nil)
	if err != nil || again.ID != d.ID {
		t.Fatalf("create again: %v", err)
	}
	if _, err := a.e.Create(t.Context(), "chat", Options{Ephemeral: true}, nil); !errors.Is(err, ErrConflict) {
		t.Fatalf("conflicting create: %v", err)
	}
	wait(t, b.e, d.ID)
	wait(t, c.e, d.ID)
	gotB, gotC := collect(t, b.e, d.ID), collect(t, c.e, d.ID)
	const n = 1000
	ids := map[[32]byte]bool{}
	for i := range n {
		id, err := a.e.Put(t.Context(), d.ID, []byte(fmt.Sprintf("msg %d", i)), int64(i%3), [32]byte{})
		if err != nil {
			t.Fatal(err)
		}
		ids[id] = true
	}
	for _, got := range [][]*Packet{gotB(n), gotC(n)} {
		if len(got) != n {
			t.Fatalf("got %d packets, want %d", len(got), n)
		}
		for _, p := range got {
			if !ids[p.ID] || p.Sender != a.id || p.Pipeline != d.ID {
				t.Fatalf("unexpected packet %x", p.ID[:4])
			}
			if want := packetID(d.ID, a.id, p.Seq, p.HLC, p.Type, p.Destination, p.File, p.Data); want != p.ID {
				t.Fatal("packet id does not match its content")
			}
		}
	}
	if s := a.e.Stats(); s.Sent != n {
		t.Fatalf("sent %d", s.Sent)
	}
}

func TestForgedTamperedReplayedOversizedAreRejected(t *testing.T) {
	fn, ns := newTestNet(t, 2)
	a, b := ns[0], ns[1]
	d, _ := a.e.Create(t.Context(), "p", Options{}, nil)
	wait(t, b.e, d.ID)
	got := collect(t, b.e, d.ID)
	if _, err := a.e.Put(t.Context(), d.ID, []byte("hello"), 0, [32]byte{}); err != nil {
		t.Fatal(err)
	}
	if n := len(got(1)); n != 1 {
		t.Fatalf("got %d", n)
	}
	fn.mu.Lock()
	raw := fn.bcasts[0]
	fn.mu.Unlock()

	// Replay: the same batch again is verified but not delivered twice.
	v, err := b.e.Validate(kinds.Batch, raw, a.id)
	if err != nil {
		t.Fatal(err)
	}
	b.e.Deliver(kinds.Batch, raw, a.id, v)
	if n := len(got(-1)); n != 1 {
		t.Fatalf("replay delivered: %d packets", n)
	}
	// Tampered data.
	var batch pb.PacketBatch
	proto.Unmarshal(raw, &batch)
	tampered := proto.Clone(&batch).(*pb.PacketBatch)
	tampered.Packets[0].Data = []byte("HELLO")
	tb, _ := proto.Marshal(tampered)
	if _, err := b.e.Validate(kinds.Batch, tb, a.id); !errors.Is(err, ErrBadBatch) {
		t.Fatalf("tampered batch: %v", err)
	}
	// Forged: a batch claiming a's certificate, signed by another key.
	forged := proto.Clone(&batch).(*pb.PacketBatch)
	other, _ := identity.Generate()
	id := packetID(d.ID, a.id, 99, time.Now().UnixNano(), 0, [32]byte{}, false, []byte("evil"))
	forged.Packets = []*pb.Packet{{Seq: 99, Hlc: time.Now().UnixNano(), Data: []byte("evil")}}
	forged.Signature = signBatch(other, []ids.Packet{id})
	fb, _ := proto.Marshal(forged)
	if _, err := b.e.Validate(kinds.Batch, fb, a.id); !errors.Is(err, ErrBadBatch) {
		t.Fatalf("forged batch: %v", err)
	}
	// Oversized.
	if _, err := a.e.Put(t.Context(), d.ID, make([]byte, MaxPacketSize+1), 0, [32]byte{}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized put: %v", err)
	}
	big := proto.Clone(&batch).(*pb.PacketBatch)
	big.Packets[0].Data = make([]byte, maxWireData+1)
	bb, _ := proto.Marshal(big)
	if _, err := b.e.Validate(kinds.Batch, bb, a.id); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized batch: %v", err)
	}
	// Under another origin.
	if _, err := b.e.Validate(kinds.Batch, raw, b.id); err == nil {
		t.Fatal("batch accepted under another origin")
	}
	if s := b.e.Stats(); s.Rejected < 4 || s.Delivered != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestPointToPointIsSealedAndPrivate(t *testing.T) {
	fn, ns := newTestNet(t, 3)
	a, b, c := ns[0], ns[1], ns[2]
	d, err := a.e.Create(t.Context(), "secret-chat", Options{ToNode: b.id}, nil)
	if err != nil {
		t.Fatal(err)
	}
	wait(t, b.e, d.ID)
	if _, ok := c.e.Pipeline(d.ID); ok {
		t.Fatal("a third node learned of a point-to-point pipeline")
	}
	bd, _ := b.e.Pipeline(d.ID)
	if bd.Opts.ToNode != a.id {
		t.Fatal("b's view of the pipeline does not point at a")
	}
	got := collect(t, b.e, d.ID)
	marker := []byte("plaintext-marker-0123456789")
	if _, err := a.e.Put(t.Context(), d.ID, marker, 1, [32]byte{}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.e.Put(t.Context(), d.ID, []byte("reply"), 1, [32]byte{}); err != nil {
		t.Fatal(err)
	}
	ps := got(1)
	if len(ps) != 1 || !bytes.Equal(ps[0].Data, marker) || ps[0].Destination != b.id {
		t.Fatalf("b got %v", ps)
	}
	fn.mu.Lock()
	defer fn.mu.Unlock()
	for _, m := range fn.sent {
		if bytes.Contains(m.payload, marker) || bytes.Contains(m.payload, []byte("secret-chat")) {
			t.Fatal("a routed message carries plaintext")
		}
	}
	if len(fn.bcasts) != 0 {
		t.Fatal("a point-to-point packet was broadcast")
	}
}

func TestDestinationOnBroadcastPipeline(t *testing.T) {
	_, ns := newTestNet(t, 3)
	a, b, c := ns[0], ns[1], ns[2]
	d, _ := a.e.Create(t.Context(), "room", Options{}, nil)
	wait(t, b.e, d.ID)
	wait(t, c.e, d.ID)
	gotB, gotC := collect(t, b.e, d.ID), collect(t, c.e, d.ID)
	if _, err := a.e.Put(t.Context(), d.ID, []byte("for c"), 0, c.id); err != nil {
		t.Fatal(err)
	}
	if _, err := a.e.Put(t.Context(), d.ID, []byte("for all"), 0, [32]byte{}); err != nil {
		t.Fatal(err)
	}
	if ps := gotC(2); len(ps) != 2 {
		t.Fatalf("c got %d packets", len(ps))
	}
	if ps := gotB(-1); len(ps) != 1 || string(ps[0].Data) != "for all" {
		t.Fatalf("b got %d packets", len(ps))
	}
}

func TestFullSubscriberCountsDrops(t *testing.T) {
	_, ns := newTestNet(t, 2)
	a, b := ns[0], ns[1]
	d, _ := a.e.Create(t.Context(), "p", Options{}, nil)
	wait(t, b.e, d.ID)
	var mu sync.Mutex
	taken := 0
	b.e.Subscribe(t.Context(), d.ID, func(*Packet) bool {
		mu.Lock()
		defer mu.Unlock()
		if taken < 10 {
			taken++
			return true
		}
		return false
	}, func() {})
	for i := range 50 {
		a.e.Put(t.Context(), d.ID, []byte{byte(i)}, 0, [32]byte{})
	}
	deadline := time.Now().Add(10 * time.Second)
	for b.e.PipelineStats(d.ID).Delivered < 50 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	s := b.e.PipelineStats(d.ID)
	if s.Delivered != 50 || s.Dropped != 40 {
		t.Fatalf("stats %+v: every packet must be delivered or counted as dropped", s)
	}
}

func FuzzValidate(f *testing.F) {
	ident, _ := identity.Generate()
	key, _ := identity.Generate()
	cert, _ := identity.IssueCert(ident, "f", key.Public, testNet, "", time.Now())
	hk, _ := kem.GenerateKey()
	fn := &fakeNet{engines: map[[32]byte]*Engine{}, keys: map[[32]byte][]byte{}}
	e, err := New(Config{Network: testNet, Key: key, Cert: cert, HPKE: hk, Host: &fakeHost{net: fn, self: cert.NodeID()}})
	if err != nil {
		f.Fatal(err)
	}
	defer e.Close()
	pid := [32]byte{1}
	pk := &pb.Packet{Seq: 1, Hlc: 5, Data: []byte("x")}
	id := packetID(pid, cert.NodeID(), 1, 5, 0, [32]byte{}, false, []byte("x"))
	b, _ := proto.Marshal(&pb.PacketBatch{NodeCert: cert.Signed, Pipeline: pid[:], Packets: []*pb.Packet{pk}, Signature: signBatch(key, []ids.Packet{id})})
	f.Add(uint8(3), b)
	d, _, _ := newDef(testNet, cert.NodeID(), "x", Options{}, nil)
	db, _ := proto.Marshal(d.toProto())
	f.Add(uint8(2), db)
	f.Fuzz(func(t *testing.T, kind uint8, data []byte) {
		v, err := e.Validate(uint32(kind), data, cert.NodeID())
		if err == nil {
			e.Deliver(uint32(kind), data, cert.NodeID(), v)
		}
		e.DeliverRouted(cert.NodeID(), uint32(kind), data)
	})
}
