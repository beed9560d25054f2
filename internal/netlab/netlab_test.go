package netlab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// echo serves UDP on h:port, answering each packet with the address it came
// from (as netip.AddrPort text). It stops when the test ends.
func echo(t *testing.T, h *Host, port string) netip.AddrPort {
	t.Helper()
	c, err := h.ListenUDP(":" + port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			_, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			c.WriteToUDPAddrPort([]byte(from.String()), from)
		}
	}()
	return netip.AddrPortFrom(h.Addr(), uint16(c.LocalAddr().(*net.UDPAddr).Port))
}

// ask sends a packet to the echo server and returns the source address it
// saw, or an error when no answer comes within wait.
func ask(c *net.UDPConn, server netip.AddrPort, wait time.Duration) (netip.AddrPort, error) {
	if _, err := c.WriteToUDPAddrPort([]byte("?"), server); err != nil {
		return netip.AddrPort{}, err
	}
	c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return netip.AddrPort{}, err
		}
		if from == server {
			return netip.ParseAddrPort(string(buf[:n]))
		}
	}
}

// received reports whether c gets any packet within wait.
func received(c *net.UDPConn, wait time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(wait))
	_, _, err := c.ReadFromUDPAddrPort(make([]byte, 1500))
	return err == nil
}

type topo struct {
	lab      *Lab
	pub      *Host
	n1, n2   *NAT
	h1, h2   *Host
	echoAddr netip.AddrPort
}

// build makes public + 2 NATs of kind + a host behind each + a public host
// with an echo server on port 7.
func build(t *testing.T, prefix string, kind NATKind) *topo {
	t.Helper()
	start := time.Now()
	l := New(t, prefix)
	tp := &topo{lab: l}
	var err error
	if err := l.AddPublic(); err != nil {
		t.Fatal(err)
	}
	tp.pub, err = l.AddHost(nil)
	if err != nil {
		t.Fatal(err)
	}
	tp.n1, err = l.AddNAT(kind)
	if err != nil {
		t.Fatal(err)
	}
	tp.n2, err = l.AddNAT(kind)
	if err != nil {
		t.Fatal(err)
	}
	tp.h1, err = l.AddHost(tp.n1)
	if err != nil {
		t.Fatal(err)
	}
	tp.h2, err = l.AddHost(tp.n2)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%v topology (5 namespaces) built in %v", kind, time.Since(start).Round(time.Millisecond))
	tp.echoAddr = echo(t, tp.pub, "7")
	return tp
}

func TestReachPublicAndSourceAddr(t *testing.T) {
	tp := build(t, "nlreach", EIMAddrPortFiltering)
	for _, h := range []*Host{tp.h1, tp.h2} {
		c, err := h.ListenUDP(":4000")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		seen, err := ask(c, tp.echoAddr, 5*time.Second)
		if err != nil {
			t.Fatalf("%s: no answer from the public echo server: %v", h.Namespace(), err)
		}
		if seen.Addr() != h.Behind().PublicAddr() {
			t.Fatalf("%s: server saw %v, want the NAT's public address %v", h.Namespace(), seen, h.Behind().PublicAddr())
		}
		if seen.Port() != 4000 {
			t.Errorf("%s: masquerade changed the port: %v", h.Namespace(), seen)
		}
		t.Logf("%s (%v:4000) seen as %v", h.Namespace(), h.Addr(), seen)
	}
	// The public host itself is seen with its own address.
	c, err := tp.pub.ListenUDP(":0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if seen, err := ask(c, tp.echoAddr, 5*time.Second); err != nil || seen.Addr() != tp.pub.Addr() {
		t.Fatalf("public host: seen %v, %v", seen, err)
	}
}

func TestUnsolicitedInboundDropped(t *testing.T) {
	tp := build(t, "nlunsol", EIMAddrPortFiltering)
	c, err := tp.h1.ListenUDP(":4000")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	mapped, err := ask(c, tp.echoAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// Another public endpoint (same host, other port) sends to the mapped
	// port: address-and-port-dependent filtering drops it.
	other, err := tp.pub.ListenUDP(":0")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	for range 5 {
		if _, err := other.WriteToUDPAddrPort([]byte("unsolicited"), mapped); err != nil {
			t.Fatal(err)
		}
	}
	if received(c, 500*time.Millisecond) {
		t.Fatal("unsolicited packet from another endpoint reached the host behind the NAT")
	}
	// The mapping still works for the endpoint it was made for.
	if _, err := ask(c, tp.echoAddr, 5*time.Second); err != nil {
		t.Fatalf("mapping broken after the dropped packets: %v", err)
	}
}

// punch: both hosts register with a rendezvous server in the public
// namespace, learn each other's public ip:port from it, then send to each
// other every 20 ms for up to window. h1 starts 100 ms before h2, so that
// its first packets reach h2's NAT before h2's own mapping towards h1
// exists (the case that breaks plain masquerade). It returns how many
// packets each side received from the other.
func punch(t *testing.T, tp *topo, window time.Duration) (got1, got2 int) {
	t.Helper()
	rv, err := tp.pub.ListenUDP(":3478")
	if err != nil {
		t.Fatal(err)
	}
	defer rv.Close()
	rvAddr := netip.AddrPortFrom(tp.pub.Addr(), 3478)
	go func() { // the rendezvous server: pair the first two clients
		var seen []netip.AddrPort
		buf := make([]byte, 1500)
		for len(seen) < 2 {
			_, from, err := rv.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if len(seen) == 0 || seen[0] != from {
				seen = append(seen, from)
			}
		}
		rv.WriteToUDPAddrPort([]byte(seen[1].String()), seen[0])
		rv.WriteToUDPAddrPort([]byte(seen[0].String()), seen[1])
	}()
	c1, err := tp.h1.ListenUDP(":5000")
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	c2, err := tp.h2.ListenUDP(":5000")
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	learn := func(c *net.UDPConn) (netip.AddrPort, error) {
		if _, err := c.WriteToUDPAddrPort([]byte("register"), rvAddr); err != nil {
			return netip.AddrPort{}, err
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 1500)
		n, _, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("no answer from the rendezvous server: %w", err)
		}
		return netip.ParseAddrPort(string(buf[:n]))
	}
	var peer1, peer2 netip.AddrPort
	var err1, err2 error
	var wg sync.WaitGroup
	wg.Go(func() { peer1, err1 = learn(c1) })
	wg.Go(func() { peer2, err2 = learn(c2) })
	wg.Wait()
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	t.Logf("h1 learned %v, h2 learned %v", peer1, peer2)

	const want = 5
	var mu sync.Mutex
	counts := [2]int{}
	done := make(chan struct{})
	deadline := time.Now().Add(window)
	side := func(i int, c *net.UDPConn, peer netip.AddrPort, delay time.Duration) {
		go func() { // receiver
			buf := make([]byte, 1500)
			c.SetReadDeadline(deadline.Add(time.Second))
			for {
				_, from, err := c.ReadFromUDPAddrPort(buf)
				if err != nil {
					return
				}
				if from.Addr() == peer.Addr() {
					mu.Lock()
					counts[i]++
					mu.Unlock()
				}
			}
		}()
		time.Sleep(delay)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for time.Now().Before(deadline) {
			c.WriteToUDPAddrPort([]byte("punch"), peer)
			mu.Lock()
			ok := counts[0] >= want && counts[1] >= want
			mu.Unlock()
			if ok {
				return
			}
			select {
			case <-tick.C:
			case <-done:
				return
			}
		}
	}
	wg.Go(func() { side(0, c1, peer1, 0) })
	wg.Go(func() { side(1, c2, peer2, 100*time.Millisecond) })
	wg.Wait()
	close(done)
	time.Sleep(50 * time.Millisecond) // packets in flight
	mu.Lock()
	defer mu.Unlock()
	return counts[0], counts[1]
}

func TestHolePunch(t *testing.T) {
	cases := []struct {
		kind    NATKind
		prefix  string
		succeed bool
	}{
		{EIMAddrPortFiltering, "nlpeim", true},
		{FullCone, "nlpcone", true},
		{Symmetric, "nlpsym", false},
		{PlainMasquerade, "nlpmasq", false},
	}
	for _, tc := range cases {
		t.Run(tc.kind.String(), func(t *testing.T) {
			t.Parallel()
			tp := build(t, tc.prefix, tc.kind)
			start := time.Now()
			window := 3 * time.Second
			if !tc.succeed {
				window = 2 * time.Second
			}
			got1, got2 := punch(t, tp, window)
			t.Logf("%v: h1 got %d, h2 got %d packets from the peer in %v", tc.kind, got1, got2, time.Since(start).Round(time.Millisecond))
			ok := got1 > 0 && got2 > 0
			if ok != tc.succeed {
				t.Errorf("%v: punch succeeded=%v (h1 got %d, h2 got %d), want %v", tc.kind, ok, got1, got2, tc.succeed)
			}
		})
	}
}

func TestTwoLabsSideBySide(t *testing.T) {
	a := build(t, "nltwoa", EIMAddrPortFiltering)
	b := build(t, "nltwob", Symmetric)
	// The labs are isolated, so they may (and do) reuse the same addresses.
	if a.n1.PublicAddr() != b.n1.PublicAddr() {
		t.Logf("labs use different addresses: %v, %v", a.n1.PublicAddr(), b.n1.PublicAddr())
	}
	for _, tp := range []*topo{a, b} {
		c, err := tp.h1.ListenUDP(":0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		seen, err := ask(c, tp.echoAddr, 5*time.Second)
		if err != nil || seen.Addr() != tp.n1.PublicAddr() {
			t.Fatalf("lab %s: seen %v, %v", tp.lab.Prefix(), seen, err)
		}
	}
	nsA, err := a.lab.namespaces(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	nsB, err := b.lab.namespaces(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(nsA) != 6 || len(nsB) != 6 {
		t.Fatalf("namespaces: %v / %v, want 6 each", nsA, nsB)
	}
}

func TestLeftoversAndClose(t *testing.T) {
	// A run that was killed leaves its namespaces: Open without Close.
	old, err := Open(context.Background(), "nlleft")
	if errors.Is(err, ErrUnsupported) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.AddNAT(EIMAddrPortFiltering); err != nil {
		t.Fatal(err)
	}
	if ns, err := old.namespaces(context.Background()); err != nil || len(ns) != 2 {
		t.Fatalf("leftovers to be: %v, %v", ns, err)
	}
	old.lock.Close() // as when the process is killed
	l := New(t, "nlleft")
	if ns, err := l.namespaces(context.Background()); err != nil || len(ns) != 0 {
		t.Fatalf("New left %v, %v", ns, err)
	}
	tp := &topo{lab: l}
	tp.n1, err = l.AddNAT(EIMAddrPortFiltering)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.AddHost(tp.n1); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if ns, err := l.namespaces(context.Background()); err != nil || len(ns) != 0 {
		t.Fatalf("Close left %v, %v", ns, err)
	}
	if _, err := os.Stat("/var/run/netns/nlleft-pub"); err == nil {
		t.Fatal("namespace file left")
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := l.AddNAT(None); err == nil {
		t.Fatal("AddNAT after Close succeeded")
	}
}

func TestImpairments(t *testing.T) {
	tp := build(t, "nlimp", EIMAddrPortFiltering)
	l := tp.lab
	c, err := tp.h1.ListenUDP(":4000")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := ask(c, tp.echoAddr, 5*time.Second); err != nil {
		t.Fatal(err)
	}

	t.Run("Partition", func(t *testing.T) {
		if err := l.Partition(tp.n1, true); err != nil {
			t.Fatal(err)
		}
		if _, err := ask(c, tp.echoAddr, 300*time.Millisecond); err == nil {
			t.Fatal("answer through a partition")
		}
		if err := l.Partition(tp.n1, false); err != nil {
			t.Fatal(err)
		}
		if _, err := ask(c, tp.echoAddr, 5*time.Second); err != nil {
			t.Fatalf("no answer after healing: %v", err)
		}
	})

	t.Run("TotalLoss", func(t *testing.T) {
		if err := l.SetLoss(tp.n1, 100); err != nil {
			t.Fatal(err)
		}
		if _, err := ask(c, tp.echoAddr, 300*time.Millisecond); err == nil {
			t.Fatal("answer through 100% loss")
		}
		if err := l.SetLoss(tp.n1, 0); err != nil {
			t.Fatal(err)
		}
		if _, err := ask(c, tp.echoAddr, 5*time.Second); err != nil {
			t.Fatalf("no answer without loss: %v", err)
		}
	})

	t.Run("Loss", func(t *testing.T) {
		if err := l.SetLoss(tp.pub, 50); err != nil {
			t.Fatal(err)
		}
		defer l.SetLoss(tp.pub, 0)
		const n = 200
		for range n {
			c.WriteToUDPAddrPort([]byte("?"), tp.echoAddr)
			time.Sleep(time.Millisecond)
		}
		got := 0
		for received(c, 200*time.Millisecond) {
			got++
		}
		// 50% each way: about a quarter come back.
		t.Logf("50%% loss each way: %d of %d answered", got, n)
		if got == 0 || got > n*3/4 {
			t.Fatalf("%d of %d answered with 50%% loss each way", got, n)
		}
	})

	t.Run("UDPTimeout", func(t *testing.T) {
		if err := l.SetUDPTimeout(tp.n1, 1); err != nil {
			t.Fatal(err)
		}
		out, err := tp.n1.Run("cat", "/proc/sys/net/netfilter/nf_conntrack_udp_timeout")
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(out) != "1" {
			t.Fatalf("nf_conntrack_udp_timeout = %q", out)
		}
		c2, err := tp.h1.ListenUDP(":4001")
		if err != nil {
			t.Fatal(err)
		}
		defer c2.Close()
		srv, err := tp.pub.ListenUDP(":0")
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		srvAddr := netip.AddrPortFrom(tp.pub.Addr(), uint16(srv.LocalAddr().(*net.UDPAddr).Port))
		c2.WriteToUDPAddrPort([]byte("open"), srvAddr)
		srv.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, mapped, err := srv.ReadFromUDPAddrPort(make([]byte, 1500))
		if err != nil {
			t.Fatal(err)
		}
		srv.WriteToUDPAddrPort([]byte("while fresh"), mapped)
		if !received(c2, 2*time.Second) {
			t.Fatal("server's answer through a fresh mapping lost")
		}
		time.Sleep(2500 * time.Millisecond) // idle: the 1 s mapping expires
		srv.WriteToUDPAddrPort([]byte("after expiry"), mapped)
		if received(c2, 500*time.Millisecond) {
			t.Fatal("server reached the host through an expired mapping")
		}
	})

	t.Run("ChangePublicAddr", func(t *testing.T) {
		old := tp.n1.PublicAddr()
		addr, err := l.ChangePublicAddr(tp.n1)
		if err != nil {
			t.Fatal(err)
		}
		if addr == old || tp.n1.PublicAddr() != addr {
			t.Fatalf("address %v -> %v", old, addr)
		}
		seen, err := ask(c, tp.echoAddr, 5*time.Second)
		if err != nil || seen.Addr() != addr {
			t.Fatalf("after rebinding the server sees %v, %v; want %v", seen, err, addr)
		}
		if err := l.SetLoss(tp.h1, 10); err == nil {
			t.Fatal("SetLoss accepted a host behind a NAT")
		}
	})
}

func TestNoneIsPublic(t *testing.T) {
	l := New(t, "nlnone")
	pub, err := l.AddHost(nil)
	if err != nil {
		t.Fatal(err)
	}
	n, err := l.AddNAT(None)
	if err != nil {
		t.Fatal(err)
	}
	h, err := l.AddHost(n)
	if err != nil {
		t.Fatal(err)
	}
	srv := echo(t, pub, "7")
	c, err := h.ListenUDP(":0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	seen, err := ask(c, srv, 5*time.Second)
	if err != nil || seen.Addr() != h.Addr() {
		t.Fatalf("seen %v, %v; want %v", seen, err, h.Addr())
	}
	// And it is reachable unsolicited.
	in, err := pub.ListenUDP(":0")
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	in.WriteToUDPAddrPort([]byte("hi"), seen)
	if !received(c, 2*time.Second) {
		t.Fatal("host behind None not reachable from the public segment")
	}
}

// TestPrefixLockedAcrossOpens: a second lab with the same prefix waits
// for the first to close instead of removing its namespaces.
func TestPrefixLockedAcrossOpens(t *testing.T) {
	l := New(t, "nllock")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := Open(ctx, "nllock"); err == nil {
		t.Fatal("a second lab with the same prefix opened while the first exists")
	}
	l.Close()
	l2, err := Open(context.Background(), "nllock")
	if err != nil {
		t.Fatal(err)
	}
	l2.Close()
}
