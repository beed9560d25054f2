package pipes_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pipesnet/pipes"
	"github.com/pipesnet/pipes/internal/testnet"
)

// TestSixNodesOneGateway: seven nodes that each know only the first node
// find every other node, keep a bounded degree, report a departure, take a
// restarted node back, and reconnect to a restarted gateway.
func TestSixNodesOneGateway(t *testing.T) {
	ms := cluster(t, "n", 7, []pipes.NodeOption{pipes.WithListenAddr(loopback(testnet.FreePort(t)))}, pipes.WithTargetDegree(3))
	gw := ms[0]

	// Peer exchange: nodes told only of the gateway reach their target
	// degree through peers they learned of.
	testnet.Eventually(t, 30*time.Second, "peer exchange", func() error {
		for _, m := range ms[1:] {
			peers := m.N.ConnectedPeers()
			if len(peers) < 3 {
				return fmt.Errorf("%s has %d peers, want at least 3", m.N.Location(), len(peers))
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
	target := ms[3].N.ID()
	ref, err := ms[1].N.NodeWithID(target.String()[:10])
	if err != nil || ref.ID() != target || ref.Name() != "n3" || ref.Location() != "n3-loc" || ref.Version() == "" {
		t.Fatalf("NodeWithID: %v %+v", err, ref)
	}
	if _, err := ms[1].N.NodeWithID("ffffffffffffffffffff"); !errors.Is(err, pipes.ErrNotFound) && err != nil {
		t.Fatalf("NodeWithID unknown: %v", err)
	}
	if _, err := ms[1].N.NodeWithID(""); !errors.Is(err, pipes.ErrInvalidID) {
		t.Fatalf("NodeWithID empty: %v", err)
	}
	if _, err := ms[1].N.NodeWithID("xyz"); !errors.Is(err, pipes.ErrInvalidID) {
		t.Fatalf("NodeWithID non-hex: %v", err)
	}

	// A clean departure is reported everywhere; KnownNodes keeps the node.
	leaver := ms[6]
	var mu sync.Mutex
	var sawOffline bool
	l := &pipes.NodeListenerFuncs{NodeStatusUpdate: func(r pipes.NodeRef, _ *pipes.Node) {
		if r.ID() == leaver.N.ID() && !r.IsConnected() {
			mu.Lock()
			sawOffline = true
			mu.Unlock()
		}
	}}
	ms[1].N.AddListener(l)
	if err := leaver.N.Shutdown(); err != nil {
		t.Fatal(err)
	}
	rest := ms[:6]
	testnet.Eventually(t, 30*time.Second, "departure seen by all", testnet.AllSeeAll(rest))
	testnet.Eventually(t, 10*time.Second, "listener told of the departure", func() error {
		mu.Lock()
		defer mu.Unlock()
		if !sawOffline {
			return errors.New("no offline callback")
		}
		return nil
	})
	ms[1].N.RemoveListener(l)
	if _, err := ms[1].N.NodeWithID(leaver.N.ID().String()); err != nil {
		t.Fatalf("departed node not known: %v", err)
	}

	// The departed node restarts and rejoins.
	leaver.Start(t)
	testnet.Eventually(t, 30*time.Second, "restarted node seen by all", testnet.AllSeeAll(ms))

	// The gateway's whole platform restarts on the same port; the others
	// reconnect to it by redialling the gateway address.
	gwID := gw.N.ID()
	if err := gw.P.Close(); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 30*time.Second, "gateway departure seen", testnet.AllSeeAll(ms[1:]))
	gw.Open(t)
	if gw.N.ID() != gwID {
		t.Fatal("node id changed across reopen")
	}
	gw.Start(t)
	testnet.Eventually(t, 60*time.Second, "all see all after the gateway restart", testnet.AllSeeAll(ms))
	testnet.Eventually(t, 30*time.Second, "gateway has peers again", func() error {
		if len(gw.N.ConnectedPeers()) == 0 {
			return errors.New("gateway has no peers")
		}
		return nil
	})
	// KnownNodes of the reopened gateway includes nodes seen before the restart.
	known := map[pipes.NodeID]bool{}
	for _, r := range gw.N.KnownNodes() {
		known[r.ID()] = true
	}
	for _, m := range ms[1:] {
		if !known[m.N.ID()] {
			t.Fatalf("gateway forgot %s", m.N.Location())
		}
	}
}

// TestNonMemberIsRefused: a node of another network that dials a gateway
// is refused in the handshake and learns nothing of the members.
func TestNonMemberIsRefused(t *testing.T) {
	netPath := testnet.Netfile(t, "members")
	gw := testnet.NewMember(t, netPath, "gw")
	gw.Start(t)
	friend := testnet.NewMember(t, netPath, "friend")
	friend.Gateway(t, gw)
	friend.Start(t)
	testnet.Eventually(t, 30*time.Second, "member connects", testnet.AllSeeAll([]*testnet.Member{gw, friend}))

	// A node of another network, pointed at the same gateway.
	stranger := testnet.NewMember(t, testnet.Netfile(t, "other"), "stranger")
	stranger.Gateway(t, gw)
	stranger.Start(t)
	testnet.Eventually(t, 30*time.Second, "gateway refused the stranger", func() error {
		if gw.N.Stats().HandshakesRefused+stranger.N.Stats().HandshakesRefused == 0 {
			return errors.New("no refusal yet")
		}
		return nil
	})
	if stranger.N.IsConnected() || len(stranger.N.ConnectedNodes()) != 0 {
		t.Fatal("stranger got in")
	}
	for _, r := range gw.N.KnownNodes() {
		if r.ID() == stranger.N.ID() {
			t.Fatal("gateway learned of the stranger")
		}
	}
}

// TestSimultaneousDial: two nodes that dial each other at the same moment
// end up with exactly one connection.
func TestSimultaneousDial(t *testing.T) {
	netPath := testnet.Netfile(t, "dup")
	pa, pb := testnet.FreePort(t), testnet.FreePort(t)
	a := testnet.NewMember(t, netPath, "a", pipes.WithListenAddr(loopback(pa)))
	b := testnet.NewMember(t, netPath, "b", pipes.WithListenAddr(loopback(pb)))
	a.N.Network().AddGateway("127.0.0.1", pb)
	b.N.Network().AddGateway("127.0.0.1", pa)
	var wg sync.WaitGroup
	for _, m := range []*testnet.Member{a, b} {
		wg.Go(func() { m.Start(t) })
	}
	wg.Wait()
	testnet.Eventually(t, 30*time.Second, "connected", testnet.AllSeeAll([]*testnet.Member{a, b}))
	testnet.Eventually(t, 30*time.Second, "one connection on each side", func() error {
		ca, cb := a.N.Stats().Conns, b.N.Stats().Conns
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
		if r.ID() == victim.N.ID() && !r.IsConnected() {
			offline <- struct{}{}
		}
	}}
	ms[1].N.AddListener(l)
	pipes.KillNode(victim.N)
	testnet.Eventually(t, 60*time.Second, "the vanished node is offline everywhere", testnet.AllSeeAll(ms[:3]))
	select {
	case <-offline:
	case <-time.After(10 * time.Second):
		t.Fatal("listener not told")
	}
	ms[1].N.RemoveListener(l)
}

// TestNoGoroutineLeaks: after nodes are shut down and their platforms
// closed, none of their goroutines remain.
func TestNoGoroutineLeaks(t *testing.T) {
	before := goleak.IgnoreCurrent() // goroutines of earlier tests still winding down
	ms := cluster(t, "leaks", 4, nil)
	if err := ms[1].N.Shutdown(); err != nil {
		t.Fatal(err)
	}
	pipes.KillNode(ms[2].N)
	for _, m := range ms {
		if err := m.P.Close(); err != nil {
			t.Fatal(err)
		}
	}
	goleak.VerifyNone(t, before)
}

// TestBroadcastNearMinimal: on real sockets, once the tree has formed,
// presence broadcasts cost about one payload transmission per delivery
// (flooding over degree 6 would cost about 6). Heartbeats are 1s here, not
// test mode's 250ms, so that 20 nodes on two cores are not starved of CPU,
// which would time out IHAVEs and force grafts. It is a measurement of 20
// nodes at once: under the race detector, with other test binaries on the
// same two cores, they are starved of CPU so badly that presence does not
// settle within the cluster's bound (the code before the current presence
// rules fails the same way), so it runs without -race only, as CI does,
// on its own.
func TestBroadcastNearMinimal(t *testing.T) {
	if testnet.RaceEnabled {
		t.Skip("20 nodes measured at once: run without -race (CI does, on its own)")
	}
	ms := cluster(t, "tree", 20, nil, pipes.WithPresenceTiming(time.Second, 5*time.Second))
	totals := func() (sent, received uint64) {
		for _, m := range ms {
			st := m.N.Stats().Broadcast
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
		st := m.N.Stats()
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
	// idle machine the figure is about 1.05. The benchmark in bench/
	// measures it too.
	limit := 2.0
	if ratio > limit {
		t.Fatalf("%.3f payload transmissions per delivery (limit %.1f); the tree did not form", ratio, limit)
	}
}
