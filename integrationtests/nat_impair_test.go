package integrationtests

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/pipesnet/pipes"
	"github.com/pipesnet/pipes/internal/netlab"
	"github.com/pipesnet/pipes/internal/testnet"
)

// The NAT lab under impairments: loss and delay on the public segment, a
// partition that heals, and mappings that are lost or move to a new public
// address. Each run asserts delivery (every packet, every echo) and logs
// what it measured (go test -run 'TestNAT(Impaired|Partition|Mapping)' -v);
// the times are logged, never asserted, except as generous limits against
// hangs.

// natLab is the topology of natPairOf, with the lab's handles for tests
// that impair it.
type natLab struct {
	lab     *netlab.Lab
	pub     *netlab.Host // the relay's host, on the public segment
	na, nb  *netlab.NAT  // alice's and bob's routers
	a, r, b *testnet.Member
	joined  time.Duration // from starting alice and bob until all see all
}

// impairedPair builds a public relay, alice behind a NAT of kind ka and
// bob behind one of kind kb, knowing only the relay, with one peer each
// (so they start relayed). impair, if not nil, runs once the topology
// exists and before alice and bob start.
func impairedPair(t *testing.T, prefix string, ka, kb netlab.NATKind, impair func(*natLab), opts ...pipes.NodeOption) *natLab {
	t.Helper()
	l := &natLab{lab: netlab.New(t, prefix)}
	var err error
	if l.pub, err = l.lab.AddHost(nil); err != nil {
		t.Fatal(err)
	}
	netPath := testnet.Netfile(t, prefix)
	one := pipes.WithTargetDegree(1)
	start := func(m *testnet.Member, h *netlab.Host) { startIn(t, m, h) }
	withOpts := func(o ...pipes.NodeOption) []pipes.NodeOption { return append(o, opts...) }
	l.r = testnet.NewMember(t, netPath, "relay", withOpts(one, pipes.WithListenAddr(net.JoinHostPort(l.pub.Addr().String(), "0")))...)
	start(l.r, l.pub)
	var hosts []*netlab.Host
	for _, kind := range []netlab.NATKind{ka, kb} {
		nat, err := l.lab.AddNAT(kind)
		if err != nil {
			t.Fatal(err)
		}
		h, err := l.lab.AddHost(nat)
		if err != nil {
			t.Fatal(err)
		}
		hosts = append(hosts, h)
	}
	l.na, l.nb = hosts[0].Behind(), hosts[1].Behind()
	if impair != nil {
		impair(l)
	}
	l.a = testnet.NewMember(t, netPath, "alice", withOpts(one, pipes.WithListenAddr(net.JoinHostPort(hosts[0].Addr().String(), "0")))...)
	l.b = testnet.NewMember(t, netPath, "bob", withOpts(one, pipes.WithListenAddr(net.JoinHostPort(hosts[1].Addr().String(), "0")))...)
	l.a.Gateway(t, l.r)
	l.b.Gateway(t, l.r)
	begin := time.Now()
	start(l.a, hosts[0])
	start(l.b, hosts[1])
	testnet.Eventually(t, 60*time.Second, "all see all", testnet.AllSeeAll(l.all()))
	l.joined = time.Since(begin)
	return l
}

// punchedPair is impairedPair with alice and bob behind home routers and
// serving echo, once a first relayed connection has made them punch
// through to a direct connection.
func punchedPair(t *testing.T, prefix string) *natLab {
	t.Helper()
	l := impairedPair(t, prefix, netlab.EIMAddrPortFiltering, netlab.EIMAddrPortFiltering, nil)
	l.a.ServeEcho(t)
	l.b.ServeEcho(t)
	echoOnce(t, l.a, l.b).Close()
	t.Logf("direct %v after the first relayed connection", mustBeDirect(t, l.a, l.b, "alice and bob punch through").Round(time.Millisecond))
	return l
}

func (l *natLab) all() []*testnet.Member { return []*testnet.Member{l.a, l.r, l.b} }

// pathDirect reports whether from's path to to is a direct connection.
func pathDirect(from, to *testnet.Member) (bool, pipes.Path) {
	p, err := from.N.PathTo(context.Background(), to.N.ID())
	return err == nil && p.Direct, p
}

// untilDirect polls from's path to to for up to limit and returns how long
// it took to become direct, or false.
func untilDirect(from, to *testnet.Member, limit time.Duration) (time.Duration, bool) {
	start := time.Now()
	for time.Since(start) < limit {
		if ok, _ := pathDirect(from, to); ok {
			return time.Since(start), true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return 0, false
}

// mustBeDirect waits (generously) until from's path to to is direct and
// returns how long that took.
func mustBeDirect(t *testing.T, from, to *testnet.Member, what string) time.Duration {
	t.Helper()
	start := time.Now()
	testnet.Eventually(t, 60*time.Second, what, func() error {
		if ok, p := pathDirect(from, to); !ok {
			return fmt.Errorf("path %+v", p)
		}
		return nil
	})
	return time.Since(start)
}

// bestPing is the shortest of n round trips of routed pings from a to b.
func bestPing(t *testing.T, from, to *testnet.Member, n int) time.Duration {
	t.Helper()
	best := time.Duration(-1)
	for range n {
		var d time.Duration
		testnet.Eventually(t, 30*time.Second, "ping", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			var err error
			d, err = from.N.Ping(ctx, to.N.ID())
			return err
		})
		if best < 0 || d < best {
			best = d
		}
	}
	return best
}

// liveDelivers creates a live broadcast pipeline on from, puts n packets
// and checks that each of the others receives every one exactly once.
func liveDelivers(t *testing.T, name string, from *testnet.Member, to []*testnet.Member, n int) {
	t.Helper()
	delivers(t, name, pipes.PipelineOptions{}, from, to, n)
}

// p2pDelivers is liveDelivers on a point-to-point pipeline from a to b.
func p2pDelivers(t *testing.T, name string, a, b *testnet.Member, n int) {
	t.Helper()
	delivers(t, name, pipes.PipelineOptions{ToNode: b.N.ID()}, a, []*testnet.Member{b}, n)
}

// delivers creates a pipeline with opts on from, puts n packets and
// checks that each of to receives every one exactly once.
func delivers(t *testing.T, name string, opts pipes.PipelineOptions, from *testnet.Member, to []*testnet.Member, n int) {
	t.Helper()
	id, err := from.N.CreatePipeline(name, opts)
	if err != nil {
		t.Fatal(err)
	}
	subs := map[*testnet.Member]<-chan *pipes.Packet{}
	for _, m := range to {
		subs[m] = m.WaitPipeline(t, id).Subscribe(t.Context())
	}
	p, _ := from.N.Pipeline(id)
	sent := map[pipes.PacketID]bool{}
	for i := range n {
		pid, err := p.Put(fmt.Appendf(nil, "%s %d", name, i))
		if err != nil {
			t.Fatal(err)
		}
		sent[pid] = true
	}
	for m, ch := range subs {
		seen := map[pipes.PacketID]bool{}
		for _, pk := range testnet.Receive(t, ch, n) {
			if !sent[pk.ID()] || seen[pk.ID()] {
				t.Fatalf("%s: unknown or duplicate packet on %s", m.N.Location(), name)
			}
			seen[pk.ID()] = true
		}
	}
}

// TestNATImpairedPublicSegment: alice and bob behind home routers;
// alice's router's link to the public segment drops 5% of the packets and
// delays each by 50 ms, in each direction, so every path between alice
// and the others (to the relay, relayed to bob, direct to bob) loses 5%
// and takes 50 ms longer each way. They join, punch through, and pipelines
// (live broadcast, point to point, persistent) and data connections
// deliver everything.
func TestNATImpairedPublicSegment(t *testing.T) {
	const loss, delay = 5, 50 * time.Millisecond
	l := impairedPair(t, "iloss", netlab.EIMAddrPortFiltering, netlab.EIMAddrPortFiltering, func(l *natLab) {
		if err := l.lab.SetLoss(l.na, loss); err != nil {
			t.Fatal(err)
		}
		if err := l.lab.SetDelay(l.na, delay); err != nil {
			t.Fatal(err)
		}
	})
	a, r, b := l.a, l.r, l.b
	t.Logf("joined (all see all) %v after start", l.joined.Round(time.Millisecond))
	if rtt := bestPing(t, a, r, 3); rtt < 2*delay {
		t.Fatalf("ping alice-relay %v: the delay of %v each way is not there", rtt, delay)
	} else {
		t.Logf("ping alice-relay: %v", rtt.Round(time.Millisecond))
	}
	b.ServeEcho(t)
	start := time.Now()
	echoOnce(t, a, b).Close() // relayed; it makes the two punch
	relayedEcho := time.Since(start)
	after := mustBeDirect(t, a, b, "alice and bob punch through their impaired NATs")
	t.Logf("relayed echo (dial + round trip) %v; direct %v after it", relayedEcho.Round(time.Millisecond), (relayedEcho + after).Round(time.Millisecond))
	if rtt := bestPing(t, a, b, 3); rtt < 2*delay {
		t.Fatalf("ping alice-bob direct %v, below the %v the delayed link adds", rtt, 2*delay)
	} else {
		t.Logf("ping alice-bob (direct): %v", rtt.Round(time.Millisecond))
	}
	start = time.Now()
	echoOnce(t, a, b).Close()
	t.Logf("direct echo (dial + round trip) %v", time.Since(start).Round(time.Millisecond))
	const size = 1 << 20
	t.Logf("throughput alice->bob, %d MiB, direct: %.3f MB/s", size>>20, throughput(t, a, b, size))

	start = time.Now()
	liveDelivers(t, "impaired-live", a, []*testnet.Member{r, b}, 300)
	t.Logf("live broadcast: 300 packets from alice reached relay and bob in %v", time.Since(start).Round(time.Millisecond))
	start = time.Now()
	p2pDelivers(t, "impaired-p2p", b, a, 300)
	t.Logf("point to point: 300 packets bob->alice in %v", time.Since(start).Round(time.Millisecond))

	id, ps := sharedLog(t, "impaired-log", a, r, b)
	pa, pb := ps[0], ps[2]
	start = time.Now()
	testnet.PutN(t, pa, 200, "alice")
	testnet.PutN(t, pb, 200, "bob")
	testnet.Converged(t, l.all(), id, 400)
	t.Logf("persistent: 400 packets (200 each from alice and bob) in all three logs in %v", time.Since(start).Round(time.Millisecond))
	if ok, p := pathDirect(a, b); !ok {
		t.Errorf("alice and bob no longer direct at the end: %+v", p)
	}
}

// TestNATPartitionHeals: alice (behind a home router) and bob, direct
// after a punch, share a persistent pipeline. Alice's router is cut off
// from the public segment until everyone sees her gone; both write while
// apart. After the link is restored she comes back: all see all, the
// persistent logs converge (every packet put on either side while apart),
// live and point-to-point pipelines deliver again, and data connections
// work both ways.
func TestNATPartitionHeals(t *testing.T) {
	l := punchedPair(t, "ipart")
	a, r, b := l.a, l.r, l.b

	id, ps := sharedLog(t, "partition-log", b, a, r)
	pb, pa := ps[0], ps[1]
	testnet.PutN(t, pb, 20, "before")
	testnet.Converged(t, l.all(), id, 20)

	cut := time.Now()
	if err := l.lab.Partition(l.na, true); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 60*time.Second, "alice cut off, and seen gone", func() error {
		if a.N.IsConnected() {
			return errors.New("alice still connected")
		}
		for _, m := range []*testnet.Member{r, b} {
			for _, n := range m.N.ConnectedNodes() {
				if n.ID() == a.N.ID() {
					return fmt.Errorf("%s still sees alice", m.N.Location())
				}
			}
		}
		return nil
	})
	t.Logf("alice disconnected and offline for the others %v after the cut", time.Since(cut).Round(time.Millisecond))
	testnet.PutN(t, pb, 300, "bob while alice is away")
	testnet.PutN(t, pa, 100, "alice while away")
	if _, err := a.N.Dial(context.Background(), b.N.ID(), "echo"); err == nil {
		t.Fatal("alice dialed bob through the partition")
	}

	healed := time.Now()
	if err := l.lab.Partition(l.na, false); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 60*time.Second, "all see all after healing", testnet.AllSeeAll(l.all()))
	back := time.Since(healed)
	testnet.Converged(t, l.all(), id, 420)
	synced := time.Since(healed)
	echoOnce(t, a, b).Close()
	echoOnce(t, b, a).Close()
	echoed := time.Since(healed)
	t.Logf("after healing: all see all in %v, logs converged (420 packets, 400 put while apart) in %v, echo both ways in %v",
		back.Round(time.Millisecond), synced.Round(time.Millisecond), echoed.Round(time.Millisecond))
	liveDelivers(t, "partition-live", b, []*testnet.Member{a, r}, 100)
	p2pDelivers(t, "partition-p2p", a, b, 100)
	// The direct connection died in the partition. Alice punched before
	// the cut (and punches toward a node at most once a minute); bob's
	// relayed echo above made him punch: they end up direct again.
	if _, ok := untilDirect(a, b, 30*time.Second); ok {
		t.Logf("direct again %v after healing", time.Since(healed).Round(time.Millisecond))
	} else {
		_, p := pathDirect(a, b)
		t.Errorf("alice and bob not direct again %v after healing: %+v", time.Since(healed).Round(time.Millisecond), p)
	}
}

// TestNATMappingLostAndRebinding: alice and bob behind home routers, direct
// after a punch, write to a persistent pipeline and echo each other. (1)
// Both routers lose every mapping (conntrack flushed, as when mappings
// expire or a router restarts): the nodes talk on at once. (2) Alice's
// router gets a new public address (its mappings go with the old one):
// the direct connection dies, alice and bob talk again through the relay
// (dials are retried until then), the pipeline converges, and the punches
// their relayed connections start make them direct again, to alice's new
// address.
func TestNATMappingLostAndRebinding(t *testing.T) {
	l := punchedPair(t, "irebind")
	a, r, b := l.a, l.r, l.b
	_, before := pathDirect(a, b)

	id, ps := sharedLog(t, "rebind-log", a, b, r)
	pa := ps[0]
	total := 0
	round := func(what string) {
		t.Helper()
		testnet.PutN(t, pa, 50, what)
		total += 50
		testnet.Converged(t, l.all(), id, total)
		echoOnce(t, a, b).Close()
		echoOnce(t, b, a).Close()
	}
	round("before")

	// (1) Every mapping lost.
	lost := time.Now()
	for _, n := range []*netlab.NAT{l.na, l.nb} {
		if out, err := n.Run("conntrack", "-F"); err != nil {
			t.Skipf("conntrack: %v %s", err, out)
		}
	}
	round("after the mappings were lost")
	ok, p := pathDirect(a, b)
	t.Logf("mappings lost on both routers: pipeline and echoes both ways after %v; alice-bob direct=%v (%s)",
		time.Since(lost).Round(time.Millisecond), ok, p.Remote)

	// (2) Alice's router moves to a new public address.
	if ok, _ := pathDirect(a, b); !ok {
		mustBeDirect(t, a, b, "direct again before the address change")
	}
	old := l.na.PublicAddr()
	moved := time.Now()
	addr, err := l.lab.ChangePublicAddr(l.na)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("alice's router: %v -> %v (bob saw alice at %s)", old, addr, before.Remote)
	// Until the connections on the old address time out, dials may go
	// over them and fail: these echoes are retried until they work.
	var echoAgain [2]time.Duration
	for i, pair := range [][2]*testnet.Member{{a, b}, {b, a}} {
		fails := 0
		testnet.Eventually(t, 60*time.Second, fmt.Sprintf("%s reaches %s's echo again", pair[0].N.Location(), pair[1].N.Location()), func() error {
			err := tryEcho(pair[0], pair[1])
			if err != nil {
				if fails++; fails <= 3 {
					t.Logf("%s -> %s %v after the change: %v", pair[0].N.Location(), pair[1].N.Location(), time.Since(moved).Round(time.Millisecond), err)
				}
			}
			return err
		})
		echoAgain[i] = time.Since(moved)
	}
	testnet.Eventually(t, 60*time.Second, "all see all after the address change", testnet.AllSeeAll(l.all()))
	round("after the address change")
	talked := time.Since(moved)
	ok, p = pathDirect(a, b)
	t.Logf("address changed: echo alice->bob works %v after it, bob->alice %v; pipeline and echoes both ways at once %v; direct=%v (%s)",
		echoAgain[0].Round(time.Millisecond), echoAgain[1].Round(time.Millisecond), talked.Round(time.Millisecond), ok, p.Remote)
	_, rp := pathDirect(r, a)
	t.Logf("after the change the relay reaches alice at %s; alice's public addresses: %v", rp.Remote, a.N.PublicAddrs())
	// The relayed echoes above made alice and bob punch (bob for the first
	// time): being behind home routers, they should end up direct again,
	// to alice's new address.
	if !ok {
		if _, ok = untilDirect(a, b, 30*time.Second); ok {
			t.Logf("direct again %v after the address change", time.Since(moved).Round(time.Millisecond))
		}
	}
	if !ok {
		_, p := pathDirect(a, b)
		t.Errorf("alice and bob not direct again %v after alice's router moved to %v: path %+v; alice's public addresses %v, the relay reaches her at %s",
			time.Since(moved).Round(time.Millisecond), addr, p, a.N.PublicAddrs(), rp.Remote)
	} else if _, p := pathDirect(b, a); p.Remote != "" {
		if host, err := hostOf(p.Remote); err == nil && host != addr.String() {
			t.Errorf("bob's direct connection goes to %s, not alice's new address %v", p.Remote, addr)
		}
	}
	round("at the end")
}

// tryEcho is echoOnce that returns its error.
func tryEcho(from, to *testnet.Member) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := from.N.Dial(ctx, to.N.ID(), "echo")
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("through the NATs")); err != nil {
		return err
	}
	buf := make([]byte, 16)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "through the NATs" {
		return fmt.Errorf("echo: %q %v", buf, err)
	}
	return nil
}

// hostOf returns the host part of "host:port".
func hostOf(s string) (string, error) {
	h, _, err := net.SplitHostPort(s)
	return h, err
}

// sharedLog creates a persistent pipeline on owner and waits until the
// others know it; it returns each one's pipeline, owner's first.
func sharedLog(t *testing.T, name string, owner *testnet.Member, others ...*testnet.Member) (pipes.PipelineID, []*pipes.Pipeline) {
	t.Helper()
	id, err := owner.N.CreatePipeline(name, pipes.PipelineOptions{Persistent: true})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := owner.N.Pipeline(id)
	out := []*pipes.Pipeline{p}
	for _, m := range others {
		out = append(out, m.WaitPipeline(t, id))
	}
	return id, out
}

// TestNATRebindingWithDefaultTimeouts: with the default presence timing
// (a QUIC idle timeout of 15 s), a change of alice's public address does
// not leave her traffic to bob in the dead direct connection until the
// idle timeout: the relay tells her her new address, she pings her other
// peers, closes the connection to bob that does not answer, and her data
// connections go through the relay, then direct again to her new
// address. The times are logged (docs/nat.md).
func TestNATRebindingWithDefaultTimeouts(t *testing.T) {
	l := impairedPair(t, "irebdef", netlab.EIMAddrPortFiltering, netlab.EIMAddrPortFiltering, nil,
		pipes.WithPresenceTiming(5*time.Second, 20*time.Second))
	a, b := l.a, l.b
	b.ServeEcho(t)
	echoOnce(t, a, b).Close()
	mustBeDirect(t, a, b, "alice and bob punch through")
	moved := time.Now()
	addr, err := l.lab.ChangePublicAddr(l.na)
	if err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 60*time.Second, "alice reaches bob's echo again", func() error { return tryEcho(a, b) })
	back := time.Since(moved)
	direct, ok := untilDirect(a, b, 30*time.Second)
	_, p := pathDirect(b, a)
	t.Logf("alice's router moved to %v: echo through the relay after %v, direct again after %v (bob reaches her at %s)",
		addr, back.Round(time.Millisecond), (back + direct).Round(time.Millisecond), p.Remote)
	if !ok {
		t.Fatal("not direct again")
	}
}
