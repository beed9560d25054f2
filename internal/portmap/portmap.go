// Package portmap asks the local router (the NAT gateway) to forward a public
// port to a local UDP (or TCP) port, so that peers outside the NAT can reach
// this node directly.
//
// Open tries three protocols, in this order, and keeps the first that
// grants a mapping:
//
//  1. NAT-PMP (RFC 6886) on UDP port 5351 of the gateway: an external
//     address request, then a map request;
//  2. PCP (RFC 6887), the successor of NAT-PMP on the same port: one MAP
//     request, whose answer carries the external address and port;
//  3. UPnP-IGD: the Internet Gateway Device is found by SSDP (or at a
//     configured description URL), then its WANIPConnection:2,
//     WANIPConnection:1 or WANPPPConnection:1 service is asked for
//     GetExternalIPAddress and AddPortMapping.
//
// A protocol that does not answer within Config.Timeout is skipped; one that
// answers with a refusal is skipped too, and if no protocol grants a mapping
// Open returns an error that wraps ErrRefused (some router refused),
// ErrNoGateway (no gateway known and no UPnP device found) or ErrUnsupported
// (nothing answered).
//
// The gateway is Config.Gateway or, when unset, the default route's gateway
// read from /proc/net/route (Linux only; elsewhere only UPnP's SSDP
// discovery can find the router).
//
// A Mapping owns one goroutine, which renews the mapping at half of the
// lifetime the router granted (NAT-PMP and PCP ask for Config.Lifetime, two
// hours by default; UPnP asks for a lease of Config.UPnPLease, one hour by
// default, or an unlimited lease when the router only supports those, which
// is then still refreshed at half of Config.UPnPLease to notice router
// restarts and address changes). A renewal that reports another external
// address calls Config.OnChange with it. A renewal that fails reports the
// mapping lost (OnChange with the zero netip.AddrPort) and the goroutine then
// tries all protocols again with exponential backoff, calling OnChange again
// once a mapping is back. Close stops the goroutine and deletes the mapping
// at the router.
package portmap

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Errors returned by Open (wrapped, test with errors.Is).
var (
	// ErrNoGateway means that no gateway address was configured or found in
	// the routing table, and no UPnP gateway device was found either.
	ErrNoGateway = errors.New("portmap: no gateway")
	// ErrRefused means that a router answered but refused the mapping (for
	// example NAT-PMP result codes 2 to 4, a PCP error result, or a UPnP SOAP
	// fault such as 501 or 718).
	ErrRefused = errors.New("portmap: mapping refused by the router")
	// ErrUnsupported means that the gateway answered none of the protocols.
	ErrUnsupported = errors.New("portmap: no port mapping protocol answered")
)

// Names of the protocols, as returned by Mapping.Protocol and accepted in
// Config.Protocols.
const (
	ProtoNATPMP = "natpmp"
	ProtoPCP    = "pcp"
	ProtoUPnP   = "upnp"
)

// Defaults of Config.
const (
	DefaultLifetime   = 2 * time.Hour
	DefaultUPnPLease  = time.Hour
	DefaultTimeout    = 5 * time.Second
	DefaultServerPort = 5351
	DefaultRetryMin   = 5 * time.Second
	DefaultRetryMax   = 5 * time.Minute
)

// minRenew bounds how often a mapping is renewed, whatever lifetime the
// router grants.
const minRenew = 500 * time.Millisecond

// Config says what to map and where.
type Config struct {
	// InternalPort is the local port to map. Required.
	InternalPort uint16
	// Protocol is "udp" (the default) or "tcp".
	Protocol string
	// ExternalPort is the external port to suggest; 0 suggests InternalPort.
	// The router may assign another one.
	ExternalPort uint16
	// Gateway is the router's address; when invalid, the default route's
	// gateway is used (Linux).
	Gateway netip.Addr
	// Lifetime is the lifetime asked for NAT-PMP and PCP mappings
	// (default DefaultLifetime). The router may grant a shorter one.
	Lifetime time.Duration
	// UPnPLease is the lease asked for UPnP mappings (default
	// DefaultUPnPLease).
	UPnPLease time.Duration
	// UPnPURL, when set, is the URL of the gateway's UPnP root device
	// description; SSDP discovery is then skipped.
	UPnPURL string
	// Protocols lists the protocols to try, in order (default NAT-PMP, PCP,
	// UPnP). Unknown names are ignored.
	Protocols []string
	// ServerPort is the gateway's NAT-PMP and PCP port (default 5351;
	// tests set another one).
	ServerPort uint16
	// Timeout bounds each protocol's attempt, in Open and in each renewal
	// (default DefaultTimeout).
	Timeout time.Duration
	// RetryMin and RetryMax bound the backoff between attempts to get a lost
	// mapping back (defaults DefaultRetryMin and DefaultRetryMax).
	RetryMin, RetryMax time.Duration
	// Description is the UPnP mapping's description (default "pipes").
	Description string
	// OnChange, when set, is called from the Mapping's goroutine with the
	// new external address when it changes, and with the zero AddrPort when
	// the mapping is lost. It must not block for long and must not call
	// Close.
	OnChange func(netip.AddrPort)
}

func (c Config) withDefaults() (Config, error) {
	if c.InternalPort == 0 {
		return c, errors.New("portmap: InternalPort is required")
	}
	switch c.Protocol {
	case "":
		c.Protocol = "udp"
	case "udp", "tcp":
	default:
		return c, fmt.Errorf("portmap: unknown protocol %q", c.Protocol)
	}
	if c.ExternalPort == 0 {
		c.ExternalPort = c.InternalPort
	}
	if c.Lifetime <= 0 {
		c.Lifetime = DefaultLifetime
	}
	if c.UPnPLease <= 0 {
		c.UPnPLease = DefaultUPnPLease
	}
	if c.Protocols == nil {
		c.Protocols = []string{ProtoNATPMP, ProtoPCP, ProtoUPnP}
	}
	if c.ServerPort == 0 {
		c.ServerPort = DefaultServerPort
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.RetryMin <= 0 {
		c.RetryMin = DefaultRetryMin
	}
	if c.RetryMax < c.RetryMin {
		c.RetryMax = max(DefaultRetryMax, c.RetryMin)
	}
	if c.Description == "" {
		c.Description = "pipes"
	}
	return c, nil
}

// mapper is one protocol's mapping at one gateway.
type mapper interface {
	name() string
	// mapPort creates or renews the mapping. It returns the external
	// address and the time within which the mapping must be renewed.
	mapPort(ctx context.Context) (netip.AddrPort, time.Duration, error)
	// unmap deletes the mapping.
	unmap(ctx context.Context) error
}

// Mapping is a port mapping at the gateway, renewed by a goroutine of its
// own until Close.
type Mapping struct {
	cfg    Config
	cancel context.CancelFunc
	done   chan struct{}

	mu  sync.Mutex
	mp  mapper // nil while lost
	ext netip.AddrPort

	closeOnce sync.Once
	closeErr  error
}

// Open maps cfg.InternalPort at the gateway with the first protocol that
// grants it (see the package documentation) and starts renewing it. The
// context bounds only Open itself.
func Open(ctx context.Context, cfg Config) (*Mapping, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	mp, ext, refresh, err := establish(ctx, cfg)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.Background())
	m := &Mapping{cfg: cfg, cancel: cancel, done: make(chan struct{}), mp: mp, ext: ext}
	go m.run(rctx, refresh)
	return m, nil
}

// External returns the current external address and port, or the zero
// AddrPort while the mapping is lost.
func (m *Mapping) External() netip.AddrPort {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ext
}

// Protocol returns the protocol of the current mapping (ProtoNATPMP,
// ProtoPCP or ProtoUPnP), or "" while the mapping is lost.
func (m *Mapping) Protocol() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.mp == nil {
		return ""
	}
	return m.mp.name()
}

// Close stops the renewals and deletes the mapping at the router. The
// context bounds the deletion. Calls after the first return the first's
// result.
func (m *Mapping) Close(ctx context.Context) error {
	m.closeOnce.Do(func() {
		m.cancel()
		<-m.done
		m.mu.Lock()
		mp := m.mp
		m.mp = nil
		m.ext = netip.AddrPort{}
		m.mu.Unlock()
		if mp != nil {
			dctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
			defer cancel()
			if err := mp.unmap(dctx); err != nil {
				m.closeErr = fmt.Errorf("portmap: deleting %s mapping: %w", mp.name(), err)
			}
		}
	})
	return m.closeErr
}

// set records the current mapping and calls OnChange if the external
// address changed.
func (m *Mapping) set(mp mapper, ext netip.AddrPort) {
	m.mu.Lock()
	changed := m.ext != ext
	m.mp, m.ext = mp, ext
	m.mu.Unlock()
	if changed && m.cfg.OnChange != nil {
		m.cfg.OnChange(ext)
	}
}

func (m *Mapping) run(ctx context.Context, refresh time.Duration) {
	defer close(m.done)
	m.mu.Lock()
	mp := m.mp
	m.mu.Unlock()
	for {
		if !sleep(ctx, max(refresh/2, minRenew)) {
			return
		}
		rctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
		ext, r, err := mp.mapPort(rctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			refresh = r
			m.set(mp, ext)
			continue
		}
		m.set(nil, netip.AddrPort{})
		backoff := m.cfg.RetryMin
		for {
			if !sleep(ctx, backoff) {
				return
			}
			var ext netip.AddrPort
			mp, ext, refresh, err = establish(ctx, m.cfg)
			if ctx.Err() != nil {
				if mp != nil {
					// Lost the race with Close: delete what was just made.
					dctx, cancel := context.WithTimeout(context.Background(), m.cfg.Timeout)
					_ = mp.unmap(dctx)
					cancel()
				}
				return
			}
			if err == nil {
				m.set(mp, ext)
				break
			}
			backoff = min(2*backoff, m.cfg.RetryMax)
		}
	}
}

// sleep waits for d or ctx, reporting whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// establish tries the configured protocols in order.
func establish(ctx context.Context, cfg Config) (mapper, netip.AddrPort, time.Duration, error) {
	gw := cfg.Gateway
	if !gw.IsValid() {
		gw, _ = defaultGateway()
	}
	var errs []error
	foundDevice := gw.IsValid()
	for _, p := range cfg.Protocols {
		if !slices.Contains([]string{ProtoNATPMP, ProtoPCP, ProtoUPnP}, p) {
			continue
		}
		if p != ProtoUPnP && !gw.IsValid() {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		mp, ext, refresh, err := try(pctx, cfg, p, gw)
		cancel()
		if err == nil {
			return mp, ext, refresh, nil
		}
		if ctx.Err() != nil {
			return nil, netip.AddrPort{}, 0, ctx.Err()
		}
		if p == ProtoUPnP && !errors.Is(err, errNoDevice) {
			foundDevice = true
		}
		errs = append(errs, fmt.Errorf("%s: %w", p, err))
	}
	all := errors.Join(errs...)
	switch {
	case slices.ContainsFunc(errs, func(e error) bool { return errors.Is(e, ErrRefused) }):
		return nil, netip.AddrPort{}, 0, fmt.Errorf("%w (%w)", ErrRefused, all)
	case !foundDevice:
		return nil, netip.AddrPort{}, 0, fmt.Errorf("%w (%w)", ErrNoGateway, all)
	default:
		return nil, netip.AddrPort{}, 0, fmt.Errorf("%w (%w)", ErrUnsupported, all)
	}
}

func try(ctx context.Context, cfg Config, proto string, gw netip.Addr) (mapper, netip.AddrPort, time.Duration, error) {
	var mp mapper
	switch proto {
	case ProtoNATPMP:
		mp = newPMPMapper(cfg, gw)
	case ProtoPCP:
		var err error
		if mp, err = newPCPMapper(cfg, gw); err != nil {
			return nil, netip.AddrPort{}, 0, err
		}
	case ProtoUPnP:
		return discoverUPnP(ctx, cfg, gw)
	}
	ext, refresh, err := mp.mapPort(ctx)
	if err != nil {
		return nil, netip.AddrPort{}, 0, err
	}
	return mp, ext, refresh, nil
}
