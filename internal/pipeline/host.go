package pipeline

import (
	"context"

	"github.com/quic-go/quic-go"

	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/service"
	"github.com/pipesnet/pipes/internal/store"
)

// partHost is the service.Host the engine gives its parts (the files
// service): the engine's Host (the node's mesh) and keys. Streams and
// presence events are the node's to give: a Host that has them
// (OpenStream, Presence) passes them on; otherwise they are
// ErrUnavailable and no events.
type partHost struct{ e *Engine }

func (e *Engine) host() service.Host { return partHost{e} }

// servicesTable is the store table of the services' namespaces: 'v' |
// local node id | service name | 0 | key.
const servicesTable = store.TServices

func (h partHost) Self() ids.Node { return h.e.self }

func (h partHost) Keys() service.Keys {
	c := h.e.cfg
	return service.Keys{Node: c.Key, Cert: c.Cert, StoreKey: c.StoreKey}
}

func (h partHost) Send(ctx context.Context, dst ids.Node, kind uint32, payload []byte) error {
	return h.e.cfg.Host.Send(ctx, dst, kind, payload)
}

func (h partHost) SendDirect(ctx context.Context, dst ids.Node, kind uint32, payload []byte) error {
	return h.e.cfg.Host.SendDirect(ctx, dst, kind, payload)
}

func (h partHost) Broadcast(ctx context.Context, kind uint32, payload []byte) error {
	return h.e.cfg.Host.Broadcast(ctx, kind, payload)
}

func (h partHost) Peers() []ids.Node  { return h.e.cfg.Host.Peers() }
func (h partHost) Online() []ids.Node { return h.e.cfg.Host.Online() }

func (h partHost) NodeKey(node ids.Node) ([]byte, bool) { return h.e.cfg.Host.HPKEKey(node) }

func (h partHost) OpenStream(ctx context.Context, peer ids.Node) (*quic.Stream, error) {
	if s, ok := h.e.cfg.Host.(interface {
		OpenStream(context.Context, [32]byte) (*quic.Stream, error)
	}); ok {
		return s.OpenStream(ctx, peer)
	}
	return nil, service.ErrUnavailable
}

// Store is the namespace of the engine's parts ("pipeline").
func (h partHost) Store() service.Namespace {
	prefix := append(append([]byte{servicesTable}, h.e.self[:]...), "pipeline\x00"...)
	return service.StoreNamespace(h.e.cfg.DB, prefix)
}

func (h partHost) Presence(f func(service.PresenceEvent)) (stop func()) {
	if p, ok := h.e.cfg.Host.(interface {
		Presence(func(service.PresenceEvent)) func()
	}); ok {
		return p.Presence(f)
	}
	return func() {}
}
