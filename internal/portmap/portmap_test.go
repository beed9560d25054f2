package portmap

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/pipesnet/pipes/internal/portmap/portmaptest"
	"github.com/pipesnet/pipes/internal/testutil"
)

var loopback = netip.MustParseAddr("127.0.0.1")

// Short names of the test gateways, for the functions given to their Set
// and Get.
type (
	pmpResponder = portmaptest.PMPResponder
	igdResponder = portmaptest.IGDResponder
)

// testConfig maps port 4242 at the loopback gateway, never at a real one.
func testConfig(serverPort uint16, upnpURL string) Config {
	return Config{
		InternalPort: 4242,
		Gateway:      loopback,
		ServerPort:   serverPort,
		UPnPURL:      upnpURL,
		Timeout:      2 * time.Second,
		RetryMin:     50 * time.Millisecond,
		RetryMax:     200 * time.Millisecond,
	}
}

func open(t *testing.T, cfg Config) *Mapping {
	t.Helper()
	m, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	return m
}

// testPMPOrPCP checks add, renewal before expiry and delete on Close.
func testPMPOrPCP(t *testing.T, pmp, pcp bool, want string) {
	r := portmaptest.NewPMPResponder(t, pmp, pcp)
	r.Set(func(r *pmpResponder) { r.MaxLifetime = 2 })
	cfg := testConfig(r.Port(), portmaptest.ClosedURL(t))
	cfg.Lifetime = time.Hour // the router shortens it to 2 s
	m := open(t, cfg)
	if got := m.Protocol(); got != want {
		t.Fatalf("Protocol() = %q, want %q", got, want)
	}
	if got, want := m.External(), netip.MustParseAddrPort("203.0.113.7:4242"); got != want {
		t.Fatalf("External() = %v, want %v", got, want)
	}
	testutil.WaitFor(t, "two renewals", func() bool { return r.Get(func(r *pmpResponder) bool { return r.Renews >= 2 }) })
	if r.Get(func(r *pmpResponder) bool { return r.Adds != 1 || r.Lapses != 0 }) {
		t.Fatalf("adds %d lapses %d, want 1 add and renewals before expiry", r.Adds, r.Lapses)
	}
	if err := m.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if !r.Get(func(r *pmpResponder) bool { return r.Deletes == 1 && len(r.Mappings) == 0 }) {
		t.Fatalf("deletes %d mappings %v after Close", r.Deletes, r.Mappings)
	}
	if m.External().IsValid() || m.Protocol() != "" {
		t.Fatalf("after Close: External %v Protocol %q", m.External(), m.Protocol())
	}
	if err := m.Close(context.Background()); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestNATPMPAddRenewDelete(t *testing.T) { testPMPOrPCP(t, true, true, ProtoNATPMP) }

// TestPCPAddRenewDelete uses a PCP-only server: NAT-PMP is answered with
// UNSUPP_VERSION, so Open moves on to PCP.
func TestPCPAddRenewDelete(t *testing.T) { testPMPOrPCP(t, false, true, ProtoPCP) }

func TestPMPGrantsOtherExternalPort(t *testing.T) {
	for _, pcp := range []bool{false, true} {
		r := portmaptest.NewPMPResponder(t, !pcp, pcp)
		r.Set(func(r *pmpResponder) { r.ExtPort = 5555 })
		m := open(t, testConfig(r.Port(), portmaptest.ClosedURL(t)))
		if got := m.External().Port(); got != 5555 {
			t.Fatalf("pcp=%v: external port %d, want 5555", pcp, got)
		}
	}
}

func TestUPnPAddRenewDelete(t *testing.T) {
	g := portmaptest.NewIGDResponder(t)
	// No NAT-PMP or PCP answers (port unreachable): Open moves on to UPnP.
	cfg := testConfig(portmaptest.ClosedUDPPort(t), g.URL())
	cfg.UPnPLease = 2 * time.Second
	m := open(t, cfg)
	if got := m.Protocol(); got != ProtoUPnP {
		t.Fatalf("Protocol() = %q", got)
	}
	if got, want := m.External(), netip.MustParseAddrPort("198.51.100.9:4242"); got != want {
		t.Fatalf("External() = %v, want %v", got, want)
	}
	if !g.Get(func(g *igdResponder) bool { return g.Mappings[4242] == "127.0.0.1:4242" && g.Leases[0] == 2 }) {
		t.Fatalf("mappings %v leases %v", g.Mappings, g.Leases)
	}
	testutil.WaitFor(t, "a renewal", func() bool { return g.Get(func(g *igdResponder) bool { return g.Adds >= 2 }) })
	if err := m.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if !g.Get(func(g *igdResponder) bool { return g.Deletes == 1 && len(g.Mappings) == 0 }) {
		t.Fatalf("deletes %d mappings %v after Close", g.Deletes, g.Mappings)
	}
}

func TestUPnPPermanentLeaseOnly(t *testing.T) {
	g := portmaptest.NewIGDResponder(t)
	g.Set(func(g *igdResponder) { g.PermanentOnly = true })
	cfg := testConfig(portmaptest.ClosedUDPPort(t), g.URL())
	cfg.Protocols = []string{ProtoUPnP}
	cfg.UPnPLease = time.Second
	m := open(t, cfg)
	// Refreshed all the same, and asking for an unlimited lease straight away.
	testutil.WaitFor(t, "a refresh", func() bool { return g.Get(func(g *igdResponder) bool { return g.Adds >= 2 }) })
	if !g.Get(func(g *igdResponder) bool { return g.Leases[0] == 0 && g.Leases[1] == 0 }) {
		t.Fatalf("leases %v, want 0s", g.Leases)
	}
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestRefused(t *testing.T) {
	t.Run("natpmp", func(t *testing.T) {
		r := portmaptest.NewPMPResponder(t, true, false)
		r.Set(func(r *pmpResponder) { r.Refuse = true })
		cfg := testConfig(r.Port(), portmaptest.ClosedURL(t))
		_, err := Open(context.Background(), cfg)
		if !errors.Is(err, ErrRefused) {
			t.Fatalf("Open: %v, want ErrRefused", err)
		}
	})
	t.Run("pcp", func(t *testing.T) {
		r := portmaptest.NewPMPResponder(t, false, true)
		r.Set(func(r *pmpResponder) { r.Refuse = true })
		_, err := Open(context.Background(), testConfig(r.Port(), portmaptest.ClosedURL(t)))
		if !errors.Is(err, ErrRefused) {
			t.Fatalf("Open: %v, want ErrRefused", err)
		}
	})
	for _, code := range []int{501, 718} {
		t.Run(fmt.Sprintf("upnp%d", code), func(t *testing.T) {
			g := portmaptest.NewIGDResponder(t)
			g.Set(func(g *igdResponder) { g.RefuseCode = code })
			_, err := Open(context.Background(), testConfig(portmaptest.ClosedUDPPort(t), g.URL()))
			if !errors.Is(err, ErrRefused) || errors.Is(err, ErrUnsupported) {
				t.Fatalf("Open: %v, want ErrRefused", err)
			}
		})
	}
}

func TestNoResponder(t *testing.T) {
	cfg := testConfig(portmaptest.ClosedUDPPort(t), portmaptest.ClosedURL(t))
	cfg.Timeout = 300 * time.Millisecond
	_, err := Open(context.Background(), cfg)
	if !errors.Is(err, ErrUnsupported) || errors.Is(err, ErrRefused) {
		t.Fatalf("Open: %v, want ErrUnsupported", err)
	}
}

// TestSilentResponder: a gateway that drops packets is skipped after the
// per-protocol timeout.
func TestSilentResponder(t *testing.T) {
	r := portmaptest.NewPMPResponder(t, true, true)
	r.Set(func(r *pmpResponder) { r.Silent = true })
	cfg := testConfig(r.Port(), portmaptest.ClosedURL(t))
	cfg.Timeout = 300 * time.Millisecond
	_, err := Open(context.Background(), cfg)
	if !errors.Is(err, ErrUnsupported) {
		t.Fatalf("Open: %v, want ErrUnsupported", err)
	}
}

func TestOpenCanceled(t *testing.T) {
	r := portmaptest.NewPMPResponder(t, true, true)
	r.Set(func(r *pmpResponder) { r.Silent = true })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Open(ctx, testConfig(r.Port(), portmaptest.ClosedURL(t)))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Open: %v, want context.Canceled", err)
	}
}

func TestExternalAddressChange(t *testing.T) {
	r := portmaptest.NewPMPResponder(t, true, false)
	r.Set(func(r *pmpResponder) { r.MaxLifetime = 1 })
	changes := make(chan netip.AddrPort, 10)
	cfg := testConfig(r.Port(), portmaptest.ClosedURL(t))
	cfg.OnChange = func(a netip.AddrPort) { changes <- a }
	m := open(t, cfg)
	r.Set(func(r *pmpResponder) { r.ExtIP = netip.MustParseAddr("203.0.113.99") })
	want := netip.MustParseAddrPort("203.0.113.99:4242")
	select {
	case got := <-changes:
		if got != want {
			t.Fatalf("OnChange(%v), want %v", got, want)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no OnChange")
	}
	if got := m.External(); got != want {
		t.Fatalf("External() = %v, want %v", got, want)
	}
}

// TestLostAndBack: a failed renewal reports the mapping lost, and it is
// re-established once the router answers again.
func TestLostAndBack(t *testing.T) {
	r := portmaptest.NewPMPResponder(t, true, false)
	r.Set(func(r *pmpResponder) { r.MaxLifetime = 1 })
	changes := make(chan netip.AddrPort, 10)
	cfg := testConfig(r.Port(), portmaptest.ClosedURL(t))
	cfg.Timeout = 300 * time.Millisecond
	cfg.OnChange = func(a netip.AddrPort) { changes <- a }
	m := open(t, cfg)
	next := func() netip.AddrPort {
		select {
		case a := <-changes:
			return a
		case <-time.After(30 * time.Second):
			t.Fatal("no OnChange")
		}
		return netip.AddrPort{}
	}
	r.Set(func(r *pmpResponder) { r.Silent = true })
	if a := next(); a.IsValid() {
		t.Fatalf("OnChange(%v), want the zero AddrPort for a lost mapping", a)
	}
	if m.Protocol() != "" || m.External().IsValid() {
		t.Fatalf("lost mapping: Protocol %q External %v", m.Protocol(), m.External())
	}
	r.Set(func(r *pmpResponder) { r.Silent = false })
	if a, want := next(), netip.MustParseAddrPort("203.0.113.7:4242"); a != want {
		t.Fatalf("OnChange(%v), want %v", a, want)
	}
	if m.Protocol() != ProtoNATPMP {
		t.Fatalf("Protocol %q after recovery", m.Protocol())
	}
}

func TestConfigErrors(t *testing.T) {
	if _, err := Open(context.Background(), Config{}); err == nil {
		t.Fatal("Open without InternalPort succeeded")
	}
	if _, err := Open(context.Background(), Config{InternalPort: 1, Protocol: "sctp"}); err == nil {
		t.Fatal("Open with protocol sctp succeeded")
	}
}

func TestParseProcRoute(t *testing.T) {
	const table = `Iface	Destination	Gateway 	Flags	RefCnt	Use	Metric	Mask		MTU	Window	IRTT
eth0	0000A8C0	00000000	0001	0	0	0	00FFFFFF	0	0	0
eth0	00000000	0101A8C0	0003	0	0	0	00000000	0	0	0
`
	gw, ok := parseProcRoute([]byte(table))
	if !ok || gw != netip.MustParseAddr("192.168.1.1") {
		t.Fatalf("parseProcRoute = %v, %v", gw, ok)
	}
	if _, ok := parseProcRoute([]byte("Iface\tDestination\n")); ok {
		t.Fatal("found a gateway in an empty table")
	}
}

func TestPCPRoundTrip(t *testing.T) {
	req := pcpMapRequest{
		lifetime: 60, client: loopback, nonce: [12]byte{1, 2, 3},
		protocol: pcpProtoUDP, internalPort: 4242, externalPort: 4243,
	}
	b := req.encode()
	if len(b) != 60 || b[0] != 2 || b[1] != 1 {
		t.Fatalf("request header % x", b[:4])
	}
	// A response is the request with the response bit, lifetime and epoch.
	b[1] |= 0x80
	r, err := parsePCPMap(b)
	if err != nil {
		t.Fatal(err)
	}
	if r.nonce != req.nonce || r.internalPort != 4242 || r.externalPort != 4243 || r.lifetime != 60 || r.externalIP != netip.IPv4Unspecified() {
		t.Fatalf("parsed %+v", r)
	}
}
