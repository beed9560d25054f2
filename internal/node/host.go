package node

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/quic-go/quic-go"

	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/mesh"
)

// meshHost lets the pipeline engine and the data connections use the
// node's mesh. They start before the mesh exists (the mesh needs their
// handlers), so until set is called the host has no peers and refuses to
// send. It is the engine's pipeline.Host, and what the services' hosts
// (services.go) reach the mesh through.
type meshHost struct{ mp atomic.Pointer[mesh.Mesh] }

// errNoMesh: the engine asked to send before the mesh was set.
var errNoMesh = fmt.Errorf("%w: the node is starting", mesh.ErrNoRoute)

func (h *meshHost) set(m *mesh.Mesh) { h.mp.Store(m) }

func (h *meshHost) Broadcast(ctx context.Context, kind uint32, p []byte) error {
	if m := h.mp.Load(); m != nil {
		return m.Broadcast(ctx, kind, p)
	}
	return errNoMesh
}

func (h *meshHost) Send(ctx context.Context, dst ids.Node, kind uint32, p []byte) error {
	if m := h.mp.Load(); m != nil {
		return m.Send(ctx, dst, kind, p)
	}
	return errNoMesh
}

func (h *meshHost) SendDirect(ctx context.Context, dst ids.Node, kind uint32, p []byte) error {
	if m := h.mp.Load(); m != nil {
		return m.SendDirect(ctx, dst, kind, p)
	}
	return errNoMesh
}

func (h *meshHost) SendDatagramWait(ctx context.Context, dst ids.Node, p []byte) error {
	if m := h.mp.Load(); m != nil {
		return m.SendDatagramWait(ctx, dst, p)
	}
	return errNoMesh
}

func (h *meshHost) Peers() []ids.Node {
	m := h.mp.Load()
	if m == nil {
		return nil
	}
	peers := m.Peers()
	out := make([]ids.Node, len(peers))
	for i, p := range peers {
		out[i] = p.ID
	}
	return out
}

func (h *meshHost) Online() []ids.Node {
	m := h.mp.Load()
	if m == nil {
		return nil
	}
	var out []ids.Node
	for _, n := range m.Nodes() {
		if n.Online {
			out = append(out, n.ID)
		}
	}
	return out
}

func (h *meshHost) HPKEKey(id ids.Node) ([]byte, bool) {
	m := h.mp.Load()
	if m == nil {
		return nil, false
	}
	info, ok := m.Node(id)
	if !ok || !info.Online || len(info.HPKEKey) == 0 {
		return nil, false
	}
	return info.HPKEKey, true
}

// What the data connections need besides.

func (h *meshHost) OpenStream(ctx context.Context, peer ids.Node) (*quic.Stream, error) {
	if m := h.mp.Load(); m != nil {
		return m.OpenStream(ctx, peer)
	}
	return nil, errNoMesh
}

func (h *meshHost) Route(ctx context.Context, dst ids.Node) (ids.Node, bool, error) {
	if m := h.mp.Load(); m != nil {
		return m.Route(ctx, dst)
	}
	return ids.Node{}, false, errNoMesh
}

func (h *meshHost) Punch(ctx context.Context, dst ids.Node) error {
	if m := h.mp.Load(); m != nil {
		return m.Punch(ctx, dst)
	}
	return errNoMesh
}

func (h *meshHost) Node(id ids.Node) (mesh.NodeInfo, bool) {
	if m := h.mp.Load(); m != nil {
		return m.Node(id)
	}
	return mesh.NodeInfo{}, false
}
