package pipes_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pipesnet/pipes"
)

// TestSixNodesOneGateway: seven nodes that each know only the first node
// find every other node, keep a bounded degree, report a departure, take a
// restarted node back, and reconnect to a restarted gateway.
func TestSixNodesOneGateway(t *testing.T) {
	ms := cluster(t, "n", 7, []pipes.NodeOption{pipes.WithListenAddr(loopback(freePort(t)))}, pipes.WithTargetDegree(3))
	gw := ms[0]

	// Peer exchange: nodes told only of the gateway reach their target
	// degree through peers they learned of.
	eventually(t, 30*time.Second, "peer exchange", func() error {
		for _, m := range ms[1:] {
			peers := m.n.ConnectedPeers()
			if len(peers) < 3 {
				return fmt.Errorf("%s has %d peers, want at least 3", m.n.Location(), len(peers))
			}
			for _, r := range peers {
				if !r.IsPeer() || !r.IsConnected() {
					return fmt.Errorf("peer %s not marked peer/online", r.ID())
				}
			}
		}
		return nil
	})

	// NodeWithID by prefix; names and locations travel with presence.
	target := ms[3].n.ID()
	ref, err := ms[1].n.NodeWithID(target.String()[:10])
	if err != nil || ref.ID() != target || ref.Name() != "n3" || ref.Location() != "n3-loc" || ref.Version() == "" {
		t.Fatalf("NodeWithID: %v %+v", err, ref)
	}
	if _, err := ms[1].n.NodeWithID("ffffffffffffffffffff"); !errors.Is(err, pipes.ErrNotFound) && err != nil {
		t.Fatalf("NodeWithID unknown: %v", err)
	}
	if _, err := ms[1].n.NodeWithID(""); !errors.Is(err, pipes.ErrInvalidID) {
		t.Fatalf("NodeWithID empty: %v", err)
	}
	if _, err := ms[1].n.NodeWithID("xyz"); !errors.Is(err, pipes.ErrInvalidID) {
		t.Fatalf("NodeWithID non-hex: %v", err)
	}

	// A clean departure is reported everywhere; KnownNodes keeps the node.
	leaver := ms[6]
	var mu sync.Mutex
	var sawOffline bool
	l := &pipes.NodeListenerFuncs{NodeStatusUpdate: func(r pipes.NodeRef, _ *pipes.Node) {
		if r.ID() == leaver.n.ID() && !r.IsConnected() {
			mu.Lock()
			sawOffline = true
			mu.Unlock()
		}
	}}
	ms[1].n.AddListener(l)
	if err := leaver.n.Shutdown(); err != nil {
		t.Fatal(err)
	}
	rest := ms[:6]
	eventually(t, 30*time.Second, "departure seen by all", allSeeAll(rest))
	eventually(t, 10*time.Second, "listener told of the departure", func() error {
		mu.Lock()
		defer mu.Unlock()
		if !sawOffline {
			return errors.New("no offline callback")
		}
		return nil
	})
	ms[1].n.RemoveListener(l)
	if _, err := ms[1].n.NodeWithID(leaver.n.ID().String()); err != nil {
		t.Fatalf("departed node not known: %v", err)
	}

	// The departed node restarts and rejoins.
	leaver.start(t)
	eventually(t, 30*time.Second, "restarted node seen by all", allSeeAll(ms))

	// The gateway's whole platform restarts on the same port; the others
	// reconnect to it by redialling the gateway address.
	gwID := gw.n.ID()
	if err := gw.p.Close(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "gateway departure seen", allSeeAll(ms[1:]))
	gw.open(t)
	if gw.n.ID() != gwID {
		t.Fatal("node id changed across reopen")
	}
	gw.start(t)
	eventually(t, 60*time.Second, "all see all after the gateway restart", allSeeAll(ms))
	eventually(t, 30*time.Second, "gateway has peers again", func() error {
		if len(gw.n.ConnectedPeers()) == 0 {
			return errors.New("gateway has no peers")
		}
		return nil
	})
	// KnownNodes of the reopened gateway includes nodes seen before the restart.
	known := map[pipes.NodeID]bool{}
	for _, r := range gw.n.KnownNodes() {
		known[r.ID()] = true
	}
	for _, m := range ms[1:] {
		if !known[m.n.ID()] {
			t.Fatalf("gateway forgot %s", m.n.Location())
		}
	}
}

// TestNonMemberIsRefused: a node of another network that dials a gateway
// is refused in the handshake and learns nothing of the members.
func TestNonMemberIsRefused(t *testing.T) {
	netPath := testNetfile(t, "members")
	gw := newMember(t, netPath, "gw")
	gw.start(t)
	friend := newMember(t, netPath, "friend")
	friend.gateway(t, gw)
	friend.start(t)
	eventually(t, 30*time.Second, "member connects", allSeeAll([]*member{gw, friend}))

	// A node of another network, pointed at the same gateway.
	stranger := newMember(t, testNetfile(t, "other"), "stranger")
	stranger.gateway(t, gw)
	stranger.start(t)
	eventually(t, 30*time.Second, "gateway refused the stranger", func() error {
		if gw.n.Stats().HandshakesRefused+stranger.n.Stats().HandshakesRefused == 0 {
			return errors.New("no refusal yet")
		}
		return nil
	})
	if stranger.n.IsConnected() || len(stranger.n.ConnectedNodes()) != 0 {
		t.Fatal("stranger got in")
	}
	for _, r := range gw.n.KnownNodes() {
		if r.ID() == stranger.n.ID() {
			t.Fatal("gateway learned of the stranger")
		}
	}
}

// TestSimultaneousDial: two nodes that dial each other at the same moment
// end up with exactly one connection.
func TestSimultaneousDial(t *testing.T) {
	netPath := testNetfile(t, "dup")
	pa, pb := freePort(t), freePort(t)
	a := newMember(t, netPath, "a", pipes.WithListenAddr(loopback(pa)))
	b := newMember(t, netPath, "b", pipes.WithListenAddr(loopback(pb)))
	a.n.Network().AddGateway("127.0.0.1", pb)
	b.n.Network().AddGateway("127.0.0.1", pa)
	var wg sync.WaitGroup
	for _, m := range []*member{a, b} {
		wg.Go(func() { m.start(t) })
	}
	wg.Wait()
	eventually(t, 30*time.Second, "connected", allSeeAll([]*member{a, b}))
	eventually(t, 30*time.Second, "one connection on each side", func() error {
		ca, cb := a.n.Stats().Conns, b.n.Stats().Conns
		if ca != 1 || cb != 1 {
			return fmt.Errorf("connections: a=%d b=%d", ca, cb)
		}
		return nil
	})
}

// TestSilentDeparture: a node that vanishes without a word is reported
// offline by every other node once the offline timeout passes, and the
// listeners hear of it.
func TestSilentDeparture(t *testing.T) {
	ms := cluster(t, "silent", 4, nil)
	victim := ms[3]
	offline := make(chan struct{}, 8)
	l := &pipes.NodeListenerFuncs{NodeStatusUpdate: func(r pipes.NodeRef, _ *pipes.Node) {
		if r.ID() == victim.n.ID() && !r.IsConnected() {
			offline <- struct{}{}
		}
	}}
	ms[1].n.AddListener(l)
	pipes.KillNode(victim.n)
	eventually(t, 60*time.Second, "the vanished node is offline everywhere", allSeeAll(ms[:3]))
	select {
	case <-offline:
	case <-time.After(10 * time.Second):
		t.Fatal("listener not told")
	}
	ms[1].n.RemoveListener(l)
}

// TestNoGoroutineLeaks: after nodes are shut down and their platforms
// closed, none of their goroutines remain.
func TestNoGoroutineLeaks(t *testing.T) {
	before := goleak.IgnoreCurrent() // goroutines of earlier tests still winding down
	ms := cluster(t, "leaks", 4, nil)
	if err := ms[1].n.Shutdown(); err != nil {
		t.Fatal(err)
	}
	pipes.KillNode(ms[2].n)
	for _, m := range ms {
		if err := m.p.Close(); err != nil {
			t.Fatal(err)
		}
	}
	goleak.VerifyNone(t, before)
}

// TestBroadcastNearMinimal: on real sockets, once the tree has formed,
// presence broadcasts cost about one payload transmission per delivery
// (flooding over degree 6 would cost about 6). Heartbeats are 1s here, not
// test mode's 250ms, so that 20 nodes under the race detector on two cores
// are not starved of CPU, which would time out IHAVEs and force grafts.
func TestBroadcastNearMinimal(t *testing.T) {
	ms := cluster(t, "tree", 20, nil, pipes.WithPresenceTiming(time.Second, 5*time.Second))
	totals := func() (sent, received uint64) {
		for _, m := range ms {
			st := m.n.Stats().Broadcast
			sent += st.EagerSent
			received += st.Delivered - st.Originated
		}
		return
	}
	// Let the peer set and the trees settle, then measure a window of
	// heartbeats.
	time.Sleep(4 * time.Second)
	s0, r0 := totals()
	time.Sleep(5 * time.Second)
	s1, r1 := totals()
	var grafts, prunes, dups uint64
	for _, m := range ms {
		st := m.n.Stats()
		grafts += st.Broadcast.GraftsSent
		prunes += st.Broadcast.PrunesSent
		dups += st.Broadcast.Duplicates
	}
	t.Logf("grafts %d prunes %d duplicates %d", grafts, prunes, dups)
	if r1 == r0 {
		t.Fatal("no broadcast delivered in the window")
	}
	ratio := float64(s1-s0) / float64(r1-r0)
	t.Logf("20 nodes on loopback: %d payload transmissions for %d deliveries = %.3f per delivery", s1-s0, r1-r0, ratio)
	// Flooding would cost about 6 (the degree); a tree about 1, and on an
	// idle machine the figure is about 1.05. Under the race detector on
	// two cores shared with other test binaries, delivery slows so much
	// that IHAVE timers expire before the eager copies arrive and the
	// grafts they cause have pushed it to 4: a matter of timing. So under
	// -race the test asserts only that it is below flooding; CI also runs
	// it without -race, on its own, where the tree must be near minimal.
	// The benchmark in bench/ measures the figure.
	limit := 2.0
	if raceEnabled {
		limit = 5.5
	}
	if ratio > limit {
		t.Fatalf("%.3f payload transmissions per delivery (limit %.1f); the tree did not form", ratio, limit)
	}
}
