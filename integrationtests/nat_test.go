package integrationtests

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pipesnet/pipes"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/netlab"
	"github.com/pipesnet/pipes/internal/node"
	"github.com/pipesnet/pipes/internal/testnet"
)

// natPair builds a public relay node and two nodes behind NATs of kind,
// each node's socket in its own network namespace, all in this process.
// Alice and bob know only the relay and keep one peer, so they start out
// relayed.
func natPair(t *testing.T, prefix string, kind netlab.NATKind) (a, r, b *testnet.Member) {
	t.Helper()
	return natPairOf(t, prefix, kind, kind)
}

// natPairOf is natPair with alice behind a NAT of kind ka and bob behind
// one of kind kb.
func natPairOf(t *testing.T, prefix string, ka, kb netlab.NATKind) (a, r, b *testnet.Member) {
	t.Helper()
	l := impairedPair(t, prefix, ka, kb, nil)
	return l.a, l.r, l.b
}

// startIn starts m with its sockets in h's network namespace.
func startIn(t *testing.T, m *testnet.Member, h *netlab.Host) {
	t.Helper()
	node.SetTestHooks(ids.Node(m.N.ID()), func(hooks *node.TestHooks) {
		hooks.ListenUDP = func(a *net.UDPAddr) (c *net.UDPConn, err error) {
			err = h.Do(func() error { c, err = net.ListenUDP("udp", a); return err })
			return c, err
		}
	})
	if err := h.Do(func() error { return m.N.Start(context.Background()) }); err != nil {
		t.Fatal(err)
	}
}

// echoOnce dials service echo on to, and checks a round trip.
func echoOnce(t *testing.T, from *testnet.Member, to *testnet.Member) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := from.N.Dial(ctx, to.N.ID(), "echo")
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write([]byte("through the NATs")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "through the NATs" {
		t.Fatalf("echo: %q %v", buf, err)
	}
	c.SetDeadline(time.Time{})
	return c
}

// TestPunchThroughHomeRouters: two nodes behind two home-router NATs
// (endpoint-independent mapping, filtering of unsolicited inbound) that
// share a public relay connect directly after their first relayed
// connection, and traffic moves to the direct path.
func TestPunchThroughHomeRouters(t *testing.T) {
	a, r, b := natPair(t, "phome", netlab.EIMAddrPortFiltering)
	b.ServeEcho(t)
	if p, err := a.N.PathTo(context.Background(), b.N.ID()); err != nil || p.Direct || p.Via != r.N.ID() {
		t.Fatalf("before: %+v %v", p, err)
	}
	c := echoOnce(t, a, b) // relayed; it makes the two punch
	defer c.Close()
	testnet.Eventually(t, 60*time.Second, "alice and bob punch through their NATs", func() error {
		if p, err := a.N.PathTo(context.Background(), b.N.ID()); err != nil || !p.Direct {
			return fmt.Errorf("path to bob: %+v %v", p, err)
		}
		return nil
	})
	// The direct connection goes to bob's NAT's public address (his own
	// is private and unreachable from alice's LAN).
	if p, _ := a.N.PathTo(context.Background(), b.N.ID()); !strings.HasPrefix(p.Remote, "198.18.") {
		t.Fatalf("direct connection to %s, not to bob's public address", p.Remote)
	}
	echoOnce(t, a, b).Close() // direct now
}

// TestSymmetricNATsStayRelayed: behind two symmetric NATs no punch can
// succeed; connections go through the relay and work.
func TestSymmetricNATsStayRelayed(t *testing.T) {
	a, r, b := natPair(t, "psym", netlab.Symmetric)
	b.ServeEcho(t)
	c := echoOnce(t, a, b)
	defer c.Close()
	if p, err := a.N.PathTo(context.Background(), b.N.ID()); err != nil || (!p.Direct && p.Via != r.N.ID()) {
		t.Fatalf("path to bob: %+v %v", p, err)
	}
	echoOnce(t, a, b).Close()
}

// TestNATMatrix runs every pair of NAT kinds: whether the two nodes end up
// directly connected after a relayed connection, how long that took, and
// the throughput of a data connection afterwards. Goals: direct whenever
// at least one side is not symmetric (see docs/nat.md); symmetric with
// symmetric relayed and working. The table is logged (go test -run
// TestNATMatrix -v); it asserts that every pair exchanges data and that
// every pair with at most one symmetric NAT ends up direct.
func TestNATMatrix(t *testing.T) {
	if testing.Short() {
		t.Skip("NAT matrix")
	}
	kinds := []struct {
		name string
		kind netlab.NATKind
	}{{"public", netlab.None}, {"full-cone", netlab.FullCone}, {"home", netlab.EIMAddrPortFiltering}, {"symmetric", netlab.Symmetric}}
	type row struct {
		a, b   string
		direct bool
		after  time.Duration
		mbps   float64
	}
	var rows []row
	for i, ka := range kinds {
		for _, kb := range kinds[i:] {
			t.Run(ka.name+"-"+kb.name, func(t *testing.T) {
				a, _, b := natPairOf(t, fmt.Sprintf("m%d%d", ka.kind, kb.kind), ka.kind, kb.kind)
				b.ServeEcho(t)
				start := time.Now()
				echoOnce(t, a, b).Close()
				direct := false
				var after time.Duration
				deadline := time.Now().Add(15 * time.Second)
				for time.Now().Before(deadline) {
					if p, err := a.N.PathTo(context.Background(), b.N.ID()); err == nil && p.Direct {
						direct, after = true, time.Since(start)
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
				mbps := throughput(t, a, b, 32<<20)
				rows = append(rows, row{ka.name, kb.name, direct, after, mbps})
				if (ka.kind != netlab.Symmetric || kb.kind != netlab.Symmetric) && !direct {
					t.Errorf("%s-%s: not direct", ka.name, kb.name)
				}
			})
		}
	}
	t.Log("| alice behind | bob behind | outcome | time until direct | throughput |")
	t.Log("|---|---|---|---|---|")
	for _, r := range rows {
		outcome, after := "relayed", "-"
		if r.direct {
			outcome, after = "direct", r.after.Round(time.Millisecond).String()
		}
		t.Logf("| %s | %s | %s | %s | %.0f MB/s |", r.a, r.b, outcome, after, r.mbps)
	}
}

// throughput moves n bytes from a to b's echo... to b's sink service and
// returns MB/s.
func throughput(t *testing.T, a, b *testnet.Member, n int) float64 {
	t.Helper()
	l, err := b.N.Listen("sink")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	done := make(chan int64, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			done <- 0
			return
		}
		defer c.Close()
		got, _ := io.Copy(io.Discard, c)
		c.(interface{ CloseWrite() error }).CloseWrite()
		done <- got
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := a.N.Dial(ctx, b.N.ID(), "sink")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(120 * time.Second))
	buf := make([]byte, 256<<10)
	start := time.Now()
	for sent := 0; sent < n; sent += len(buf) {
		if _, err := c.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	c.(interface{ CloseWrite() error }).CloseWrite()
	io.Copy(io.Discard, c) // until the sink has read everything
	got := <-done
	if got != int64(n) {
		t.Fatalf("sink got %d of %d bytes", got, n)
	}
	return float64(n) / time.Since(start).Seconds() / 1e6
}

// TestNetcheck: for a node behind each kind of NAT, with two public
// relays as peers and a public node that is not its peer, CheckNAT
// reports the NAT's mapping and filtering as the lab built them.
func TestNetcheck(t *testing.T) {
	for _, c := range []struct {
		kind               netlab.NATKind
		behind             bool
		mapping, filtering string
	}{
		{netlab.None, false, "endpoint-independent", "endpoint-independent"},
		{netlab.FullCone, true, "endpoint-independent", "endpoint-independent"},
		{netlab.EIMAddrPortFiltering, true, "endpoint-independent", "address-and-port-dependent"},
		{netlab.Symmetric, true, "endpoint-dependent", "address-and-port-dependent"},
	} {
		t.Run(c.kind.String(), func(t *testing.T) {
			lab := netlab.New(t, fmt.Sprintf("nc%d", c.kind))
			netPath := testnet.Netfile(t, "nc")
			public := func(name string, opts ...pipes.NodeOption) hosted {
				h, err := lab.AddHost(nil)
				if err != nil {
					t.Fatal(err)
				}
				m := testnet.NewMember(t, netPath, name, append(opts, pipes.WithListenAddr(net.JoinHostPort(h.Addr().String(), "0")))...)
				return withHost(m, h)
			}
			r1 := public("r1", pipes.WithTargetDegree(2))
			r2 := public("r2", pipes.WithTargetDegree(2))
			bob := public("bob", pipes.WithTargetDegree(1))
			nat, err := lab.AddNAT(c.kind)
			if err != nil {
				t.Fatal(err)
			}
			h, err := lab.AddHost(nat)
			if err != nil {
				t.Fatal(err)
			}
			alice := testnet.NewMember(t, netPath, "alice", pipes.WithTargetDegree(2),
				pipes.WithListenAddr(net.JoinHostPort(h.Addr().String(), "0")))
			startIn(t, r1.m, r1.h)
			r2.m.Gateway(t, r1.m)
			startIn(t, r2.m, r2.h)
			bob.m.Gateway(t, r1.m)
			startIn(t, bob.m, bob.h)
			alice.Gateway(t, r1.m)
			alice.Gateway(t, r2.m)
			startIn(t, alice, h)
			testnet.Eventually(t, 60*time.Second, "all see all", testnet.AllSeeAll([]*testnet.Member{alice, r1.m, r2.m, bob.m}))
			testnet.Eventually(t, 30*time.Second, "alice has both relays as peers", func() error {
				if n := len(alice.N.ConnectedPeers()); n < 2 {
					return fmt.Errorf("%d peers", n)
				}
				return nil
			})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			rep, err := alice.N.CheckNAT(ctx)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: mapping %s, filtering %s, behind NAT %v, public %v, observations %d",
				c.kind, rep.Mapping, rep.Filtering, rep.BehindNAT, rep.Public, len(rep.Observations))
			if rep.Mapping != c.mapping || rep.Filtering != c.filtering || rep.BehindNAT != c.behind {
				t.Fatalf("report %+v", rep)
			}
		})
	}
}

// hosted is a member with the lab host its socket lives on.
type hosted struct {
	m *testnet.Member
	h *netlab.Host
}

func withHost(m *testnet.Member, h *netlab.Host) hosted { return hosted{m, h} }

// TestPunchMovesTrafficWithoutLoss: alice (home router) and bob
// (symmetric NAT) exchange point-to-point pipeline packets and hold a
// data connection open over the relay while the hard-NAT punch makes
// them direct: every packet arrives, in order, and the relayed data
// connection keeps working after the move.
func TestPunchMovesTrafficWithoutLoss(t *testing.T) {
	a, _, b := natPairOf(t, "pmove", netlab.EIMAddrPortFiltering, netlab.Symmetric)
	b.ServeEcho(t)
	id, err := a.N.CreatePipeline("move", pipes.PipelineOptions{ToNode: b.N.ID()})
	if err != nil {
		t.Fatal(err)
	}
	ch := b.WaitPipeline(t, id).Subscribe(t.Context())
	pa, _ := a.N.Pipeline(id)
	c := echoOnce(t, a, b) // relayed: starts the punch
	defer c.Close()
	const n = 200
	sent := 0
	for sent < n {
		if _, err := pa.Put(fmt.Appendf(nil, "packet %d", sent)); err != nil {
			t.Fatal(err)
		}
		sent++
		time.Sleep(25 * time.Millisecond) // spread over the punch (about 2.5 s)
		if p, err := a.N.PathTo(context.Background(), b.N.ID()); err == nil && p.Direct && sent > n/2 {
			break
		}
	}
	testnet.Eventually(t, 30*time.Second, "direct", func() error {
		if p, err := a.N.PathTo(context.Background(), b.N.ID()); err != nil || !p.Direct {
			return fmt.Errorf("path %+v %v", p, err)
		}
		return nil
	})
	for ; sent < n+20; sent++ { // and some on the direct path
		if _, err := pa.Put(fmt.Appendf(nil, "packet %d", sent)); err != nil {
			t.Fatal(err)
		}
	}
	for i, p := range testnet.Receive(t, ch, sent) {
		if d, _ := p.Data(); string(d) != fmt.Sprintf("packet %d", i) {
			t.Fatalf("packet %d is %q", i, d)
		}
	}
	// The connection opened over the relay still works.
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write([]byte("still here")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "still here" {
		t.Fatalf("after the move: %q %v", buf, err)
	}
}
