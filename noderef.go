package pipes

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/pipesnet/pipes/internal/mesh"
	"github.com/pipesnet/pipes/internal/store"
)

// NodeRef describes another node of the network, as of the moment it was
// returned: it is a snapshot and does not change.
type NodeRef interface {
	ID() NodeID
	Name() string     // the node's identity name
	Location() string // the node's location
	Version() string  // Pipes version the node runs
	IsConnected() bool
	IsPeer() bool
}

// nodeRef is the snapshot behind NodeRef.
type nodeRef struct {
	id        NodeID
	identity  IdentityID
	name      string
	location  string
	version   string
	online    bool
	peer      bool
	lastSeen  time.Time
	addrs     []string
	neighbors []NodeID
}

func (r *nodeRef) ID() NodeID        { return r.id }
func (r *nodeRef) Name() string      { return r.name }
func (r *nodeRef) Location() string  { return r.location }
func (r *nodeRef) Version() string   { return r.version }
func (r *nodeRef) IsConnected() bool { return r.online }
func (r *nodeRef) IsPeer() bool      { return r.peer }

// String is "name@location (id prefix)".
func (r *nodeRef) String() string {
	return fmt.Sprintf("%s@%s (%s)", r.name, r.location, r.id.String()[:8])
}

// NodeDetails is extra information about a node, for diagnostics: obtain
// it with Details(ref).
type NodeDetails struct {
	IdentityID IdentityID
	Addrs      []string  // addresses the node announces
	Neighbours []NodeID  // the node's direct peers, as it last announced
	LastSeen   time.Time // when the local node last heard a fresh status
}

// Details returns what a NodeRef returned by this package knows beyond the
// NodeRef methods.
func Details(r NodeRef) NodeDetails {
	nr, ok := r.(*nodeRef)
	if !ok {
		return NodeDetails{}
	}
	return NodeDetails{IdentityID: nr.identity, Addrs: slices.Clone(nr.addrs),
		Neighbours: slices.Clone(nr.neighbors), LastSeen: nr.lastSeen}
}

func refFromInfo(i mesh.NodeInfo) *nodeRef {
	r := &nodeRef{id: NodeID(i.ID), identity: i.IdentityID, name: i.Name, location: i.Location,
		version: i.Version, online: i.Online, peer: i.Peer, lastSeen: i.LastSeen, addrs: i.Addrs}
	for _, nb := range i.Neighbours {
		r.neighbors = append(r.neighbors, NodeID(nb))
	}
	return r
}

func refs(infos []mesh.NodeInfo) []NodeRef {
	out := make([]NodeRef, 0, len(infos))
	for _, i := range infos {
		out = append(out, refFromInfo(i))
	}
	return out
}

// ConnectedPeers returns the nodes directly connected to this one.
func (n *Node) ConnectedPeers() []NodeRef {
	if m := n.meshOrNil(); m != nil {
		return refs(m.Peers())
	}
	return []NodeRef{}
}

// ConnectedNodes returns every node online in the network now, direct peer
// or not; the local node is not included.
func (n *Node) ConnectedNodes() []NodeRef {
	if m := n.meshOrNil(); m != nil {
		return refs(m.Nodes())
	}
	return []NodeRef{}
}

// KnownNodes returns every node this node has ever seen in the network,
// online or not, ordered by id. The list survives restarts.
func (n *Node) KnownNodes() []NodeRef {
	byID := map[NodeID]*nodeRef{}
	prefix := store.Key(tKnown, n.id[:])
	n.p.db.Scan(prefix, func(k, v []byte) error {
		var r knownRecord
		if len(k) != 65 || json.Unmarshal(v, &r) != nil {
			return nil
		}
		id := NodeID(k[33:])
		byID[id] = &nodeRef{id: id, identity: r.Identity, name: r.Name, location: r.Location,
			version: r.Version, lastSeen: r.LastSeen}
		return nil
	})
	if m := n.meshOrNil(); m != nil {
		for _, i := range m.Nodes() {
			byID[NodeID(i.ID)] = refFromInfo(i)
		}
		for _, i := range m.Peers() {
			byID[NodeID(i.ID)] = refFromInfo(i)
		}
	}
	out := make([]NodeRef, 0, len(byID))
	for _, r := range byID {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b NodeRef) int { id1, id2 := a.ID(), b.ID(); return bytes.Compare(id1[:], id2[:]) })
	return out
}

// NodeWithID returns the known node whose id starts with the hex prefix.
// It returns ErrNotFound if none does and ErrAmbiguous if several do. The
// local node is not included.
func (n *Node) NodeWithID(prefix string) (NodeRef, error) {
	p, err := hexPrefix(prefix)
	if err != nil {
		return nil, err
	}
	var found []NodeRef
	for _, r := range n.KnownNodes() {
		if strings.HasPrefix(r.ID().String(), p) {
			found = append(found, r)
		}
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("%w: no node with id prefix %q", ErrNotFound, p)
	case 1:
		return found[0], nil
	}
	return nil, fmt.Errorf("%w: %d nodes have id prefix %q", ErrAmbiguous, len(found), p)
}
