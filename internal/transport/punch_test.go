package transport

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

func TestProbePortsAreDistinctAndInRange(t *testing.T) {
	for _, n := range []int{0, 1, 2048, 70000} {
		ps := probePorts(n)
		if want := min(n, 65536-portLow); len(ps) != want {
			t.Fatalf("probePorts(%d) gave %d ports, want %d", n, len(ps), want)
		}
		seen := map[uint16]bool{}
		for _, p := range ps {
			if p < portLow || seen[p] {
				t.Fatalf("probePorts(%d): port %d out of range or repeated", n, p)
			}
			seen[p] = true
		}
	}
}

// TestPunchHardDialsFromTheProbedSocket: a probe that reaches one of
// PunchHard's sockets makes it dial the prober from that socket, and the
// prober accepts a verified connection from it.
func TestPunchHardDialsFromTheProbedSocket(t *testing.T) {
	a, b := newMember(t, netA, "a"), newMember(t, netA, "b")
	var mu sync.Mutex
	var opened []netip.AddrPort
	ta, err := Listen("127.0.0.1:0", Config{Key: a.key, Cert: a.cert, NetworkID: netA, NetworkKey: keyA, Incarnation: 1,
		HandshakeTimeout: 5 * time.Second,
		ListenUDP: func(la *net.UDPAddr) (*net.UDPConn, error) {
			c, err := net.ListenUDP("udp", la)
			if err == nil {
				mu.Lock()
				opened = append(opened, c.LocalAddr().(*net.UDPAddr).AddrPort())
				mu.Unlock()
			}
			return c, err
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer ta.Close()
	tb := listen(t, b, netA, keyA)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	type result struct {
		c   *Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ta.PunchHard(ctx, 8, []netip.AddrPort{tb.Addr()})
		done <- result{c, err}
	}()
	// Probe the sockets once they are open: the fifth is the one hit.
	var target netip.AddrPort
	for target == (netip.AddrPort{}) {
		mu.Lock()
		if len(opened) == 8 {
			target = opened[4]
		}
		mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() { // again until the dial is seen: the readers may not be up yet
		for {
			tb.SendProbe(target)
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	in, err := tb.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if !r.c.Extra || r.c.PeerID != b.cert.NodeID() || in.PeerID != a.cert.NodeID() {
		t.Fatalf("extra=%v peer=%x in.peer=%x", r.c.Extra, r.c.PeerID[:4], in.PeerID[:4])
	}
	if got := in.RemoteAddr().(*net.UDPAddr).AddrPort(); got != target {
		t.Fatalf("the connection comes from %s, want the probed socket %s", got, target)
	}
	if in.Observed != tb.Addr() || r.c.Observed != target {
		t.Fatalf("observed addresses: %s / %s", in.Observed, r.c.Observed)
	}
	// The connection carries data both ways.
	if err := r.c.QUIC().SendDatagram([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := in.QUIC().ReceiveDatagram(ctx); err != nil {
		t.Fatal(err)
	}
	r.c.Close(CodeNormal, "done")
	in.Close(CodeNormal, "done")
}

// TestPunchHardGivesUpWithItsContext: without a probe, PunchHard returns
// when its context ends, closing its sockets.
func TestPunchHardGivesUpWithItsContext(t *testing.T) {
	a, b := newMember(t, netA, "a"), newMember(t, netA, "b")
	ta, tb := listen(t, a, netA, keyA), listen(t, b, netA, keyA)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := ta.PunchHard(ctx, 16, []netip.AddrPort{tb.Addr()}); err == nil {
		t.Fatal("PunchHard succeeded without a probe")
	}
}

// TestCheckProbes: a check probe reaches ExpectCheck's waiter with its
// nonce, from the sender's socket or from a fresh one (another port);
// other nonces and punch probes do not.
func TestCheckProbes(t *testing.T) {
	a, b := newMember(t, netA, "a"), newMember(t, netA, "b")
	ta, tb := listen(t, a, netA, keyA), listen(t, b, netA, keyA)
	other, stopOther := ta.ExpectCheck([16]byte{7}) // nobody sends this one
	defer stopOther()
	for _, fresh := range []bool{false, true} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		nonce := [16]byte{1, byte(len(t.Name())), 3}
		if fresh {
			nonce[15] = 1
		}
		got, stop := ta.ExpectCheck(nonce)
		var from netip.AddrPort
		for from == (netip.AddrPort{}) && ctx.Err() == nil {
			tb.SendProbe(ta.Addr())
			if err := tb.SendCheck(ctx, ta.Addr(), [16]byte{9}, fresh); err != nil { // another nonce
				t.Fatal(err)
			}
			if err := tb.SendCheck(ctx, ta.Addr(), nonce, fresh); err != nil {
				t.Fatal(err)
			}
			select {
			case from = <-got:
			case <-time.After(200 * time.Millisecond):
			}
		}
		stop()
		cancel()
		if !from.IsValid() {
			t.Fatal("no check probe arrived")
		}
		if (from == tb.Addr()) == fresh {
			t.Fatalf("fresh=%v: probe came from %s (the node's socket is %s)", fresh, from, tb.Addr())
		}
	}
	select {
	case from := <-other:
		t.Fatalf("a waiter got a probe with another nonce, from %s", from)
	default:
	}
}
