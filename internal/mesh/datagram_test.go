package mesh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/quic-go/quic-go"

	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/transport"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var testNetKey = [32]byte{7}

// liveMesh is a started mesh on a real QUIC socket on 127.0.0.1, with the
// datagrams delivered to it.
type liveMesh struct {
	*Mesh
	id   ids.Node
	addr string
	got  chan []byte
}

// startMesh starts a mesh named name that keeps the gateways connected.
// Its target degree is one, so a node that knows only a gateway stays
// with it alone.
func startMesh(t testing.TB, name string, gateways ...string) *liveMesh {
	t.Helper()
	n := newTestNode(t, testNet, name)
	tr, err := transport.Listen("127.0.0.1:0", transport.Config{Key: n.key, Cert: n.cert, NetworkID: testNet,
		NetworkKey: testNetKey, Incarnation: 1, HandshakeTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	lm := &liveMesh{id: n.cert.NodeID(), addr: tr.Addr().String(), got: make(chan []byte, 64)}
	m, err := New(Config{
		Transport: tr, Key: n.key, Cert: n.cert, Incarnation: 1, Version: "test",
		Gateways:     func() []string { return gateways },
		Addrs:        func() []string { return []string{lm.addr} },
		TargetDegree: 1,
		Heartbeat:    200 * time.Millisecond,
		OfflineAfter: 10 * time.Second,
		DeliverDatagram: func(p []byte) {
			select {
			case lm.got <- p:
			default:
			}
		},
		// Streams echo what they get, then end.
		OnStream: func(peer ids.Node, st *quic.Stream) {
			go func() {
				io.Copy(st, st)
				st.Close()
			}()
		},
	})
	if err != nil {
		tr.Close()
		t.Fatal(err)
	}
	m.Start()
	lm.Mesh = m
	t.Cleanup(func() { m.Close() })
	return lm
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(t testing.TB, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("%s: %v", what, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// routable waits until from has a datagram route to to.
func routable(t testing.TB, ctx context.Context, from, to *liveMesh) {
	t.Helper()
	waitFor(t, ctx, fmt.Sprintf("route %s", to.id.Short()), func() bool {
		_, err := from.MaxDatagramPayload(to.id)
		return err == nil
	})
}

// pair starts two meshes, b with a as its gateway, and waits for
// datagram routes both ways.
func pair(t testing.TB, ctx context.Context) (a, b *liveMesh) {
	t.Helper()
	a = startMesh(t, "a")
	b = startMesh(t, "b", a.addr)
	routable(t, ctx, a, b)
	routable(t, ctx, b, a)
	return a, b
}

// datagramLine starts a relay and two nodes that know only the relay, and
// waits until the two have datagram routes to each other through it.
func datagramLine(t testing.TB, ctx context.Context) (a, r, b *liveMesh) {
	t.Helper()
	r = startMesh(t, "relay")
	a = startMesh(t, "alice", r.addr)
	b = startMesh(t, "bob", r.addr)
	routable(t, ctx, a, b)
	routable(t, ctx, b, a)
	return a, r, b
}

// sendUntil sends payload from `from` to `to` until `to` receives it
// (datagrams may be lost) or ctx ends.
func sendUntil(t testing.TB, ctx context.Context, from, to *liveMesh, payload []byte) {
	t.Helper()
	for {
		if err := from.SendDatagram(to.id, payload); err != nil && !errors.Is(err, ErrBusy) {
			t.Fatalf("SendDatagram: %v", err)
		}
		select {
		case got := <-to.got:
			if !bytes.Equal(got, payload) {
				t.Fatalf("received %d bytes %.16x, want %d bytes %.16x", len(got), got, len(payload), payload)
			}
			return
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			t.Fatalf("datagram never arrived: %v", ctx.Err())
		}
	}
}

func isPeer(m *liveMesh, id ids.Node) bool {
	for _, p := range m.Peers() {
		if p.ID == id {
			return true
		}
	}
	return false
}

func TestDatagramDirect(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b := pair(t, ctx)
	sendUntil(t, ctx, a, b, []byte("hello b"))
	sendUntil(t, ctx, b, a, []byte("hello a"))
	if s := a.Stats().Datagrams; s.Sent == 0 || s.Received == 0 || s.Forwarded != 0 {
		t.Fatalf("a's datagram stats: %+v", s)
	}
	if s := b.Stats().Datagrams; s.Received == 0 || s.Malformed != 0 {
		t.Fatalf("b's datagram stats: %+v", s)
	}
}

func TestDatagramThroughRelay(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, r, b := datagramLine(t, ctx)
	sendUntil(t, ctx, a, b, []byte("via the relay"))
	sendUntil(t, ctx, b, a, []byte("and back"))
	if isPeer(a, b.id) || isPeer(b, a.id) {
		t.Fatal("alice and bob are peers: nothing was relayed")
	}
	rs := r.Stats()
	if rs.Datagrams.Forwarded < 2 || rs.Datagrams.Received != 0 {
		t.Fatalf("relay's datagram stats: %+v", rs.Datagrams)
	}
	if rs.Routed != 0 {
		t.Fatalf("relay forwarded %d messages on streams", rs.Routed)
	}
	if s := b.Stats().Datagrams; s.Received == 0 || s.Forwarded != 0 {
		t.Fatalf("bob's datagram stats: %+v", s)
	}
}

func TestDatagramTooLarge(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b := pair(t, ctx)
	err := a.SendDatagram(b.id, make([]byte, 64<<10))
	if !errors.Is(err, ErrDatagramTooLarge) {
		t.Fatalf("64 KiB datagram: %v", err)
	}
	var tl *DatagramTooLargeError
	if !errors.As(err, &tl) || tl.Max <= 0 {
		t.Fatalf("no limit in %v", err)
	}
	limit, err := a.MaxDatagramPayload(b.id)
	if err != nil || limit < tl.Max {
		t.Fatalf("MaxDatagramPayload = %d, %v; the error said %d", limit, err, tl.Max)
	}
	t.Logf("largest datagram payload on loopback: %d bytes (MaxDatagramPayload %d)", tl.Max, limit)
	payload := bytes.Repeat([]byte{0xa5}, tl.Max)
	payload[0], payload[len(payload)-1] = 1, 2
	sendUntil(t, ctx, a, b, payload)
	if s := a.Stats().Datagrams; s.TooLarge != 0 || s.Dropped != s.QueueFull {
		t.Fatalf("a's datagram stats: %+v", s)
	}
}

func TestDatagramNoRoute(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, _ := pair(t, ctx)
	unknown := ids.Node{1, 2, 3}
	if err := a.SendDatagram(unknown, []byte("x")); !errors.Is(err, ErrNoRoute) {
		t.Fatalf("to an unknown node: %v", err)
	}
	if _, err := a.MaxDatagramPayload(unknown); !errors.Is(err, ErrNoRoute) {
		t.Fatalf("MaxDatagramPayload of an unknown node: %v", err)
	}
	if err := a.SendDatagram(a.id, []byte("x")); !errors.Is(err, ErrNoRoute) {
		t.Fatalf("to itself: %v", err)
	}
	a.Close()
	if err := a.SendDatagram(unknown, []byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

// TestDatagramNeverBlocks sends far more than the link takes at once: every
// call returns, and what is not queued is refused with ErrBusy and counted.
func TestDatagramNeverBlocks(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b := pair(t, ctx)
	const n = 20000
	payload := make([]byte, 1000)
	busy := 0
	for range n {
		switch err := a.SendDatagram(b.id, payload); {
		case errors.Is(err, ErrBusy):
			busy++
		case err != nil:
			t.Fatal(err)
		}
	}
	s := a.Stats().Datagrams
	if s.Sent+s.QueueFull != n || s.QueueFull != uint64(busy) {
		t.Fatalf("%d datagrams, %d busy, stats %+v", n, busy, s)
	}
	t.Logf("%d of %d datagrams queued, %d refused as busy", s.Sent, n, busy)
}

// TestDatagramWaitQueuesEverything: SendDatagramWait waits for room
// instead of refusing, and gives up with its context.
func TestDatagramWaitQueuesEverything(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a, b := pair(t, ctx)
	const n = 20000
	payload := make([]byte, 1000)
	for range n {
		if err := a.SendDatagramWait(ctx, b.id, payload); err != nil {
			t.Fatal(err)
		}
	}
	if s := a.Stats().Datagrams; s.Sent != n || s.QueueFull != 0 {
		t.Fatalf("stats %+v", s)
	}
	done, stop := context.WithCancel(ctx)
	stop()
	for {
		err := a.SendDatagramWait(done, b.id, payload)
		if errors.Is(err, context.Canceled) {
			break // the queue filled up and the wait ended with the context
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestDatagramNoLeaks(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, r, b := datagramLine(t, ctx)
	sendUntil(t, ctx, a, b, []byte("one"))
	for range 100 {
		a.SendDatagram(b.id, []byte("more")) // queued when the meshes close
	}
	for _, m := range []*liveMesh{a, b, r} {
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
	}
	goleak.VerifyNone(t)
}

// TestHandleDatagram feeds datagrams to a mesh that is not started: it
// drops the malformed, the expired and the unroutable, and delivers its
// own.
func TestHandleDatagram(t *testing.T) {
	n := newTestNode(t, testNet, "solo")
	tr, err := transport.Listen("127.0.0.1:0", transport.Config{Key: n.key, Cert: n.cert, NetworkID: testNet, NetworkKey: testNetKey})
	if err != nil {
		t.Fatal(err)
	}
	var got [][]byte
	m, err := New(Config{Transport: tr, Key: n.key, Cert: n.cert, DeliverDatagram: func(p []byte) { got = append(got, p) }})
	if err != nil {
		tr.Close()
		t.Fatal(err)
	}
	defer m.Close()
	self, other := ids.Node(n.cert.NodeID()), ids.Node{9}
	from := &peer{}
	mine := appendDatagram(nil, 1, self, []byte("mine"))
	for _, b := range [][]byte{
		nil,
		{dgVersion},
		mine[:dgHeaderLen-1],
		append([]byte{0}, mine[1:]...), // unknown version
		append([]byte{dgVersion, 0}, mine[2:]...), // zero TTL
	} {
		m.handleDatagram(from, b)
	}
	m.handleDatagram(from, appendDatagram(nil, 1, other, []byte("expired")))
	m.handleDatagram(from, appendDatagram(nil, 5, other, []byte("no route")))
	m.handleDatagram(from, mine)
	m.handleDatagram(from, appendDatagram(nil, maxTTL, self, nil))
	want := DatagramStats{Received: 2, Dropped: 7, Malformed: 5, Expired: 1, NoRoute: 1}
	if s := m.Stats().Datagrams; s != want {
		t.Fatalf("stats %+v, want %+v", s, want)
	}
	if len(got) != 2 || string(got[0]) != "mine" || len(got[1]) != 0 {
		t.Fatalf("delivered %q", got)
	}
}

func FuzzDatagramHeader(f *testing.F) {
	f.Add(appendDatagram(nil, maxTTL, ids.Node{1}, []byte("payload")))
	f.Add(appendDatagram(nil, 1, ids.Node{}, nil))
	f.Add([]byte{})
	f.Add([]byte{dgVersion})
	f.Add([]byte{dgVersion, 0})
	f.Add(make([]byte, dgHeaderLen))
	f.Fuzz(func(t *testing.T, b []byte) {
		ttl, dst, payload, err := parseDatagram(b)
		valid := len(b) >= dgHeaderLen && b[0] == dgVersion && b[1] != 0
		if (err == nil) != valid {
			t.Fatalf("parseDatagram(%x): err %v, valid %v", b, err, valid)
		}
		if err != nil {
			return
		}
		if again := appendDatagram(nil, ttl, dst, payload); !bytes.Equal(again, b) {
			t.Fatalf("re-encoded %x as %x", b, again)
		}
	})
}
