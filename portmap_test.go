package pipes_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/pipesnet/pipes"
	"github.com/pipesnet/pipes/internal/portmap"
	"github.com/pipesnet/pipes/internal/portmap/portmaptest"
	"github.com/pipesnet/pipes/internal/testnet"
)

// Short names of the test gateways, for the functions given to their Set
// and Get.
type (
	pmpResponder = portmaptest.PMPResponder
	igdResponder = portmaptest.IGDResponder
)

// mappedMember is a member whose node maps its port at a gateway on
// 127.0.0.1: NAT-PMP and PCP at serverPort, UPnP at upnpURL.
func mappedMember(t *testing.T, netPath, name string, serverPort uint16, upnpURL string) *testnet.Member {
	t.Helper()
	m := testnet.NewMember(t, netPath, name, pipes.WithPortMapping(true))
	pipes.SetPortMapConfig(m.N, func(c *portmap.Config) {
		c.Gateway = netip.MustParseAddr("127.0.0.1")
		c.ServerPort = serverPort
		c.UPnPURL = upnpURL
		c.Timeout = 2 * time.Second
	})
	return m
}

// waitMapping waits until m's node has a mapping and returns it.
func waitMapping(t *testing.T, m *testnet.Member) pipes.PortMapping {
	t.Helper()
	testnet.Eventually(t, 30*time.Second, "a port mapping", func() error {
		if pm := m.N.PortMapping(); !pm.External.IsValid() {
			return fmt.Errorf("%+v", pm)
		}
		return nil
	})
	return m.N.PortMapping()
}

// TestNodePortMapping: a node with port mapping on gets a NAT-PMP mapping
// of its socket's port, reports the external address (PortMapping,
// PublicAddrs), advertises it to its peers, and deletes the mapping at the
// router when it shuts down.
func TestNodePortMapping(t *testing.T) {
	r := portmaptest.NewPMPResponder(t, true, true)
	netPath := testnet.Netfile(t, "pmap")
	a := mappedMember(t, netPath, "mapped", r.Port(), portmaptest.ClosedURL(t))
	a.Start(t)
	port := a.N.ListenAddrs()[0].Port()
	want := netip.AddrPortFrom(netip.MustParseAddr("203.0.113.7"), port)

	pm := waitMapping(t, a)
	if !pm.Enabled || pm.Protocol != "natpmp" || pm.External != want || pm.Err != nil {
		t.Fatalf("PortMapping() = %+v, want natpmp %v", pm, want)
	}
	if !r.Get(func(r *pmpResponder) bool { _, ok := r.Mappings[port]; return ok && r.Adds == 1 }) {
		t.Fatalf("the gateway has no mapping of port %d", port)
	}
	if got := a.N.PublicAddrs(); !slices.Contains(got, want) {
		t.Fatalf("PublicAddrs() = %v, want %v among them", got, want)
	}
	// A peer learns the mapped address from the node's announcements.
	b := testnet.NewMember(t, netPath, "peer")
	b.Gateway(t, a)
	b.Start(t)
	testnet.Eventually(t, 30*time.Second, "the peer sees the mapped address", func() error {
		for _, ref := range b.N.ConnectedNodes() {
			if ref.ID() == a.N.ID() && slices.Contains(pipes.Details(ref).Addrs, want.String()) {
				return nil
			}
		}
		return fmt.Errorf("peer sees %v", b.N.ConnectedNodes())
	})
	// The peer itself maps nothing: test mode turns the default off.
	if pm := b.N.PortMapping(); pm.Enabled || pm.External.IsValid() {
		t.Fatalf("peer's PortMapping() = %+v, want off", pm)
	}

	if err := a.N.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if !r.Get(func(r *pmpResponder) bool { return r.Deletes == 1 && len(r.Mappings) == 0 }) {
		t.Fatal("the mapping was not deleted at the gateway on shutdown")
	}
	if pm := a.N.PortMapping(); pm != (pipes.PortMapping{}) {
		t.Fatalf("PortMapping() after shutdown = %+v", pm)
	}
}

// TestNodePortMappingUPnP: with no NAT-PMP or PCP server, the node maps its
// port at the UPnP gateway device, for its own address, and deletes the
// mapping on shutdown.
func TestNodePortMappingUPnP(t *testing.T) {
	g := portmaptest.NewIGDResponder(t)
	a := mappedMember(t, testnet.Netfile(t, "pmupnp"), "mapped", portmaptest.ClosedUDPPort(t), g.URL())
	a.Start(t)
	port := a.N.ListenAddrs()[0].Port()
	want := netip.AddrPortFrom(netip.MustParseAddr("198.51.100.9"), port)
	if pm := waitMapping(t, a); pm.Protocol != "upnp" || pm.External != want {
		t.Fatalf("PortMapping() = %+v, want upnp %v", pm, want)
	}
	if !g.Get(func(g *igdResponder) bool { return g.Mappings[port] == fmt.Sprintf("127.0.0.1:%d", port) }) {
		t.Fatalf("the gateway has no mapping of port %d to 127.0.0.1", port)
	}
	if got := a.N.PublicAddrs(); !slices.Contains(got, want) {
		t.Fatalf("PublicAddrs() = %v, want %v among them", got, want)
	}
	if err := a.N.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if !g.Get(func(g *igdResponder) bool { return g.Deletes == 1 && len(g.Mappings) == 0 }) {
		t.Fatal("the mapping was not deleted at the gateway on shutdown")
	}
}

// TestNodePortMappingRefused: a router that refuses leaves the node
// without a mapping, which PortMapping explains, and nothing is advertised
// or reported as public.
func TestNodePortMappingRefused(t *testing.T) {
	r := portmaptest.NewPMPResponder(t, true, true)
	r.Set(func(r *pmpResponder) { r.Refuse = true })
	a := mappedMember(t, testnet.Netfile(t, "pmrefuse"), "refused", r.Port(), portmaptest.ClosedURL(t))
	a.Start(t)
	testnet.Eventually(t, 30*time.Second, "the refusal", func() error {
		if pm := a.N.PortMapping(); !pm.Enabled || !errors.Is(pm.Err, portmap.ErrRefused) || pm.External.IsValid() {
			return fmt.Errorf("%+v", pm)
		}
		return nil
	})
	if got := a.N.PublicAddrs(); len(got) != 0 {
		t.Fatalf("PublicAddrs() = %v without a mapping or peers", got)
	}
}

// TestNodePortMappingDefaultOnLoopback: outside test mode too, a node that
// listens on loopback does not map a port (no discovery traffic to the
// LAN), unless told to.
func TestNodePortMappingDefaultOnLoopback(t *testing.T) {
	for _, force := range []bool{false, true} {
		dir := filepath.Join(t.TempDir(), "plain")
		p, err := pipes.Open(dir, pipes.WithLogger(testnet.Logger(t)))
		if err != nil {
			t.Fatal(err)
		}
		nw, err := p.AddNetwork(testnet.Netfile(t, "pmloop"))
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := nw.SetSecret(testnet.Secret); err != nil || !ok {
			t.Fatalf("SetSecret: %v %v", ok, err)
		}
		id, err := p.AddIdentity("loop")
		if err != nil {
			t.Fatal(err)
		}
		opts := []pipes.NodeOption{pipes.WithListenAddr("127.0.0.1:0")}
		if force {
			opts = append(opts, pipes.WithPortMapping(true))
		}
		n, err := p.AddNode(nw, id, "loop", opts...)
		if err != nil {
			t.Fatal(err)
		}
		r := portmaptest.NewPMPResponder(t, true, true)
		pipes.SetPortMapConfig(n, func(c *portmap.Config) {
			c.Gateway, c.ServerPort, c.UPnPURL = netip.MustParseAddr("127.0.0.1"), r.Port(), portmaptest.ClosedURL(t)
		})
		if err := n.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		if force {
			testnet.Eventually(t, 30*time.Second, "a forced mapping", func() error {
				if pm := n.PortMapping(); !pm.External.IsValid() {
					return fmt.Errorf("%+v", pm)
				}
				return nil
			})
		} else if pm := n.PortMapping(); pm.Enabled {
			t.Fatalf("PortMapping() = %+v on loopback, want off", pm)
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		wantAdds := 0
		if force {
			wantAdds = 1
		}
		var adds, mappings int
		r.Get(func(r *pmpResponder) bool { adds, mappings = r.Adds, len(r.Mappings); return true })
		if adds != wantAdds || mappings != 0 {
			t.Fatalf("force=%v: the gateway saw %d adds and has %d mappings after Close, want %d and 0", force, adds, mappings, wantAdds)
		}
	}
}

// TestRouterPort: an application's own port, mapped at a UPnP gateway
// device on its own (no node), reported, and deleted on Close; a refusal
// is reported as ErrRouterRefused.
func TestRouterPort(t *testing.T) {
	g := portmaptest.NewIGDResponder(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rp, err := pipes.OpenRouterPort(ctx, pipes.RouterPortOptions{Port: 8080, Protocol: "tcp", UPnPURL: g.URL(), Protocols: []string{"upnp"}})
	if err != nil {
		t.Fatal(err)
	}
	if rp.Protocol() != "upnp" || !rp.External().IsValid() || rp.External().Port() == 0 {
		t.Fatalf("mapping %s %v", rp.Protocol(), rp.External())
	}
	if !g.Get(func(g *portmaptest.IGDResponder) bool { return len(g.Mappings) == 1 }) {
		t.Fatal("the gateway holds no mapping")
	}
	if err := rp.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if !g.Get(func(g *portmaptest.IGDResponder) bool { return len(g.Mappings) == 0 && g.Deletes == 1 }) {
		t.Fatal("the mapping was not deleted on Close")
	}
	g.Set(func(g *portmaptest.IGDResponder) { g.RefuseCode = 718 })
	if _, err := pipes.OpenRouterPort(ctx, pipes.RouterPortOptions{Port: 8080, UPnPURL: g.URL(), Protocols: []string{"upnp"}}); !errors.Is(err, pipes.ErrRouterRefused) {
		t.Fatalf("refused mapping: %v", err)
	}
	if _, err := pipes.OpenRouterPort(ctx, pipes.RouterPortOptions{Port: 0}); err == nil {
		t.Fatal("port 0 accepted")
	}
}
