package pipes

import (
	"slices"

	"github.com/pipesnet/pipes/internal/mesh"
	"github.com/pipesnet/pipes/internal/store"
)

// handleEvent runs on the mesh's dispatcher goroutine, after the engine
// saw the event (internal/node): it records nodes in the known-nodes table
// and calls the listeners, with no lock held.
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
		for _, l := range ls {
			l.HandleNodeStatusUpdate(ref, n)
		}
	}
}
