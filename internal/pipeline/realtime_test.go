package pipeline

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/pipesnet/pipes/internal/identity"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

// rtFake is the engine as the realtime part sees it (rtEnv): it keeps the
// session keys sent and the packets delivered.
type rtFake struct {
	mu        sync.Mutex
	keys      []*pb.RealtimeKey
	keyDst    [][32]byte
	sendErr   error
	delivered []*Packet
	removed   map[*pipe]bool
	wg        sync.WaitGroup
}

func (f *rtFake) sendSealed(ctx context.Context, dst ids.Node, body []byte) error {
	var b pb.SealedBody
	if err := proto.Unmarshal(body, &b); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sendErr != nil {
		return f.sendErr
	}
	f.keys = append(f.keys, b.GetRealtimeKey())
	f.keyDst = append(f.keyDst, dst)
	return nil
}

func (f *rtFake) spawn(fn func()) bool {
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		fn()
	}()
	return true
}

func (f *rtFake) deliverDatagram(p *pipe, pk *Packet) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.removed[p] {
		return false
	}
	pk.Pipeline = p.def.ID
	f.delivered = append(f.delivered, pk)
	return true
}

func (f *rtFake) sent() []*pb.RealtimeKey {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*pb.RealtimeKey(nil), f.keys...)
}

func (f *rtFake) got() []*Packet {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*Packet(nil), f.delivered...)
}

// newTestRealtime makes a realtime part of a new node of testNet whose
// certificate ca issued.
func newTestRealtime(t *testing.T, ca *identity.KeyPair) (*realtime, *rtFake) {
	t.Helper()
	key, _ := identity.Generate()
	cert, err := identity.IssueCert(ca, "n", key.Public, testNet, "", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	f := &rtFake{removed: map[*pipe]bool{}}
	rt := (&realtime{self: cert.NodeID(), network: testNet, key: key, cert: cert, certs: &identity.CertCache{},
		ctx: t.Context(), env: f, rejected: &atomic.Uint64{}}).init()
	t.Cleanup(f.wg.Wait)
	return rt, f
}

// rtPipe is a realtime pipeline's state; to, if not zero, makes it
// point-to-point with that node.
func rtPipe(t *testing.T, id byte, self, to [32]byte) *pipe {
	d := &Def{ID: [32]byte{id, 0xee}, Name: "rt", Opts: Options{Realtime: true}}
	if to != ([32]byte{}) {
		d.Opts.ToNode = to
		d.A, d.B = self, to
	}
	return newPipe(t.Context(), d)
}

// TestRealtimeSessionKeys: a session's key is sent once, signed for its
// receiver, and sent again only after rtResend; the session is renewed
// after rtSessionAge; the receiver takes a key once and refuses copies
// for another node, from another sender, tampered or too old.
func TestRealtimeSessionKeys(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ca, _ := identity.Generate()
		a, fa := newTestRealtime(t, ca)
		b, _ := newTestRealtime(t, ca)
		c, _ := newTestRealtime(t, ca)

		s, n, err := a.session(t.Context(), b.self)
		if err != nil || n != 1 {
			t.Fatalf("first session: counter %d, %v", n, err)
		}
		s2, n2, _ := a.session(t.Context(), b.self)
		synctest.Wait()
		if s2 != s || n2 != 2 || len(fa.sent()) != 1 {
			t.Fatalf("second datagram: same session %v, counter %d, keys sent %d (want true, 2, 1)", s2 == s, n2, len(fa.sent()))
		}
		k := fa.sent()[0]
		if [8]byte(k.KeyId) != s.id || fa.keyDst[0] != b.self || k.Counter != 0 {
			t.Fatalf("key sent: id %x to %x counter %d", k.KeyId, fa.keyDst[0][:4], k.Counter)
		}

		if err := c.acceptKey(a.self, k); err == nil {
			t.Fatal("a key signed for b was taken by c")
		}
		if err := b.acceptKey(c.self, k); err == nil {
			t.Fatal("a's key was taken as c's")
		}
		bad := proto.Clone(k).(*pb.RealtimeKey)
		bad.Counter = 99
		if err := b.acceptKey(a.self, bad); err == nil {
			t.Fatal("a tampered key (counter) was taken")
		}
		if err := b.acceptKey(a.self, k); err != nil {
			t.Fatalf("b refuses a's key: %v", err)
		}
		if err := b.acceptKey(a.self, k); err != nil || len(b.mu.recv) != 1 {
			t.Fatalf("a resent key: %v, %d sessions (want nil, 1)", err, len(b.mu.recv))
		}

		// Past rtResend the key goes again, with the counter reached.
		time.Sleep(rtResend)
		_, n3, _ := a.session(t.Context(), b.self)
		synctest.Wait()
		if keys := fa.sent(); len(keys) != 2 || [8]byte(keys[1].KeyId) != s.id || keys[1].Counter != n3 {
			t.Fatalf("after rtResend: %d keys sent, last counter %d (want 2, %d)", len(keys), keys[len(keys)-1].Counter, n3)
		}

		// A copy older than rtKeyAge is refused, even by a node that lost
		// its sessions.
		time.Sleep(rtKeyAge + time.Second)
		fresh, _ := newTestRealtime(t, ca)
		fresh.self = b.self
		if err := fresh.acceptKey(a.self, k); err == nil {
			t.Fatal("a key older than rtKeyAge was taken")
		}

		// Past rtSessionAge a new session, with a new key, starts.
		time.Sleep(rtSessionAge)
		s4, n4, err := a.session(t.Context(), b.self)
		if err != nil || s4 == s || s4.id == s.id || n4 != 1 {
			t.Fatalf("after rtSessionAge: new session %v, counter %d, %v", s4 != s, n4, err)
		}
		synctest.Wait()
	})
}

// TestRealtimeSessionKeyNotSent: a session whose key cannot be sent is
// not opened (no datagram would be readable).
func TestRealtimeSessionKeyNotSent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ca, _ := identity.Generate()
		a, fa := newTestRealtime(t, ca)
		fa.sendErr = errors.New("no route")
		if _, _, err := a.session(t.Context(), [32]byte{9}); err == nil {
			t.Fatal("a session opened without its key")
		}
		if len(a.mu.send) != 0 {
			t.Fatal("a session was kept although its key was not sent")
		}
	})
}

// rtPair is a sender a and a receiver b that holds a's session key.
func rtPair(t *testing.T) (a, b *realtime, fb *rtFake, s *rtSend) {
	t.Helper()
	ca, _ := identity.Generate()
	a, fa := newTestRealtime(t, ca)
	b, fb = newTestRealtime(t, ca)
	s, _, err := a.session(t.Context(), b.self)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.acceptKey(a.self, fa.sent()[0]); err != nil {
		t.Fatal(err)
	}
	return a, b, fb, s
}

// TestRealtimeDatagrams: a datagram is delivered once to its pipeline;
// one of an unknown, removed or dropped pipeline, a replay, a tampered or
// short one, and one of a point-to-point pipeline from another node than
// its other node are rejected and counted.
func TestRealtimeDatagrams(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b, fb, s := rtPair(t)
		p := rtPipe(t, 1, b.self, [32]byte{})
		counter := uint64(1)
		dg := func(p *pipe, seq uint64, data string) []byte {
			counter++
			return s.seal(counter, rtPlain(p.def.ID, seq, 7, 3, []byte(data)))
		}
		rejects := func(what string, raw []byte) {
			t.Helper()
			before, n := b.rejected.Load(), len(fb.got())
			b.openDatagram(raw)
			if b.rejected.Load() != before+1 || len(fb.got()) != n {
				t.Fatalf("%s: rejected %d -> %d, delivered %d -> %d (want +1, +0)", what, before, b.rejected.Load(), n, len(fb.got()))
			}
		}

		rejects("unknown pipeline", dg(p, 1, "x"))
		b.addPipe(p)
		first := dg(p, 2, "hello")
		b.openDatagram(first)
		got := fb.got()
		if len(got) != 1 || got[0].Pipeline != p.def.ID || got[0].Sender != a.self || got[0].Seq != 2 ||
			got[0].HLC != 7 || got[0].Type != 3 || string(got[0].Data) != "hello" {
			t.Fatalf("delivered %+v", got)
		}
		rejects("replay", first)
		tampered := dg(p, 3, "y")
		tampered[len(tampered)-1] ^= 1
		rejects("tampered", tampered)
		rejects("short", first[:rtHeader+4])

		// Point-to-point with another node: a's datagrams are refused.
		q := rtPipe(t, 2, b.self, [32]byte{0x42})
		b.addPipe(q)
		rejects("point-to-point from a stranger", dg(q, 1, "z"))

		// Removed while the datagram was on its way.
		fb.mu.Lock()
		fb.removed[p] = true
		fb.mu.Unlock()
		rejects("removed pipeline", dg(p, 4, "w"))

		b.dropPipe(p)
		fb.mu.Lock()
		fb.removed[p] = false
		fb.mu.Unlock()
		rejects("dropped pipeline", dg(p, 5, "v"))
		if len(fb.got()) != 1 {
			t.Fatalf("%d packets delivered, want 1", len(fb.got()))
		}
	})
}

// TestRealtimeEarlyDatagrams: a datagram that comes before its session's
// key waits for it (rtMaxEarly at most), and is dropped once older than
// rtEarlyAge.
func TestRealtimeEarlyDatagrams(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ca, _ := identity.Generate()
		a, fa := newTestRealtime(t, ca)
		b, fb := newTestRealtime(t, ca)
		p := rtPipe(t, 1, b.self, [32]byte{})
		b.addPipe(p)
		s, _, _ := a.session(t.Context(), b.self)
		b.openDatagram(s.seal(2, rtPlain(p.def.ID, 1, 1, 0, []byte("early"))))
		if b.rejected.Load() != 0 || len(fb.got()) != 0 {
			t.Fatal("a datagram before its key was not kept")
		}
		if err := b.acceptKey(a.self, fa.sent()[0]); err != nil {
			t.Fatal(err)
		}
		if got := fb.got(); len(got) != 1 || string(got[0].Data) != "early" {
			t.Fatalf("after the key: %d delivered, want the early one", len(got))
		}

		// Another session: one datagram waits too long, rtMaxEarly more
		// fill the room, and the next is refused.
		s2, _, _ := a.session(t.Context(), [32]byte{5})
		other, _, _ := a.session(t.Context(), [32]byte{6})
		b.openDatagram(s2.seal(1, rtPlain(p.def.ID, 2, 2, 0, []byte("stale"))))
		time.Sleep(rtEarlyAge + time.Second)
		for i := range rtMaxEarly {
			b.openDatagram(other.seal(uint64(i+1), rtPlain(p.def.ID, 3, 3, 0, nil)))
		}
		if len(b.mu.early) != rtMaxEarly || b.rejected.Load() != 0 {
			t.Fatalf("%d early datagrams kept, %d rejected (want %d, 0: the stale one went)", len(b.mu.early), b.rejected.Load(), rtMaxEarly)
		}
		b.openDatagram(other.seal(rtMaxEarly+1, rtPlain(p.def.ID, 3, 3, 0, nil)))
		if b.rejected.Load() != 1 {
			t.Fatalf("beyond rtMaxEarly: %d rejected, want 1", b.rejected.Load())
		}
		synctest.Wait()
	})
}

// TestRealtimeReplayWindow: each counter is taken once, out of order
// within rtWindow; counters older than the window, or not above the one
// the key was sent with, are refused.
func TestRealtimeReplayWindow(t *testing.T) {
	r := &rtRecv{max: 10}
	for i := range r.window {
		r.window[i] = ^uint64(0)
	}
	for _, c := range []uint64{5, 10} {
		if r.accept(c) {
			t.Fatalf("counter %d, not above the key's, was taken", c)
		}
	}
	for _, c := range []uint64{12, 11, 20} {
		if !r.accept(c) {
			t.Fatalf("counter %d refused", c)
		}
	}
	if r.accept(11) || r.accept(20) {
		t.Fatal("a counter was taken twice")
	}
	if !r.accept(20 + rtWindow) {
		t.Fatal("a jump ahead was refused")
	}
	if r.accept(20) || !r.accept(21+1) {
		t.Fatal("window edge: the counter rtWindow behind must go, one inside must be taken")
	}
}
