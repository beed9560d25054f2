package pipeline

import (
	"sync"

	"github.com/pipesnet/pipes/internal/ids"
)

// peerSet holds the nodes that are direct peers and were told of this
// node's pipelines in this run of the engine: a node is in it from when it
// became a peer until it stops being one.
type peerSet struct {
	mu   sync.Mutex
	told map[ids.Node]bool
}

// NodeChanged tells the engine that the status of node id changed, as the
// mesh's presence events report it, in order: peer is whether the node is
// a direct peer now. A node that becomes a direct peer is told, once per
// connection, of this node's broadcast pipelines, so that late joiners
// learn of pipelines created before they came, and is offered what the
// persistent pipelines hold (PeerConnected); a node that stops being a
// peer is forgotten by the sync (PeerGone). A closed engine ignores it.
func (e *Engine) NodeChanged(id ids.Node, peer bool) {
	if e.ctx.Err() != nil {
		return
	}
	e.peers.mu.Lock()
	was := e.peers.told[id]
	switch {
	case peer && !was:
		if e.peers.told == nil {
			e.peers.told = map[ids.Node]bool{}
		}
		e.peers.told[id] = true
	case !peer && was:
		delete(e.peers.told, id)
	}
	e.peers.mu.Unlock()
	switch {
	case peer && !was:
		e.PeerConnected(id)
	case !peer && was:
		e.PeerGone(id)
	}
}
