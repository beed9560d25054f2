package pipes

import (
	"github.com/pipesnet/pipes/internal/mesh"
	"github.com/pipesnet/pipes/internal/mesh/plumtree"
)

// NodeStats are a node's network counters, for diagnostics and metrics.
// Counters (uint64) count since the node started; the others are the
// state now. Node.Stats returns them; a node that is not started has zero
// stats.
type NodeStats struct {
	// Peers is the number of direct peers now.
	Peers int
	// OnlineNodes is the number of nodes of the network known to be
	// online now, the local node excluded.
	OnlineNodes int
	// Conns is the number of verified QUIC connections open now.
	Conns int64
	// HandshakesRefused counts peers refused during the membership
	// handshake (for example nodes of another network).
	HandshakesRefused uint64
	// BadMessages counts frames from peers with a wrong id, a bad
	// signature or a bad form; they are dropped.
	BadMessages uint64
	// FramesDropped counts frames dropped because a peer's send queue was
	// full.
	FramesDropped uint64
	// EventsDropped counts connection and node events that listeners did
	// not get because the event queue was full.
	EventsDropped uint64
	// DialsFailed counts outgoing connection attempts that failed.
	DialsFailed uint64
	// RefusedInbound counts incoming connections refused because the
	// node had as many peers as it accepts.
	RefusedInbound uint64
	// Routed counts routed messages this node forwarded for other nodes.
	Routed uint64
	// NoRoute counts routed messages dropped for want of a route.
	NoRoute uint64
	// HardPunches counts hole punches toward a node behind a hard NAT
	// for which this node opened extra sockets.
	HardPunches uint64
	// RelayLimited counts routed messages and datagrams for other nodes
	// dropped because a peer went over its relay budget.
	RelayLimited uint64
	// BytesSent counts QUIC bytes sent to peers.
	BytesSent uint64
	// BytesReceived counts QUIC bytes received from peers.
	BytesReceived uint64
	// Datagrams are the counters of realtime datagrams.
	Datagrams DatagramStats
	// Broadcast are the counters of broadcast delivery (the gossip tree
	// that carries broadcast packets and announcements).
	Broadcast BroadcastStats
}

// DatagramStats are a node's realtime datagram counters. A datagram is
// dropped for one reason, so Dropped is the sum of the reasons.
type DatagramStats struct {
	// Sent counts datagrams of this node queued for their first hop.
	Sent uint64
	// Received counts datagrams addressed to this node.
	Received uint64
	// Forwarded counts datagrams relayed for other nodes.
	Forwarded uint64
	// Dropped counts all datagrams dropped, for the reasons below.
	Dropped uint64
	// NoRoute counts datagrams to relay with no route, or whose
	// connection closed before they were sent.
	NoRoute uint64
	// TooLarge counts datagrams too large for the next hop (a relay's, or
	// a path that shrank).
	TooLarge uint64
	// Malformed counts datagrams that were short, of an unknown version or
	// had no hops left.
	Malformed uint64
	// Expired counts datagrams whose hop limit ran out at this node, a
	// relay.
	Expired uint64
	// QueueFull counts datagrams dropped because the next hop's datagram
	// queue was full.
	QueueFull uint64
}

// BroadcastStats are a node's counters of broadcast delivery: broadcast
// messages are pushed whole along a tree of peers and announced by id to
// the other peers, which ask for what the tree did not bring.
type BroadcastStats struct {
	// Delivered counts messages delivered, received or originated here.
	Delivered uint64
	// Originated counts messages this node broadcast.
	Originated uint64
	// Duplicates counts messages received again.
	Duplicates uint64
	// EagerSent counts messages pushed whole to peers.
	EagerSent uint64
	// EagerBytes counts the bytes of those messages.
	EagerBytes uint64
	// LazySent counts announcements (message ids) sent to peers.
	LazySent uint64
	// GraftsSent counts requests for an announced message that did not
	// arrive, each of which adds the link to the tree.
	GraftsSent uint64
	// PrunesSent counts requests to a peer to stop pushing whole
	// messages, which takes the link out of the tree.
	PrunesSent uint64
	// Dropped counts announcements, ids or trees dropped to keep memory
	// bounded.
	Dropped uint64
	// Peers is the number of peers the tree spans now.
	Peers int
	// Origins is the number of broadcasting nodes with a tree now.
	Origins int
	// LazyLinks is the number of (origin, peer) pairs that get
	// announcements only, now.
	LazyLinks int
	// Cached is the number of messages kept now to answer requests.
	Cached int
	// Missed is the number of messages announced and not yet received,
	// now.
	Missed int
}

// Stats returns the node's network counters (zero when not started).
func (n *Node) Stats() NodeStats {
	if m := n.meshOrNil(); m != nil {
		return nodeStats(m.Stats())
	}
	return NodeStats{}
}

// nodeStats converts the mesh's counters.
func nodeStats(s mesh.Stats) NodeStats {
	return NodeStats{
		Peers: s.Peers, OnlineNodes: s.OnlineNodes, Conns: s.Conns,
		HandshakesRefused: s.HandshakesRefused, BadMessages: s.BadMessages,
		FramesDropped: s.FramesDropped, EventsDropped: s.EventsDropped,
		DialsFailed: s.DialsFailed, RefusedInbound: s.RefusedInbound,
		NoRoute: s.NoRoute, HardPunches: s.HardPunches,
		Routed: s.Routed, RelayLimited: s.RelayLimited, BytesSent: s.BytesSent, BytesReceived: s.BytesReceived,
		Datagrams: DatagramStats(s.Datagrams),
		Broadcast: broadcastStats(s.Tree),
	}
}

func broadcastStats(s plumtree.Stats) BroadcastStats {
	return BroadcastStats{
		Delivered: s.Delivered, Originated: s.Originated, Duplicates: s.Duplicates,
		EagerSent: s.EagerSent, EagerBytes: s.EagerBytes, LazySent: s.LazySent,
		GraftsSent: s.GraftsSent, PrunesSent: s.PrunesSent, Dropped: s.Dropped,
		Peers: s.Peers, Origins: s.Origins, LazyLinks: s.LazyLinks,
		Cached: s.Cached, Missed: s.Missed,
	}
}
