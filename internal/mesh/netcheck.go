package mesh

import (
	"context"
	"crypto/rand"
	"errors"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/kinds"
	"github.com/pipesnet/pipes/internal/netaddr"
)

// NAT checks (pipes netcheck): how the node's NAT maps (from its peers'
// observations, see nat.go) and how it filters unsolicited packets. For
// filtering the node asks a peer to send a check probe to the node's
// public address from a new socket (another port than the one the node
// talks to): if it arrives, the NAT does not filter by port. Then it asks
// a node that is not its peer (one its NAT never saw) to send one: if
// that arrives too, anyone may send to the mapping.

// Filtering is how a NAT treats packets no inside host asked for.
type Filtering uint8

const (
	// FilteringUnknown: no peer could be asked.
	FilteringUnknown Filtering = iota
	// FilteringEndpointIndependent: any host may send to the node's
	// public address (or there is no NAT).
	FilteringEndpointIndependent
	// FilteringAddressDependent: hosts the node sent to may, from any
	// port; a node it never sent to was asked and its probe did not
	// arrive.
	FilteringAddressDependent
	// FilteringPortIndependent: hosts the node sent to may, from any
	// port; no node it never sent to was there to ask whether others may.
	FilteringPortIndependent
	// FilteringAddressPortDependent: only the address and port the node
	// sent to may (a home router, and most symmetric NATs).
	FilteringAddressPortDependent
)

// String names the filtering behaviour.
func (f Filtering) String() string {
	switch f {
	case FilteringEndpointIndependent:
		return "endpoint-independent"
	case FilteringAddressDependent:
		return "address-dependent"
	case FilteringPortIndependent:
		return "address-dependent or open"
	case FilteringAddressPortDependent:
		return "address-and-port-dependent"
	}
	return "unknown"
}

// Observation is one peer's view of this node's address.
type Observation struct {
	Peer     ids.Node
	PeerAddr netip.AddrPort // the peer's address, as seen here
	Observed netip.AddrPort // this node's address, as the peer sees it
}

// NATReport is what CheckNAT found.
type NATReport struct {
	Local        netip.AddrPort // the node's socket
	Public       []netip.AddrPort
	Observations []Observation
	Mapping      Mapping
	Filtering    Filtering
	// PortHelper and AddrHelper are the nodes asked for check probes
	// (zero when none could be).
	PortHelper, AddrHelper ids.Node
}

// BehindNAT reports whether some peer sees the node at an address that
// is not its socket's (for a socket on all interfaces: not its port on one
// of the machine's addresses).
func (r NATReport) BehindNAT() bool {
	for _, o := range r.Observations {
		if o.Observed == r.Local {
			continue
		}
		if r.Local.Addr().IsUnspecified() && o.Observed.Port() == r.Local.Port() && localIP(o.Observed.Addr()) {
			continue
		}
		return true
	}
	return false
}

// localIP reports whether ip is an address of one of the machine's
// interfaces.
func localIP(ip netip.Addr) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if x, ok := netip.AddrFromSlice(n.IP); ok && x.Unmap() == ip.Unmap() {
				return true
			}
		}
	}
	return false
}

// Bounds of NAT checks: each step (the request's round trip, then the
// probe's arrival) waits checkWait; at most checkTries helpers are asked
// for each test. A node serves one request per checkEvery from one node,
// and checkRate a second in all.
const (
	checkWait  = 3 * time.Second
	checkTries = 3
	checkEvery = 100 * time.Millisecond
	checkRate  = 20
)

// checks are the check requests waiting for their ack, by nonce, and what
// bounds the requests served (loop).
type checks struct {
	waiters[[16]byte]
	last   map[ids.Node]time.Time // the last request served, by requester
	budget relayBudget            // of requests served, checkRate a second
}

// CheckNAT reports the node's addresses and how its NAT maps and filters.
// It takes a few seconds: each probe that does not arrive is waited for.
// A helper that does not answer is replaced by another (up to three); when
// ctx ends, the report says what was found so far.
func (m *Mesh) CheckNAT(ctx context.Context) (NATReport, error) {
	rep := NATReport{Local: m.cfg.Transport.Addr(), Public: m.PublicAddrs(), Mapping: m.Mapping()}
	type state struct {
		obs      []Observation
		nonPeers []ids.Node
	}
	ch := make(chan state, 1)
	select {
	case m.queryCh <- func() {
		var s state
		for id, p := range m.peers {
			ra := remoteAddrPort(p.conn.RemoteAddr())
			if ra.IsValid() && p.conn.Observed.IsValid() && !p.conn.Extra {
				s.obs = append(s.obs, Observation{Peer: id, PeerAddr: ra, Observed: p.conn.Observed})
			}
		}
		for id, e := range m.pres.nodes {
			if e.info.Online && m.peers[id] == nil && id != m.self {
				s.nonPeers = append(s.nonPeers, id)
			}
		}
		ch <- s
	}:
	case <-ctx.Done():
		return rep, ctx.Err()
	case <-m.loopDone:
		return rep, ErrClosed
	}
	s := <-ch
	rep.Observations = s.obs
	// Port test through a peer, those with a public address first.
	helpers := slices.Clone(s.obs)
	slices.SortStableFunc(helpers, func(a, b Observation) int {
		return boolRank(netaddr.IsPublic(a.PeerAddr.Addr())) - boolRank(netaddr.IsPublic(b.PeerAddr.Addr()))
	})
	var target netip.AddrPort
	for _, h := range helpers[:min(len(helpers), checkTries)] {
		got, err := m.checkProbe(ctx, h.Peer, 'p', h.Observed)
		if err != nil {
			if ctx.Err() != nil {
				return rep, nil // what was found so far
			}
			continue // another helper
		}
		rep.PortHelper, target = h.Peer, h.Observed
		rep.Filtering = FilteringAddressPortDependent
		if got {
			rep.Filtering = FilteringPortIndependent
		}
		break
	}
	if rep.Filtering != FilteringPortIndependent {
		return rep, nil
	}
	for _, id := range s.nonPeers[:min(len(s.nonPeers), checkTries)] {
		got, err := m.checkProbe(ctx, id, 'a', target)
		if err != nil {
			if ctx.Err() != nil {
				return rep, nil
			}
			continue
		}
		rep.AddrHelper = id
		rep.Filtering = FilteringAddressDependent
		if got {
			rep.Filtering = FilteringEndpointIndependent
		}
		break
	}
	return rep, nil
}

// boolRank sorts true first.
func boolRank(b bool) int {
	if b {
		return 0
	}
	return 1
}

// errNoAck: the node asked for a probe did not say it sent one.
var errNoAck = errors.New("mesh: no answer to the check request")

// checkProbe asks node id to send a check probe to addr and reports
// whether it arrived; an error means the helper did not answer or ctx
// ended.
func (m *Mesh) checkProbe(ctx context.Context, id ids.Node, mode byte, addr netip.AddrPort) (bool, error) {
	var nonce [16]byte
	rand.Read(nonce[:])
	acked, stop := m.checks.add(nonce)
	defer stop()
	arrived, stopWait := m.cfg.Transport.ExpectCheck(nonce)
	defer stopWait()
	payload := append(append([]byte{mode}, nonce[:]...), addr.String()...)
	if err := m.Send(ctx, id, kinds.Check, payload); err != nil {
		return false, err
	}
	select {
	case <-acked:
	case <-time.After(checkWait):
		return false, errNoAck
	case <-ctx.Done():
		return false, ctx.Err()
	case <-m.loopDone:
		return false, ErrClosed
	}
	select {
	case <-arrived:
		return true, nil
	case <-time.After(checkWait):
		return false, nil
	case <-ctx.Done():
		return false, ctx.Err()
	case <-m.loopDone:
		return false, ErrClosed
	}
}

// handleCheck sends a check probe for another node, or completes a
// request of this one; it runs on the loop and reports whether the
// message was a check message.
func (m *Mesh) handleCheck(now time.Time, src ids.Node, kind uint32, payload []byte) bool {
	switch kind {
	case kinds.CheckAck:
		if len(payload) == 16 {
			m.checks.done([16]byte(payload))
		}
		return true
	case kinds.Check:
	default:
		return false
	}
	fresh, nonce, addr, ok := parseCheck(payload)
	if !ok {
		return true
	}
	// A member could use this to make nodes send to any address: one
	// probe set (3 small packets) per checkEvery per requester and
	// checkRate a second in all, and from a new socket only toward the
	// address the requester's packets come from.
	if now.Sub(m.checks.last[src]) < checkEvery || !m.checks.budget.take(now, checkRate, 1) {
		return true
	}
	if fresh && (m.peers[src] == nil || remoteAddrPort(m.peers[src].conn.RemoteAddr()).Addr() != addr.Addr().Unmap()) {
		return true
	}
	if m.checks.last == nil || len(m.checks.last) > 1024 {
		m.checks.last = map[ids.Node]time.Time{}
	}
	m.checks.last[src] = now
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		ctx, cancel := context.WithTimeout(m.ctx, checkWait)
		defer cancel()
		if err := m.cfg.Transport.SendCheck(ctx, addr, nonce, fresh); err != nil {
			m.log.Debug("check probe not sent", "to", addr, "err", err)
			return
		}
		m.Send(ctx, src, kinds.CheckAck, nonce[:]) // best effort
	}()
	return true
}

// parseCheck reads a kinds.Check payload: whether the probe goes from a new
// socket, its nonce and where it goes.
func parseCheck(p []byte) (fresh bool, nonce [16]byte, addr netip.AddrPort, ok bool) {
	if len(p) < 18 || (p[0] != 'p' && p[0] != 'a') {
		return false, nonce, addr, false
	}
	addr, err := netip.ParseAddrPort(string(p[17:]))
	if err != nil || !addr.Addr().IsValid() || addr.Port() == 0 {
		return false, nonce, addr, false
	}
	return p[0] == 'p', [16]byte(p[1:17]), addr, true
}
