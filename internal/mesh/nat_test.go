package mesh

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/kinds"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

func TestClassifyMapping(t *testing.T) {
	ap := netip.MustParseAddrPort
	r1, r2 := ap("198.18.0.1:4000"), ap("198.18.0.9:4000")
	for _, c := range []struct {
		name string
		obs  []observation
		want Mapping
	}{
		{"none", nil, MappingUnknown},
		{"one peer", []observation{{r1, ap("198.18.0.3:5000")}}, MappingUnknown},
		{"same remote twice", []observation{{r1, ap("198.18.0.3:5000")}, {r1, ap("198.18.0.3:6000")}}, MappingUnknown},
		{"two agree", []observation{{r1, ap("198.18.0.3:5000")}, {r2, ap("198.18.0.3:5000")}}, MappingIndependent},
		{"two differ", []observation{{r1, ap("198.18.0.3:5000")}, {r2, ap("198.18.0.3:6000")}}, MappingDependent},
		{"different IPs (a LAN peer sees the private address)",
			[]observation{{r1, ap("198.18.0.3:5000")}, {ap("10.0.0.2:1"), ap("10.0.0.5:5000")}}, MappingUnknown},
		{"one disagreement wins", []observation{{r1, ap("198.18.0.3:5000")}, {r2, ap("198.18.0.3:5000")},
			{ap("198.18.0.7:1"), ap("198.18.0.3:7000")}}, MappingDependent},
	} {
		if got := classify(c.obs); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func TestParseOffer(t *testing.T) {
	o := parseOffer([]byte("nat=hard\n198.18.0.3:5000\nbogus\nlisten\n10.0.0.5:5000\n"))
	if o.mapping != MappingDependent || len(o.addrs) != 2 || len(o.observed) != 1 ||
		o.observed[0] != netip.MustParseAddrPort("198.18.0.3:5000") {
		t.Fatalf("%+v", o)
	}
	// An offer from before the "listen" line existed: every address is
	// taken as observed, the mapping as unknown.
	o = parseOffer([]byte("198.18.0.3:5000\n10.0.0.5:5000\n"))
	if o.mapping != MappingUnknown || len(o.observed) != 2 {
		t.Fatalf("%+v", o)
	}
}

// TestCheckNATOnLoopback: on loopback there is no NAT; alice (peers: the
// relay) is checked through the relay (port test) and bob, who is not her
// peer (address test): both probes arrive.
func TestCheckNATOnLoopback(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, r, b := datagramLine(t, ctx)
	waitFor(t, ctx, "bob online for alice", func() bool {
		n, ok := a.Node(b.id)
		return ok && n.Online && !isPeer(a, b.id)
	})
	rep, err := a.CheckNAT(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.BehindNAT() || len(rep.Observations) != 1 || rep.Observations[0].Observed.String() != a.addr {
		t.Fatalf("observations %+v (alice is %s)", rep.Observations, a.addr)
	}
	if rep.PortHelper != r.id || rep.AddrHelper != b.id || rep.Filtering != FilteringEndpointIndependent {
		t.Fatalf("helpers %x %x, filtering %v", rep.PortHelper[:4], rep.AddrHelper[:4], rep.Filtering)
	}
	if rep.Mapping != MappingUnknown { // one peer only
		t.Fatalf("mapping %v with one peer", rep.Mapping)
	}
}

// TestCheckRequestsAreBounded: a request for a probe from a new socket to
// an address that is not the requester's is ignored, as is a malformed one.
func TestCheckRequestsAreBounded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b := pair(t, ctx)
	for _, p := range [][]byte{
		append(append([]byte{'p'}, make([]byte, 16)...), "192.0.2.1:9"...), // not alice's address
		{'p', 1, 2}, // short
		append(append([]byte{'x'}, make([]byte, 16)...), a.addr...), // unknown mode
	} {
		var nonce [16]byte
		if len(p) >= 17 {
			nonce = [16]byte(p[1:17])
		}
		acked, stop := a.checks.add(nonce)
		defer stop()
		if err := a.Send(ctx, b.id, kinds.Check, p); err != nil {
			t.Fatal(err)
		}
		select {
		case <-acked:
			t.Fatalf("request %q was served", p)
		case <-time.After(300 * time.Millisecond): // absence: a bounded wait, not a timing assertion
		}
	}
}

// FuzzParseCheck: any check request parses to a valid address or is
// refused, without a panic.
func FuzzParseCheck(f *testing.F) {
	f.Add(append(append([]byte{'p'}, make([]byte, 16)...), "198.51.100.7:4242"...))
	f.Add([]byte{'a', 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, _, addr, ok := parseCheck(b); ok && (!addr.IsValid() || addr.Port() == 0) {
			t.Fatalf("accepted %q", b)
		}
	})
}

// TestRelayBudget: a peer's budget allows a second's worth at once, then
// refills at the rate, never beyond a second's worth.
func TestRelayBudget(t *testing.T) {
	var b relayBudget
	t0 := time.Unix(1000, 0)
	if !b.take(t0, 1000, 600) || !b.take(t0, 1000, 400) || b.take(t0, 1000, 1) {
		t.Fatal("the first second's worth is not exactly available")
	}
	if !b.take(t0.Add(500*time.Millisecond), 1000, 500) || b.take(t0.Add(500*time.Millisecond), 1000, 1) {
		t.Fatal("half a second does not refill half")
	}
	if b.take(t0.Add(time.Hour), 1000, 1001) || !b.take(t0.Add(time.Hour), 1000, 1000) {
		t.Fatal("the budget grows beyond a second's worth")
	}
}

// TestRelayLimitDropsOverBudget: a relay with a small relay rate drops
// what one peer sends through it beyond its budget, and counts it.
func TestRelayLimitDropsOverBudget(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, r, b := datagramLine(t, ctx)
	r.relayRate.Store(10_000) // bytes a second
	payload := make([]byte, 1000)
	for range 100 { // 100 kB at once: ten times the burst
		if err := a.Send(ctx, b.id, 999, payload); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, ctx, "the relay limits", func() bool { return r.Stats().RelayLimited > 0 })
	if got := r.Stats().Routed; got > 30 {
		t.Fatalf("the relay forwarded %d messages of 1000 bytes with a budget of 10 kB/s", got)
	}
}

// TestObservedNotice: a peer's notice of a new observed address replaces
// the handshake's, so the node offers its new address for punching.
func TestObservedNotice(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b := pair(t, ctx)
	moved := netip.MustParseAddrPort("198.51.100.9:777")
	if err := a.Send(ctx, b.id, kinds.Observed, []byte(moved.String())); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "bob takes the notice", func() bool {
		return len(b.snap.Load().observed) == 1 && b.snap.Load().observed[0] == moved
	})
	if o := parseOffer(b.candidates()); len(o.observed) != 1 || o.observed[0] != moved {
		t.Fatalf("bob offers %+v", o)
	}
}

// TestHardPunchBounds: a hard punch goes only to public addresses (not
// private, not carrier-grade NAT space) that are not the node's own, a few of them on two IPs at most, and only
// toward an online node.
func TestHardPunchBounds(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b := pair(t, ctx)
	ap := netip.MustParseAddrPort
	got := a.hardTargetsOf([]netip.AddrPort{ap("127.0.0.1:5"), ap("10.0.0.1:5"), ap("100.64.1.1:5"), ap("0.0.0.0:5"), ap("[::ffff:198.51.100.1]:1"),
		ap("198.51.100.1:2"), ap("198.51.100.2:1"), ap("198.51.100.3:1"), ap("198.51.100.1:3"), ap("198.51.100.1:4")})
	want := []netip.AddrPort{ap("198.51.100.1:1"), ap("198.51.100.1:2"), ap("198.51.100.2:1"), ap("198.51.100.1:3")}
	if !slices.Equal(got, want) {
		t.Fatalf("targets %v, want %v", got, want)
	}
	waitFor(t, ctx, "bob online for alice", func() bool { n, ok := a.Node(b.id); return ok && n.Online })
	done := make(chan [2]bool, 1)
	a.queryCh <- func() {
		now := time.Now()
		done <- [2]bool{a.mayPunchHard(now, ids.Node{42}), a.mayPunchHard(now, b.id)}
	}
	if r := <-done; r[0] || !r[1] {
		t.Fatalf("unknown node allowed %v, online node allowed %v", r[0], r[1])
	}
}

// TestForgedNoticeNotRelayed: alice cannot speak for the relay: a routed
// message that names the relay as its source, or a notice of an observed
// address, is not relayed to bob.
func TestForgedNoticeNotRelayed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, r, b := datagramLine(t, ctx)
	forged := netip.MustParseAddrPort("203.0.113.9:4444")
	for _, src := range []ids.Node{r.id, a.id} {
		f := &pb.Frame{Body: &pb.Frame_Routed{Routed: &pb.Routed{Dst: b.id[:], Src: src[:], Ttl: 2, Kind: kinds.Observed,
			Payload: []byte(forged.String())}}}
		a.queryCh <- func() { a.peers[r.id].send(f) }
	}
	waitFor(t, ctx, "the relay drops both", func() bool { return r.Stats().BadMessages >= 2 })
	// A ping after them through the same relay arrives: the notices, had
	// they been relayed, would have arrived first.
	if _, err := a.Ping(ctx, b.id); err != nil {
		t.Fatal(err)
	}
	done := make(chan bool, 1)
	b.queryCh <- func() { done <- slices.Contains(b.snap.Load().observed, forged) }
	if <-done {
		t.Fatal("bob took a forged notice")
	}
}

// TestBehindNATOnAllInterfaces: a socket bound to all interfaces is not
// behind a NAT when peers see its port on one of the machine's addresses.
func TestBehindNATOnAllInterfaces(t *testing.T) {
	ap := netip.MustParseAddrPort
	r := NATReport{Local: ap("[::]:7420"), Observations: []Observation{{Observed: ap("127.0.0.1:7420")}}}
	if r.BehindNAT() {
		t.Fatal("loopback seen on the socket's port counts as a NAT")
	}
	r.Observations = append(r.Observations, Observation{Observed: ap("203.0.113.9:7420")})
	if !r.BehindNAT() {
		t.Fatal("an address of another machine does not count as a NAT")
	}
}
