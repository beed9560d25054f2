package pipes

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/pipesnet/pipes/internal/portmap"
)

// Port mapping on its own: an application that listens on a port of its
// own (a game server, a web server beside its node) can ask the router to
// forward a public port to it. A node maps its own socket by itself (see
// WithPortMapping); this is for other ports.

// Errors of OpenRouterPort (test with errors.Is).
var (
	// ErrNoGateway: no gateway address was given or found in the routing
	// table, and no UPnP gateway device answered discovery.
	ErrNoGateway = portmap.ErrNoGateway
	// ErrRouterRefused: a router answered and refused the mapping (for
	// example a router whose own WAN address is private, or with port
	// mapping switched off).
	ErrRouterRefused = portmap.ErrRefused
	// ErrNoPortMapping: the gateway answered none of NAT-PMP, PCP and
	// UPnP-IGD.
	ErrNoPortMapping = portmap.ErrUnsupported
)

// RouterPortOptions says which local port the router should forward.
type RouterPortOptions struct {
	// Port is the local port (required).
	Port int
	// Protocol is "udp" (the default) or "tcp".
	Protocol string
	// ExternalPort is the public port to ask for (default: Port); the
	// router may give another one (see RouterPort.External).
	ExternalPort int
	// Gateway is the router's address; by default the default route's
	// gateway (Linux), else only UPnP discovery can find the router.
	Gateway netip.Addr
	// UPnPURL is the router's UPnP device description URL, when known;
	// SSDP discovery is then skipped.
	UPnPURL string
	// Protocols lists the protocols to try, in order, among "natpmp",
	// "pcp" and "upnp" (default: all three, in that order).
	Protocols []string
	// OnChange, when set, is called with the new external address when it
	// changes, and with the zero AddrPort while the mapping is lost (it is
	// then asked for again, with backoff). It runs on the mapping's
	// goroutine, must not block for long, and must not call Close.
	OnChange func(netip.AddrPort)
}

// RouterPort is a public port the router forwards to a local port, kept
// (renewed at half its lifetime, asked for again if lost) until Close.
type RouterPort struct {
	m *portmap.Mapping
}

// OpenRouterPort asks the router to forward a public port to local port
// opts.Port, trying NAT-PMP, PCP and UPnP-IGD in turn; each protocol that
// does not answer within 5 s is skipped, so ctx should allow for that.
// The error wraps ErrNoGateway, ErrRouterRefused or ErrNoPortMapping.
func OpenRouterPort(ctx context.Context, opts RouterPortOptions) (*RouterPort, error) {
	if opts.Port <= 0 || opts.Port > 65535 || opts.ExternalPort < 0 || opts.ExternalPort > 65535 {
		return nil, fmt.Errorf("pipes: router port: port %d / external %d out of range", opts.Port, opts.ExternalPort)
	}
	m, err := portmap.Open(ctx, portmap.Config{
		InternalPort: uint16(opts.Port), Protocol: opts.Protocol, ExternalPort: uint16(opts.ExternalPort),
		Gateway: opts.Gateway, UPnPURL: opts.UPnPURL, Protocols: opts.Protocols, OnChange: opts.OnChange,
	})
	if err != nil {
		return nil, fmt.Errorf("pipes: router port %d: %w", opts.Port, err)
	}
	return &RouterPort{m: m}, nil
}

// External returns the router's public address and port that forward to
// the local port, or the zero AddrPort while the mapping is lost.
func (p *RouterPort) External() netip.AddrPort { return p.m.External() }

// Protocol returns the protocol that granted the mapping ("natpmp",
// "pcp" or "upnp"), or "" while it is lost.
func (p *RouterPort) Protocol() string { return p.m.Protocol() }

// Close stops renewing the mapping and deletes it at the router, waiting
// at most until ctx ends for the router's answer.
func (p *RouterPort) Close(ctx context.Context) error { return p.m.Close(ctx) }
