package pipes

import (
	"bytes"
	"slices"

	"github.com/pipesnet/pipes/internal/files"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/node"
	"github.com/pipesnet/pipes/internal/portmap"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

// KillNode stops n as a crash would: no leaving status, no goodbye. Tests
// use it to check how others notice a node that vanishes.
func KillNode(n *Node) { n.stop((*node.Node).Kill) }

// SetForwardTap makes n report every routed message it relays for others
// (from its next start on): tests use it to see what a relay sees.
func SetForwardTap(n *Node, tap func(dst, src [32]byte, payload []byte)) {
	node.SetTestHooks(ids.Node(n.id), func(h *node.TestHooks) {
		h.ForwardTap = func(r *pb.Routed) { tap([32]byte(r.Dst), [32]byte(r.Src), bytes.Clone(r.Payload)) }
	})
}

// advertise is what env_test.go checks.
var advertise = node.Advertise

// SetDiskReserve changes the free space p's store keeps in reserve, so
// that tests can make the disk look full.
func SetDiskReserve(p *Platform, bytes int64) { p.db.SetMinFreeBytes(bytes) }

// SyncSources returns how many sync requests p's node sent to each node.
func SyncSources(p *Pipeline) map[NodeID]int {
	out := map[NodeID]int{}
	if e := p.n.engineOrNil(); e != nil {
		for k, v := range e.SyncSources(p.def.ID) {
			out[NodeID(k)] = v
		}
	}
	return out
}

// FileProgress reports how many chunks of file packet pk's content n has,
// of how many.
func FileProgress(n *Node, pk *Packet) (have, total int64) {
	if e := n.engineOrNil(); e != nil {
		h, t, _ := e.FileProgress(pk.p)
		return int64(h), int64(t)
	}
	return 0, 0
}

// FileComplete reports whether n has all of file packet pk's content.
func FileComplete(n *Node, pk *Packet) bool {
	have, total := FileProgress(n, pk)
	return total > 0 && have == total
}

// DisablePunching keeps n (from its next start) from punching a direct
// connection after a relayed data connection, so tests can keep
// connections relayed.
func DisablePunching(n *Node) {
	node.SetTestHooks(ids.Node(n.id), func(h *node.TestHooks) { h.NoPunch = true })
}

// SetPortMapConfig makes f change n's port mapping configuration (from its
// next start on): tests point it at a gateway of their own, such as the
// responders of internal/portmap/portmaptest on 127.0.0.1. It does not turn
// port mapping on (see WithPortMapping).
func SetPortMapConfig(n *Node, f func(*portmap.Config)) {
	node.SetTestHooks(ids.Node(n.id), func(h *node.TestHooks) { h.PortMap = f })
}

// FileService returns the file service of n's run (nil when not started).
func FileService(n *Node) *files.Service {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mu.files
}

// FilePresent returns the indexes of the chunks of file id that n has.
func FilePresent(n *Node, id FileID) []int {
	b := n.running().Blobs()
	m, err := b.Manifest(ids.Content(id))
	if err != nil {
		return nil
	}
	missing, _ := b.Missing(ids.Content(id))
	var out []int
	for i := range m.Chunks {
		if !slices.Contains(missing, i) {
			out = append(out, i)
		}
	}
	return out
}
