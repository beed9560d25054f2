package pipes

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/pipesnet/pipes/internal/netaddr"
	"github.com/pipesnet/pipes/internal/portmap"
)

// PortMapping is the state of a running node's port mapping (see
// WithPortMapping).
type PortMapping struct {
	// Enabled reports whether the node uses port mapping in this run.
	Enabled bool
	// Protocol is the protocol of the mapping: "natpmp", "pcp" or "upnp";
	// empty while the node has no mapping.
	Protocol string
	// External is the router's external address and port that forward to
	// the node's socket; invalid while the node has no mapping.
	External netip.AddrPort
	// Err is why the node has no mapping (the last attempt's error: no
	// gateway, no protocol answered, or the router refused); nil while it
	// has one, before the first attempt ends, and while a mapping that was
	// lost is being re-established (Protocol is then empty).
	Err error
}

// PortMapping returns the state of the node's port mapping at its router
// (the zero PortMapping when the node is not running).
func (n *Node) PortMapping() PortMapping {
	n.mu.Lock()
	pm := n.mu.pm
	n.mu.Unlock()
	return pm.state()
}

// Port mapping retries: after a failed attempt to get a mapping, the next
// attempt waits portMapRetryMin, doubling up to portMapRetryMax. (A
// mapping that is lost later is re-established by the portmap package, with
// its own backoff up to portmap.DefaultRetryMax.)
const (
	portMapRetryMin = time.Minute
	portMapRetryMax = 8 * time.Minute
	// portMapDeleteTimeout bounds the deletion of the mapping at shutdown.
	portMapDeleteTimeout = 2 * time.Second
)

// portMapper keeps a node's port mapping during one run: it is the
// node.PortMapper of the run. A nil or disabled portMapper has no mapping.
type portMapper struct {
	on   func(bound netip.AddrPort) bool // whether to map the port of bound
	desc string                          // of the mapping, at the router
	log  *slog.Logger

	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	enabled bool
	m       *portmap.Mapping
	err     error
}

// portMappingOn decides whether a node listening on bound maps a port.
func (n *Node) portMappingOn(c nodeConfig, bound netip.AddrPort) bool {
	if c.PortMapping != nil {
		return *c.PortMapping
	}
	if n.p.opts.testMode {
		return false
	}
	a := bound.Addr().Unmap()
	return a.IsUnspecified() || (a.Is4() && !a.IsLoopback())
}

// newPortMapper makes the port mapper of one run of n, configured by c.
func newPortMapper(n *Node, c nodeConfig, log *slog.Logger) *portMapper {
	return &portMapper{on: func(bound netip.AddrPort) bool { return n.portMappingOn(c, bound) },
		desc: "pipes " + n.id.String()[:8], log: log.With("component", "portmap")}
}

// Start starts the goroutine that opens the mapping of the node's socket
// bound, if the node's configuration turns port mapping on there; hook,
// if set, changes the mapping's configuration (tests). changed is called
// when the mapping changes: the node's signed status lists its
// addresses, so a new mapping is announced at once, not at the next
// heartbeat. It returns at once.
func (pm *portMapper) Start(bound netip.AddrPort, hook func(*portmap.Config), changed func()) {
	if !pm.on(bound) {
		return
	}
	log := pm.log
	cfg := portmap.Config{
		InternalPort: bound.Port(),
		Description:  pm.desc,
		OnChange: func(ext netip.AddrPort) {
			if ext.IsValid() {
				log.Info("port mapping changed", "external", ext.String())
			} else {
				log.Info("port mapping lost; trying again")
			}
			changed()
		},
	}
	if hook != nil {
		hook(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	pm.mu.Lock()
	pm.enabled = true
	pm.mu.Unlock()
	pm.cancel, pm.done = cancel, make(chan struct{})
	go pm.run(ctx, cfg, log, changed)
}

func (pm *portMapper) run(ctx context.Context, cfg portmap.Config, log *slog.Logger, changed func()) {
	defer close(pm.done)
	wait := portMapRetryMin
	for failures := 0; ; failures++ {
		m, err := portmap.Open(ctx, cfg)
		pm.mu.Lock()
		pm.m, pm.err = m, err
		pm.mu.Unlock()
		if err == nil {
			// The mapping renews itself, and comes back by itself when
			// lost, until stop closes it.
			log.Info("port mapping", "protocol", m.Protocol(), "external", m.External().String())
			changed()
			return
		}
		if ctx.Err() != nil {
			return
		}
		if failures == 0 {
			log.Info("no port mapping; trying again every few minutes", "err", err)
		} else {
			log.Debug("no port mapping", "err", err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, portMapRetryMax)
	}
}

// Stop stops the attempts and deletes the mapping at the router (within
// portMapDeleteTimeout).
func (pm *portMapper) Stop() {
	if pm == nil || pm.cancel == nil {
		return
	}
	pm.cancel()
	<-pm.done
	pm.mu.Lock()
	m := pm.m
	pm.m, pm.err = nil, nil
	pm.mu.Unlock()
	if m == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), portMapDeleteTimeout)
	defer cancel()
	if err := m.Close(ctx); err != nil {
		pm.log.Info("port mapping not deleted", "err", err)
	}
}

// state reports the mapping for Node.PortMapping.
func (pm *portMapper) state() PortMapping {
	if pm == nil {
		return PortMapping{}
	}
	pm.mu.Lock()
	defer pm.mu.Unlock()
	s := PortMapping{Enabled: pm.enabled, Err: pm.err}
	if pm.m != nil {
		s.Protocol, s.External = pm.m.Protocol(), pm.m.External()
	}
	return s
}

// External returns the mapped address, invalid without a mapping.
func (pm *portMapper) External() netip.AddrPort { return pm.state().External }

// publicAddrs adds the mapped address, when the router reports a public
// one, in front of the addresses that peers observe.
func (pm *portMapper) publicAddrs(observed []netip.AddrPort) []netip.AddrPort {
	ext := pm.External()
	if !ext.IsValid() || !netaddr.IsPublic(ext.Addr()) || slices.Contains(observed, ext) {
		return observed
	}
	return append([]netip.AddrPort{ext}, observed...)
}
