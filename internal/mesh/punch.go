package mesh

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/pipesnet/pipes/internal/backoff"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/kinds"
	"github.com/pipesnet/pipes/internal/netaddr"
	"github.com/pipesnet/pipes/internal/transport"
)

// Hole punching: two nodes that reach each other only through relays
// exchange their candidate addresses (the public addresses their peers
// observe, first those two peers agree on, and the addresses they listen
// on) in routed messages; then, for a while, the node with the smaller id
// dials each of the other's candidates while the other sends small probe
// packets (not QUIC) to each of the first's. Both send from their one UDP
// socket, which opens each NAT's mapping toward the other, so the dial
// gets in: through NATs that map each destination the same way (not
// symmetric ones), one dial completes. One side dials, so the two never
// make two connections that the duplicate rule would have to choose
// between (which would break streams on the one it closes). If that has
// not worked after probeFirst, the other side dials too: when the first
// is behind a symmetric NAT (a new public port per destination), only a
// dial from it gets through, to a side whose NAT lets it in. The mesh then has a direct peer and
// its routes move traffic to it; connections on the relayed path stay
// there until they end.

const (
	punchFor       = 10 * time.Second // how long both sides dial each other's candidates
	punchEvery     = 300 * time.Millisecond
	probeFirst     = 1500 * time.Millisecond // the prober dials too after this
	maxCandidates  = 16
	maxCandidateLn = 64
)

// candidates lists this node's addresses for a punch: a line "nat=hard"
// or "nat=easy" when the node knows how its NAT maps, the public
// addresses its peers observe, then a line "listen" and the addresses it
// listens on. Readers skip lines they do not know.
func (m *Mesh) candidates() []byte {
	var b strings.Builder
	snap := m.snap.Load()
	switch snap.mapping {
	case MappingDependent:
		b.WriteString("nat=hard\n")
	case MappingIndependent:
		b.WriteString("nat=easy\n")
	}
	n := 0
	add := func(a string) {
		if n < maxCandidates && len(a) <= maxCandidateLn {
			b.WriteString(a)
			b.WriteByte('\n')
			n++
		}
	}
	for _, ap := range snap.public {
		add(ap.String())
	}
	for _, ap := range snap.observed { // one peer's word: worth a dial
		if !slices.Contains(snap.public, ap) {
			add(ap.String())
		}
	}
	b.WriteString("listen\n")
	for _, a := range m.cfg.Addrs() {
		add(a)
	}
	return []byte(b.String())
}

// offer is a peer's punch payload, read.
type offer struct {
	addrs    []string         // every valid candidate, to dial or probe
	observed []netip.AddrPort // those its peers observe (before "listen")
	mapping  Mapping          // how its NAT maps, if it knows
}

// parseOffer reads a punch payload, keeping valid addresses only.
func parseOffer(p []byte) offer {
	var o offer
	listen := false
	for _, line := range strings.Split(string(p), "\n") {
		switch line {
		case "nat=hard":
			o.mapping = MappingDependent
			continue
		case "nat=easy":
			o.mapping = MappingIndependent
			continue
		case "listen":
			listen = true
			continue
		}
		if len(o.addrs) == maxCandidates {
			break
		}
		if ap, err := netip.ParseAddrPort(line); err == nil && ap.Addr().IsValid() && ap.Port() != 0 {
			o.addrs = append(o.addrs, ap.String())
			if !listen {
				o.observed = append(o.observed, ap)
			}
		}
	}
	return o
}

// parseCandidates reads the addresses of a punch payload.
func parseCandidates(p []byte) []string { return parseOffer(p).addrs }

// Punch asks node dst, reached through relays, to punch a direct
// connection with this node, and punches toward it. It returns nil once
// dst is a direct peer, or an error when ctx ends first (the NATs between
// did not let the dials through) or dst cannot be reached.
func (m *Mesh) Punch(ctx context.Context, dst ids.Node) error {
	if m.isPeer(dst) {
		return nil
	}
	if err := m.Send(ctx, dst, kinds.Punch, m.candidates()); err != nil {
		return err
	}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if m.isPeer(dst) {
			return nil
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return fmt.Errorf("mesh: no direct connection to %s: %w", dst.Short(), ctx.Err())
		case <-m.loopDone:
			return ErrClosed
		}
	}
}

// isPeer reports whether id is a direct peer now.
func (m *Mesh) isPeer(id ids.Node) bool {
	for _, p := range m.snap.Load().peers {
		if p.ID == id {
			return true
		}
	}
	return false
}

// handlePunch answers a punch request and starts punching toward its
// sender's candidates; it runs on the loop and reports whether the
// message was a punch message.
func (m *Mesh) handlePunch(now time.Time, src ids.Node, kind uint32, payload []byte) bool {
	if kind != kinds.Punch && kind != kinds.PunchAck {
		return false
	}
	if kind == kinds.Punch {
		m.send(sendReq{dst: src, kind: kinds.PunchAck, payload: m.candidates()}) // best effort
	}
	if src == m.self {
		return true
	}
	// A node that asks to punch does not see this one as its peer: if
	// this one still sees it as a peer, that connection is likely dead
	// (the other's NAT moved it): check it, and punch once it is closed.
	var grace time.Time
	if m.peers[src] != nil {
		m.checkPeer(now, src, "the peer asks to punch: it does not see this connection")
		grace = now.Add(checkPathsWait + 500*time.Millisecond)
	}
	o := parseOffer(payload)
	if m.mayPunchHard(now, src) {
		m.hard[src] = &hardPunch{at: now.Add(hardAfter), until: now.Add(punchFor), theirs: o, grace: grace}
	}
	for _, a := range o.addrs {
		if len(m.targets) >= maxTargets && m.targets[a] == nil {
			break
		}
		t := m.targets[a]
		if t == nil {
			t = &target{Backoff: backoff.Backoff{Min: m.cfg.BackoffMin, Max: m.cfg.BackoffMax}}
			m.targets[a] = t
		}
		if t.gateway || t.self {
			continue
		}
		t.node = src
		t.grace = grace
		t.punchUntil = now.Add(punchFor)
		t.probe = bytes.Compare(m.self[:], src[:]) > 0 // the smaller id dials
		t.dialAfter = now.Add(probeFirst)
	}
	m.punchMore(now)
	return true
}

// punchMore dials the targets being punched that are not dialing now and
// whose node is not a peer yet, at most every punchEvery each, whatever
// the degree target and backoff say; and it starts and ends hard-NAT
// punches.
func (m *Mesh) punchMore(now time.Time) {
	for id, at := range m.hardLast {
		if now.Sub(at) >= hardCooldown {
			delete(m.hardLast, id)
		}
	}
	for id, h := range m.hard {
		if (m.peers[id] != nil && !now.Before(h.grace)) || now.After(h.until) {
			if h.cancel != nil {
				h.cancel()
			}
			delete(m.hard, id)
			continue
		}
		if h.cancel == nil && !now.Before(h.at) && m.peers[id] == nil {
			m.punchHard(id, h)
		}
	}
	for addr, t := range m.targets {
		if t.punchUntil.IsZero() {
			continue
		}
		if now.After(t.punchUntil) || (m.peers[t.node] != nil && !now.Before(t.grace)) {
			t.punchUntil = time.Time{}
			continue
		}
		if m.peers[t.node] != nil {
			continue // its connection is being checked: no dial beside it
		}
		if m.dialing[addr] || now.Sub(t.punched) < punchEvery {
			continue
		}
		t.punched = now
		if t.probe && now.Before(t.dialAfter) {
			if ap, err := netip.ParseAddrPort(addr); err == nil {
				m.cfg.Transport.SendProbe(ap)
			}
			continue
		}
		m.dial(addr)
	}
}

// Hard-NAT punching (see transport.PunchHard): when the ordinary punch
// has not made the two nodes peers after hardAfter, a node whose NAT may
// map each destination to a new port (it is not known to map
// independently) opens hardSockets sockets toward the other's observed
// addresses, unless the other is known to map that way too; a node whose
// NAT may keep one port per socket probes hardProbes random ports of the
// other's observed IPs every hardRound, unless the other is known to map
// independently (then the ordinary punch is the one that works). When
// neither knows, both do both: the wrong pairing only costs packets.
//
// Since any member can ask for a punch, it is bounded: only toward an
// online node (its status was verified), at most one per node each
// hardCooldown, hardPending waiting or running, hardOpeners opening
// sockets and hardProbers probing at once on the node; and only toward
// public addresses that are not the node's own, at most hardTargets of
// them on hardIPs IPs.
const (
	hardAfter   = 2 * time.Second
	hardSockets = 256
	hardProbes  = 2048
	hardRound   = time.Second
	hardProbeIn = 300 * time.Millisecond // lets the other side's sockets open first

	hardCooldown = time.Minute
	hardPending  = 8
	hardOpeners  = 1
	hardProbers  = 2
	hardTargets  = 4
	hardIPs      = 2
)

// mayPunchHard reports whether a punch request from src may lead to a
// hard-NAT punch; it runs on the loop.
func (m *Mesh) mayPunchHard(now time.Time, src ids.Node) bool {
	if h := m.hard[src]; h != nil && h.cancel != nil {
		return false // one runs
	}
	if e, ok := m.pres.nodes[src]; !ok || !e.info.Online {
		return false
	}
	if now.Sub(m.hardLast[src]) < hardCooldown {
		return false
	}
	return m.hard[src] != nil || len(m.hard) < hardPending
}

// hardTargetsOf picks from a node's observed addresses those a hard punch
// may send to: public ones, not this node's own.
func (m *Mesh) hardTargetsOf(observed []netip.AddrPort) []netip.AddrPort {
	own := map[netip.Addr]bool{m.cfg.Transport.Addr().Addr().Unmap(): true}
	snap := m.snap.Load()
	for _, ap := range append(slices.Clone(snap.observed), snap.public...) {
		own[ap.Addr().Unmap()] = true
	}
	for _, a := range m.cfg.Addrs() {
		if ap, err := netip.ParseAddrPort(a); err == nil {
			own[ap.Addr().Unmap()] = true
		}
	}
	var out []netip.AddrPort
	ips := map[netip.Addr]bool{}
	for _, ap := range observed {
		ip := ap.Addr().Unmap()
		if !netaddr.IsPublic(ip) || own[ip] || slices.Contains(out, ap) {
			continue
		}
		if !ips[ip] && len(ips) == hardIPs {
			continue
		}
		ips[ip] = true
		out = append(out, netip.AddrPortFrom(ip, ap.Port()))
		if len(out) == hardTargets {
			break
		}
	}
	return out
}

// hardPunch is a hard-NAT punch toward one node.
type hardPunch struct {
	at, until time.Time
	grace     time.Time // while the old connection is checked (see handlePunch)
	theirs    offer
	cancel    context.CancelFunc // set once started
}

// punchHard starts the hard-NAT punch toward id; it runs on the loop.
func (m *Mesh) punchHard(id ids.Node, h *hardPunch) {
	ctx, cancel := context.WithDeadline(m.ctx, h.until)
	h.cancel = cancel
	m.hardLast[id] = time.Now()
	mine, theirs := m.snap.Load().mapping, h.theirs.mapping
	to := m.hardTargetsOf(h.theirs.observed)
	if len(to) == 0 {
		return
	}
	if mine != MappingIndependent && theirs != MappingDependent && m.hardOpen.Load() < hardOpeners {
		m.stats.hardPunches.Add(1)
		m.hardOpen.Add(1)
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			defer m.hardOpen.Add(-1)
			c, err := m.cfg.Transport.PunchHard(ctx, hardSockets, to)
			if err != nil {
				m.log.Debug("hard punch found no port", "node", id.Short(), "err", err)
				return
			}
			select {
			case m.dialCh <- dialResult{addr: "hard punch " + c.RemoteAddr().String(), conn: c}:
			case <-m.ctx.Done():
				c.Close(transport.CodeNormal, "shutting down")
			}
		}()
	}
	if mine != MappingDependent && theirs != MappingIndependent && m.hardProbe.Load() < hardProbers {
		ips := map[netip.Addr]bool{}
		for _, a := range to {
			ips[a.Addr()] = true
		}
		m.hardProbe.Add(1)
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			defer m.hardProbe.Add(-1)
			wait := hardProbeIn
			for {
				select {
				case <-time.After(wait):
				case <-ctx.Done():
					return
				}
				for ip := range ips {
					if m.cfg.Transport.ProbePorts(ctx, ip, hardProbes) != nil {
						return
					}
				}
				wait = hardRound
			}
		}()
	}
}
