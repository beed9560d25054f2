package node

import (
	"context"
	"maps"
	"net"
	"slices"
	"sync"

	"github.com/quic-go/quic-go"

	"github.com/pipesnet/pipes/internal/blob"
	"github.com/pipesnet/pipes/internal/dispatch"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/kinds"
	"github.com/pipesnet/pipes/internal/mesh"
	"github.com/pipesnet/pipes/internal/service"
	"github.com/pipesnet/pipes/internal/store"
)

// The node's services. The node owns the dispatcher: the mesh hands it
// every broadcast and routed message and every stream a peer opens, and it
// runs the handlers the engine and the services registered. The services
// (the engine's files part, the data connections, and the services above
// them) are started with a host of the node, each with its own store
// namespace, and closed between the engine's Stop and Close.

// deliver takes a broadcast message the mesh delivers, on the mesh loop.
func (n *Node) deliver(kind uint32, payload []byte, origin ids.Node, v any) {
	n.disp.Dispatch(dispatch.Msg{From: origin, Kind: kind, Via: kinds.Broadcast, Payload: payload, Body: v})
}

// deliverRouted takes a routed message for this node, on the mesh loop.
func (n *Node) deliverRouted(src ids.Node, kind uint32, payload []byte) {
	n.disp.Dispatch(dispatch.Msg{From: src, Kind: kind, Via: kinds.Routed, Payload: payload})
}

// svcHost is the service.Host of one service: the node's mesh (through
// the meshHost, which refuses until the mesh is set), keys and store, and
// presence events.
type svcHost struct {
	n    *Node
	name string
}

func (n *Node) hostFor(name string) service.Host { return svcHost{n: n, name: name} }

func (h svcHost) Self() ids.Node { return h.n.id }

func (h svcHost) Keys() service.Keys {
	c := h.n.cfg
	return service.Keys{Node: c.Key, Cert: c.Cert, StoreKey: c.StoreKey}
}

func (h svcHost) Send(ctx context.Context, dst ids.Node, kind uint32, p []byte) error {
	return h.n.host.Send(ctx, dst, kind, p)
}

func (h svcHost) SendDirect(ctx context.Context, dst ids.Node, kind uint32, p []byte) error {
	return h.n.host.SendDirect(ctx, dst, kind, p)
}

func (h svcHost) Broadcast(ctx context.Context, kind uint32, p []byte) error {
	return h.n.host.Broadcast(ctx, kind, p)
}

func (h svcHost) Peers() []ids.Node  { return h.n.host.Peers() }
func (h svcHost) Online() []ids.Node { return h.n.host.Online() }

func (h svcHost) NodeKey(node ids.Node) ([]byte, bool) { return h.n.host.HPKEKey(node) }

// OpenStream opens a stream to a direct peer and writes its protocol
// first, for the peer's dispatcher.
func (h svcHost) OpenStream(ctx context.Context, peer ids.Node, proto uint16) (*quic.Stream, error) {
	st, err := h.n.host.OpenStream(ctx, peer)
	if err != nil {
		return nil, err
	}
	if _, err := st.Write(dispatch.StreamHeader(proto)); err != nil {
		st.CancelRead(dispatch.StreamCode)
		st.CancelWrite(dispatch.StreamCode)
		return nil, err
	}
	return st, nil
}

func (h svcHost) Route(ctx context.Context, dst ids.Node) (ids.Node, bool, error) {
	return h.n.host.Route(ctx, dst)
}

func (h svcHost) Punch(ctx context.Context, dst ids.Node) error { return h.n.host.Punch(ctx, dst) }

func (h svcHost) Member(node ids.Node) ([32]byte, bool) {
	info, ok := h.n.host.Node(node)
	return info.IdentityID, ok
}

// Store is the service's namespace: 'v' | node id | service name | 0.
func (h svcHost) Store() service.Namespace {
	prefix := append(append([]byte{store.TServices}, h.n.id[:]...), h.name+"\x00"...)
	return service.StoreNamespace(h.n.cfg.DB, prefix)
}

func (h svcHost) Presence(f func(service.PresenceEvent)) (stop func()) { return h.n.presence.add(f) }

// Dial and Listen are the node's data connections (n.conns, a service
// started before those of Config.Services).
func (h svcHost) Dial(ctx context.Context, node ids.Node, svc string) (net.Conn, error) {
	return h.n.conns.Dial(ctx, node, svc)
}

func (h svcHost) Listen(svc string) (net.Listener, error) {
	l, err := h.n.conns.Listen(svc, nil)
	if err != nil {
		return nil, err
	}
	return l, nil
}

func (h svcHost) Blobs() (*blob.Store, error) { return h.n.blobs, nil }

// presence tells the services of nodes that come online or go offline,
// from the mesh's events, on the mesh's event goroutine. The mesh's
// events are level-triggered and may be dropped when its queue is full,
// so a service that must know the current state reads Host.Online.
type presence struct {
	mu     sync.Mutex
	next   int
	subs   map[int]func(service.PresenceEvent)
	online map[ids.Node]bool
}

func (p *presence) add(f func(service.PresenceEvent)) (stop func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.subs == nil {
		p.subs = map[int]func(service.PresenceEvent){}
	}
	id := p.next
	p.next++
	p.subs[id] = f
	return func() {
		p.mu.Lock()
		delete(p.subs, id)
		p.mu.Unlock()
	}
}

// observe takes a node's presence as the mesh reports it and tells the
// subscribers, under no lock, if it came online or went offline.
func (p *presence) observe(info mesh.NodeInfo) {
	p.mu.Lock()
	if p.online == nil {
		p.online = map[ids.Node]bool{}
	}
	was := p.online[info.ID]
	if was == info.Online {
		p.mu.Unlock()
		return
	}
	if info.Online {
		p.online[info.ID] = true
	} else {
		delete(p.online, info.ID)
	}
	subs := slices.Collect(maps.Values(p.subs))
	p.mu.Unlock()
	for _, f := range subs {
		f(service.PresenceEvent{Node: info.ID, Online: info.Online})
	}
}
