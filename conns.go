package pipes

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/pipesnet/pipes/internal/conns"
	"github.com/pipesnet/pipes/internal/ids"
)

// Addr is the address of one end of a data connection: a node of the
// network and, on the listening side, the service. Network() is "pipes".
type Addr struct {
	Node    NodeID
	Service string
}

// Network returns "pipes".
func (a Addr) Network() string { return "pipes" }

// String returns the node id, and "/service" if there is one.
func (a Addr) String() string {
	if a.Service == "" {
		return a.Node.String()
	}
	return a.Node.String() + "/" + a.Service
}

func connAddr(node ids.Node, service string) net.Addr {
	return Addr{Node: NodeID(node), Service: service}
}

func (n *Node) connsOrNil() *conns.Manager { return n.running().Conns() }

// Allowed limits who may connect to a service: the nodes listed, and the
// nodes of the identities listed. Empty, every member of the network may.
type Allowed struct {
	Nodes      []NodeID
	Identities []IdentityID
}

// Listen accepts data connections to service (1 to 255 bytes) from any
// node of the network. See ListenAllowed.
func (n *Node) Listen(service string) (net.Listener, error) {
	return n.ListenAllowed(service, Allowed{})
}

// ReservedServicePrefix begins the names of the data connection services
// of the platform itself (the file service's "pipes/files"): Listen
// refuses them.
const ReservedServicePrefix = "pipes/"

// ListenAllowed accepts data connections to service from the nodes a
// allows; a name beginning with ReservedServicePrefix is refused; others get ErrRefused when they dial, before any data flows.
// A connection's RemoteAddr is the dialing node (an Addr); Accept returns
// connections until the listener is closed or the node shuts down (then
// net.ErrClosed). One listener per service and node: ErrExists otherwise.
// The node must be started (ErrNotActive).
func (n *Node) ListenAllowed(service string, a Allowed) (net.Listener, error) {
	cm := n.connsOrNil()
	if cm == nil {
		return nil, ErrNotActive
	}
	if strings.HasPrefix(service, ReservedServicePrefix) {
		return nil, fmt.Errorf("pipes: listen on service %q: names beginning %q are the platform's", service, ReservedServicePrefix)
	}
	var allow conns.Allow
	if len(a.Nodes) > 0 || len(a.Identities) > 0 {
		nodes, idents := slices.Clone(a.Nodes), slices.Clone(a.Identities)
		allow = func(node ids.Node, identity [32]byte) bool {
			return slices.Contains(nodes, NodeID(node)) || identity != ([32]byte{}) && slices.Contains(idents, IdentityID(identity))
		}
	}
	l, err := cm.Listen(service, allow)
	if err != nil {
		return nil, mapErr(err, fmt.Sprintf("listen on service %q", service))
	}
	return l, nil
}

// Dial opens a data connection to service on node to. It is a QUIC stream
// of their connection when the two nodes are direct peers; otherwise it
// goes through other nodes of the network, end-to-end encrypted and
// authenticated (TLS 1.3 between the two node keys), so the nodes between
// see only ciphertext. The net.Conn supports deadlines and CloseWrite
// (half-close: the other side reads EOF and can still write back); its
// addresses are Addr values naming the two nodes.
//
// It fails fast: ErrNotConnected if the node cannot be reached now,
// ErrRefused (wrapped with the reason) if nothing listens on service there
// or the listener does not allow this node, or ctx's error. Reads and
// writes of a connection whose path fails (the other node, or a relay,
// went away) return an error matching ErrConnectionLost; dial again to use
// the path the mesh finds next.
func (n *Node) Dial(ctx context.Context, to NodeID, service string) (net.Conn, error) {
	cm := n.connsOrNil()
	if cm == nil {
		return nil, ErrNotActive
	}
	c, err := cm.Dial(ctx, ids.Node(to), service)
	switch {
	case err == nil:
		return c, nil
	case ctx.Err() != nil && errors.Is(err, ctx.Err()):
		return nil, err
	}
	return nil, mapErr(err, fmt.Sprintf("%s on node %s", service, to.String()[:8]))
}

// Path describes how the node reaches another now.
type Path struct {
	Direct bool   // the other node is a direct peer
	Via    NodeID // the first hop: the node itself when Direct, else the relay
	// Of the connection to the first hop:
	RTT           time.Duration // smoothed round-trip time
	BytesSent     uint64        // bytes sent on it (QUIC, all traffic)
	BytesReceived uint64        // bytes received on it
	Remote        string        // the first hop's UDP address as seen from here
}

// PathTo reports how the node reaches node id now: directly or through
// which peer, with the round-trip time and byte counts of that first hop.
// ErrNotConnected if it cannot be reached.
func (n *Node) PathTo(ctx context.Context, id NodeID) (Path, error) {
	m := n.meshOrNil()
	if m == nil {
		return Path{}, ErrNotActive
	}
	p, err := m.Path(ctx, ids.Node(id))
	if err != nil {
		return Path{}, mapErr(err, "node "+id.String()[:8])
	}
	return Path{Direct: p.Direct, Via: NodeID(p.Via), RTT: p.RTT, BytesSent: p.BytesSent, BytesReceived: p.BytesReceived, Remote: p.Remote}, nil
}

// Ping measures the round trip to node id along the path routed messages
// take (through relays if it is not a peer), waiting at most until ctx
// ends.
func (n *Node) Ping(ctx context.Context, id NodeID) (time.Duration, error) {
	m := n.meshOrNil()
	if m == nil {
		return 0, ErrNotActive
	}
	rtt, err := m.Ping(ctx, ids.Node(id))
	switch {
	case err == nil:
		return rtt, nil
	case sentinelOf(err) == nil && ctx.Err() != nil:
		return 0, ctx.Err()
	}
	return 0, mapErr(err, "node "+id.String()[:8])
}
