package netlab

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// rtt is the shortest of n round trips from c to the echo server (each
// retried on loss), or an error when one gets no answer at all.
func rtt(c *net.UDPConn, server netip.AddrPort, n int) (time.Duration, error) {
	best := time.Duration(-1)
	for range n {
		var err error
		for try := 0; try < 5; try++ {
			start := time.Now()
			if _, err = ask(c, server, 2*time.Second); err == nil {
				if d := time.Since(start); best < 0 || d < best {
					best = d
				}
				break
			}
		}
		if err != nil {
			return 0, err
		}
	}
	return best, nil
}

// TestDelay: SetDelay holds packets on a node's link for the delay each
// way, adds up over two delayed links, survives other impairments being
// changed, keeps packets in order, and goes away when set to 0. Only lower
// bounds on time are asserted.
func TestDelay(t *testing.T) {
	tp := build(t, "nldelay", EIMAddrPortFiltering)
	l := tp.lab
	c, err := tp.h1.ListenUDP(":4000")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	base, err := rtt(c, tp.echoAddr, 5)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("round trip without delay: %v", base)

	const d1, d2 = 50 * time.Millisecond, 30 * time.Millisecond
	if err := l.SetDelay(tp.n1, d1); err != nil {
		t.Fatal(err)
	}
	got, err := rtt(c, tp.echoAddr, 5)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("round trip with %v on the NAT's link: %v", d1, got)
	if got < 2*d1 {
		t.Fatalf("round trip %v with %v each way", got, d1)
	}

	// The echo server's own link delayed too: each packet is held twice.
	if err := l.SetDelay(tp.pub, d2); err != nil {
		t.Fatal(err)
	}
	want := 2 * (d1 + d2)
	if got, err = rtt(c, tp.echoAddr, 5); err != nil {
		t.Fatal(err)
	}
	t.Logf("round trip with %v and %v on the two links: %v", d1, d2, got)
	if got < want {
		t.Fatalf("round trip %v, want at least %v", got, want)
	}

	// Loss on top: the ruleset is rewritten, the delay stays.
	if err := l.SetLoss(tp.n1, 10); err != nil {
		t.Fatal(err)
	}
	if got, err = rtt(c, tp.echoAddr, 5); err != nil {
		t.Fatal(err)
	}
	t.Logf("round trip with 10%% loss added: %v", got)
	if got < want {
		t.Fatalf("round trip %v after SetLoss, want at least %v", got, want)
	}
	// The loss still acts on delayed packets.
	if err := l.SetLoss(tp.n1, 99); err != nil {
		t.Fatal(err)
	}
	if _, err := ask(c, tp.echoAddr, 500*time.Millisecond); err == nil {
		t.Fatal("answer through 99% loss each way on a delayed link")
	}
	if err := l.SetLoss(tp.n1, 0); err != nil {
		t.Fatal(err)
	}

	// Order: a burst of numbered packets arrives complete and in order.
	t.Run("Order", func(t *testing.T) {
		srv, err := tp.pub.ListenUDP(":0")
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		srv.SetReadBuffer(4 << 20)
		srvAddr := netip.AddrPortFrom(tp.pub.Addr(), uint16(srv.LocalAddr().(*net.UDPAddr).Port))
		const n = 200
		got := make(chan []uint32, 1)
		go func() {
			var seqs []uint32
			buf := make([]byte, 1500)
			srv.SetReadDeadline(time.Now().Add(10 * time.Second))
			for len(seqs) < n {
				m, _, err := srv.ReadFromUDPAddrPort(buf)
				if err != nil || m < 4 {
					break
				}
				seqs = append(seqs, binary.BigEndian.Uint32(buf))
			}
			got <- seqs
		}()
		start := time.Now()
		pkt := make([]byte, 100)
		for i := range uint32(n) {
			binary.BigEndian.PutUint32(pkt, i)
			if _, err := c.WriteToUDPAddrPort(pkt, srvAddr); err != nil {
				t.Fatal(err)
			}
		}
		seqs := <-got
		t.Logf("%d of %d packets in %v", len(seqs), n, time.Since(start).Round(time.Millisecond))
		if len(seqs) != n {
			t.Fatalf("%d of %d packets arrived", len(seqs), n)
		}
		if since := time.Since(start); since < d1+d2 {
			t.Fatalf("burst arrived after %v, before the delay of %v", since, d1+d2)
		}
		for i, s := range seqs {
			if s != uint32(i) {
				t.Fatalf("packet %d arrived at position %d: %v", s, i, seqs)
			}
		}
	})

	// A partition drops the packets before they are held; healing brings
	// back the delayed path.
	if err := l.Partition(tp.n1, true); err != nil {
		t.Fatal(err)
	}
	if _, err := ask(c, tp.echoAddr, 500*time.Millisecond); err == nil {
		t.Fatal("answer through a partition")
	}
	if err := l.Partition(tp.n1, false); err != nil {
		t.Fatal(err)
	}
	if got, err = rtt(c, tp.echoAddr, 3); err != nil {
		t.Fatalf("after healing: %v", err)
	}
	if got < want {
		t.Fatalf("round trip %v after healing, want at least %v", got, want)
	}

	for _, n := range []Node{tp.n1, tp.pub} {
		if err := l.SetDelay(n, 0); err != nil {
			t.Fatal(err)
		}
	}
	if got, err = rtt(c, tp.echoAddr, 5); err != nil {
		t.Fatal(err)
	}
	t.Logf("round trip with the delays removed: %v", got)

	if err := l.SetDelay(tp.h1, d1); err == nil {
		t.Fatal("SetDelay accepted a host behind a NAT")
	}
	if err := l.SetDelay(tp.n1, -time.Second); err == nil {
		t.Fatal("SetDelay accepted a negative delay")
	}
}

// TestDelayClose: Close stops the queues' goroutines and closes their
// sockets.
func TestDelayClose(t *testing.T) {
	opts := goleak.IgnoreCurrent()
	l, err := Open(context.Background(), "nldelcl")
	if errors.Is(err, ErrUnsupported) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	a, err := l.AddHost(nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.AddHost(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []*Host{a, b} {
		if err := l.SetDelay(h, 20*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	srv := echo(t, b, "7")
	c, err := a.ListenUDP(":0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := rtt(c, srv, 2)
	if err != nil {
		t.Fatal(err)
	}
	if got < 80*time.Millisecond {
		t.Fatalf("round trip %v between two links delayed by 20 ms", got)
	}
	c.Close()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.SetDelay(a, time.Millisecond); err == nil {
		t.Fatal("SetDelay after Close succeeded")
	}
	goleak.VerifyNone(t, opts, goleak.IgnoreAnyFunction("github.com/pipesnet/pipes/internal/netlab.echo.func2"))
}
