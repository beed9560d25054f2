package mesh

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/pipesnet/pipes/internal/ids"
)

// TestStreams: a stream opened to a direct peer reaches its OnStream (an
// echo here) and half-closes cleanly; a node that is not a direct peer
// gets ErrNotPeer.
func TestStreams(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, r, b := datagramLine(t, ctx)
	st, err := a.OpenStream(ctx, r.id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write([]byte("over the stream")); err != nil {
		t.Fatal(err)
	}
	st.Close() // our side is done: the echo ends when it has sent it back
	got, err := io.ReadAll(st)
	if err != nil || string(got) != "over the stream" {
		t.Fatalf("echo: %q %v", got, err)
	}
	if _, err := a.OpenStream(ctx, b.id); !errors.Is(err, ErrNotPeer) {
		t.Fatalf("stream to a node that is not a peer: %v", err)
	}
}

// TestPublicAddrs: the address two peers agree they see a node's packets
// come from is its public address (here its loopback socket); one peer's
// word is not enough.
func TestPublicAddrs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := startMesh(t, "a")
	b := startMesh(t, "b", a.addr)
	routable(t, ctx, b, a)
	if got := a.PublicAddrs(); len(got) != 0 {
		t.Fatalf("one peer's report was trusted: %v", got)
	}
	c := startMesh(t, "c", a.addr)
	routable(t, ctx, c, a)
	for {
		if got := a.PublicAddrs(); len(got) == 1 && got[0].String() == a.addr {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("public addresses %v, want [%s]", a.PublicAddrs(), a.addr)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestPathAndPing: the path to a direct peer and to a node behind a relay,
// and a ping to each.
func TestPathAndPing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, r, b := datagramLine(t, ctx)
	p, err := a.Path(ctx, r.id)
	if err != nil || !p.Direct || p.Via != r.id || p.RTT <= 0 || p.BytesSent == 0 || p.Remote != r.addr {
		t.Fatalf("path to a peer: %+v %v", p, err)
	}
	p, err = a.Path(ctx, b.id)
	if err != nil || p.Direct || p.Via != r.id {
		t.Fatalf("path through the relay: %+v %v", p, err)
	}
	for _, dst := range []*liveMesh{r, b} {
		if rtt, err := a.Ping(ctx, dst.id); err != nil || rtt <= 0 {
			t.Fatalf("ping: %v %v", rtt, err)
		}
	}
	if _, err := a.Path(ctx, ids.Node{9}); !errors.Is(err, ErrNoRoute) {
		t.Fatalf("path to an unknown node: %v", err)
	}
}

// TestPunch: two nodes that reach each other only through a relay punch a
// direct connection (on loopback no NAT is in the way: this checks the
// exchange of candidates and the simultaneous dials); routes then go
// direct.
func TestPunch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, r, b := datagramLine(t, ctx)
	if p, err := a.Path(ctx, b.id); err != nil || p.Direct || p.Via != r.id {
		t.Fatalf("before: %+v %v", p, err)
	}
	if err := a.Punch(ctx, b.id); err != nil {
		t.Fatal(err)
	}
	for {
		if p, err := a.Path(ctx, b.id); err == nil && p.Direct {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the route did not move to the direct connection")
		case <-time.After(20 * time.Millisecond):
		}
	}
	if got := parseCandidates([]byte("1.2.3.4:5\nnot an address\n[::1]:7\n0.0.0.0:0\n")); len(got) != 2 {
		t.Fatalf("candidates %v", got)
	}
}

// FuzzParseCandidates: any punch payload parses to valid addresses only.
func FuzzParseCandidates(f *testing.F) {
	f.Add([]byte("198.51.100.7:4242\n[2001:db8::1]:7420\n"))
	f.Add([]byte("nat=hard\n198.51.100.7:4242\nlisten\n10.0.0.2:4242\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		o := parseOffer(b)
		for _, a := range o.addrs {
			if ap, err := netip.ParseAddrPort(a); err != nil || ap.Port() == 0 {
				t.Fatalf("kept %q", a)
			}
		}
		if len(o.addrs) > maxCandidates || len(o.observed) > len(o.addrs) || o.mapping > MappingDependent {
			t.Fatalf("offer %+v", o)
		}
	})
}
