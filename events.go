package pipes

import (
	"slices"

	"github.com/pipesnet/pipes/internal/mesh"
	"github.com/pipesnet/pipes/internal/store"
)

// handleEvent runs on the mesh's dispatcher goroutine: it records nodes in
// the known-nodes table and calls the listeners, with no lock held.
func (n *Node) handleEvent(e mesh.Event) {
	n.mu.Lock()
	ls := slices.Clone(n.mu.listeners)
	n.mu.Unlock()
	switch e.Kind {
	case mesh.EventConnection:
		for _, l := range ls {
			l.HandleConnectionUpdate(e.Connected, n)
		}
	case mesh.EventNode:
		ref := refFromInfo(e.Node)
		if e.Node.Name != "" {
			rec := knownRecord{Identity: e.Node.IdentityID, Name: e.Node.Name, Location: e.Node.Location,
				Version: e.Node.Version, LastSeen: e.Node.LastSeen.UTC()}
			if err := putJSON(n.p.db, store.Key(tKnown, n.id[:], e.Node.ID[:]), rec); err != nil {
				n.logger().Warn("cannot record known node", "err", err)
			}
		}
		n.tellPeer(e.Node)
		for _, l := range ls {
			l.HandleNodeStatusUpdate(ref, n)
		}
	}
}

// tellPeer sends the node's broadcast pipelines to a node that just became
// a direct peer, once per connection, so that late joiners learn of
// pipelines created before they came.
func (n *Node) tellPeer(info mesh.NodeInfo) {
	n.mu.Lock()
	e := n.mu.engine
	sent := n.mu.defsSent[info.ID]
	if e != nil {
		n.mu.defsSent[info.ID] = info.Peer
	}
	n.mu.Unlock()
	if e != nil && info.Peer && !sent {
		e.PeerConnected(info.ID)
	}
	if e != nil && !info.Peer && sent {
		e.PeerGone(info.ID)
	}
}
