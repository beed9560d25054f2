package pipes

import (
	"context"
	"fmt"
	"net/netip"
)

// NATReport describes the network in front of a node: its addresses, how
// its NAT maps and filters, and its port mapping at the router. See
// Node.CheckNAT and docs/nat.md.
type NATReport struct {
	// Local is the address of the node's socket.
	Local netip.AddrPort
	// Public are the node's public addresses (see Node.PublicAddrs).
	Public []netip.AddrPort
	// BehindNAT reports whether peers see the node at another address
	// than its socket's.
	BehindNAT bool
	// Observations are the peers' views of the node's address.
	Observations []NATObservation
	// Mapping is how the NAT maps the node's packets:
	// "endpoint-independent" (one public port per socket, or no NAT:
	// punching works), "endpoint-dependent" (a new public port per
	// destination, a symmetric NAT) or "unknown" (fewer than two peers at
	// different addresses to compare).
	Mapping string
	// Filtering is how the NAT treats packets nobody inside asked for:
	// "endpoint-independent" (anyone may send to the public address),
	// "address-dependent" (hosts the node sent to, from any port),
	// "address-dependent or open" (no node it never talked to could be
	// asked), "address-and-port-dependent" (only the address and port the
	// node sent to: a home router) or "unknown" (no peer).
	Filtering string
	// PortHelper and AddrHelper are the nodes that sent check probes:
	// a peer, from a new socket, and a node that is not a peer (zero
	// when there was none).
	PortHelper, AddrHelper NodeID
	// PortMapping is the node's port mapping at its router.
	PortMapping PortMapping
}

// NATObservation is one peer's view of the node's address.
type NATObservation struct {
	Peer     NodeID
	PeerAddr netip.AddrPort // the peer's address, as the node sees it
	Observed netip.AddrPort // the node's address, as the peer sees it
}

// CheckNAT finds out how the node's NAT maps and filters: the mapping
// from what its peers observe, the filtering by asking a peer and a node
// that is not a peer to send it unsolicited probes. It takes up to a few
// seconds (a probe that does not arrive is waited for) and needs a
// running, connected node for more than the local facts.
func (n *Node) CheckNAT(ctx context.Context) (NATReport, error) {
	m := n.meshOrNil()
	if m == nil {
		return NATReport{}, ErrNotActive
	}
	r, err := m.CheckNAT(ctx)
	if err != nil {
		return NATReport{}, fmt.Errorf("pipes: check NAT: %w", err)
	}
	rep := NATReport{
		Local: r.Local, Public: n.PublicAddrs(), BehindNAT: r.BehindNAT(),
		Mapping: r.Mapping.String(), Filtering: r.Filtering.String(),
		PortMapping: n.PortMapping(),
	}
	rep.PortHelper, rep.AddrHelper = NodeID(r.PortHelper), NodeID(r.AddrHelper)
	for _, o := range r.Observations {
		rep.Observations = append(rep.Observations, NATObservation{Peer: NodeID(o.Peer), PeerAddr: o.PeerAddr, Observed: o.Observed})
	}
	return rep, nil
}
