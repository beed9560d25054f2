package mesh

import (
	"context"
	"net"
	"net/netip"
	"time"

	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/kinds"
	"github.com/pipesnet/pipes/internal/transport"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

// A peer's observed address (what its packets' source looks like here)
// is told in the handshake, and again whenever it changes: when the
// peer's NAT gives it a new public address or port, QUIC follows the
// connection to it, and the peer must learn its new address to offer it
// for punching. The notice is a routed message of kind kinds.Observed
// with ttl 1 (never relayed): "ip:port".

// observedEvery is how often the loop looks for peers whose address
// changed.
const observedEvery = time.Second

// remoteAddrPort is a remote UDP address, IPv4 in its plain form also on
// a dual-stack socket (invalid if it is not UDP).
func remoteAddrPort(a net.Addr) netip.AddrPort {
	if ua, ok := a.(*net.UDPAddr); ok {
		return transport.Unmap(ua.AddrPort())
	}
	return netip.AddrPort{}
}

// tellObserved sends each peer whose address changed since it was last
// told its new one; it runs on the loop.
func (m *Mesh) tellObserved(now time.Time) {
	if now.Sub(m.observedAt) < observedEvery {
		return
	}
	m.observedAt = now
	for _, p := range m.peers {
		ra := remoteAddrPort(p.conn.RemoteAddr())
		if !ra.IsValid() || ra == p.told {
			continue
		}
		p.told = ra
		p.send(&pb.Frame{Body: &pb.Frame_Routed{Routed: &pb.Routed{
			Dst: p.id[:], Src: m.self[:], Ttl: 1, Kind: kinds.Observed, Payload: []byte(ra.String())}}})
	}
}

// handleObserved takes a peer's notice of this node's address; it runs on
// the loop and reports whether the message was one.
func (m *Mesh) handleObserved(from *peer, src ids.Node, kind uint32, payload []byte) bool {
	if kind != kinds.Observed {
		return false
	}
	if from == nil || from.id != src { // only a peer's word about what it sees
		return true
	}
	ap, err := netip.ParseAddrPort(string(payload))
	if err != nil || !ap.Addr().IsValid() || ap.Port() == 0 {
		return true
	}
	ap = transport.Unmap(ap)
	if ap == from.conn.Observed {
		return true
	}
	m.log.Debug("observed address changed", "peer", src.Short(), "addr", ap)
	from.conn.Observed = ap // read only on the loop
	m.stale = true
	m.checkPaths(src)
	return true
}

// After the node's NAT moved it to another public address, connections
// to peers behind NATs that filter are dead (their NAT drops packets from
// the new address), but QUIC notices only after its idle timeout (up to
// 15 s) and sends into them meanwhile. So when a peer reports a new
// address, the node pings its other peers and closes the connections that
// do not answer within checkPathsWait: their traffic moves to a relay at
// once, and the next relayed data connection punches again. At most once
// per checkPathsEvery.
const (
	checkPathsWait  = 2 * time.Second
	checkPathsEvery = 5 * time.Second
)

// checkPaths pings every peer but except and closes the connections that
// do not answer; it runs on the loop.
func (m *Mesh) checkPaths(except ids.Node) {
	now := time.Now()
	if now.Sub(m.pathsChecked) < checkPathsEvery {
		return
	}
	m.pathsChecked = now
	for id := range m.peers {
		if id != except {
			m.checkPeer(now, id, "no answer after an address change")
		}
	}
}

// checkPeer pings peer id and closes its connection if it does not
// answer within checkPathsWait (at most once per checkPathsEvery per
// peer); it runs on the loop.
func (m *Mesh) checkPeer(now time.Time, id ids.Node, why string) {
	p := m.peers[id]
	if p == nil || now.Sub(p.checked) < checkPathsEvery {
		return
	}
	p.checked = now
	conn := p.conn
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		ctx, cancel := context.WithTimeout(m.ctx, checkPathsWait)
		defer cancel()
		if _, err := m.Ping(ctx, id); err != nil && m.ctx.Err() == nil && ctx.Err() != nil {
			m.log.Debug("closing a silent connection", "peer", id.Short(), "why", why)
			conn.Close(transport.CodeNormal, why)
		}
	}()
}
