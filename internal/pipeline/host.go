package pipeline

import (
	"context"
	"net"

	"github.com/quic-go/quic-go"

	"github.com/pipesnet/pipes/internal/blob"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/service"
	"github.com/pipesnet/pipes/internal/store"
)

// partHost is the service.Host an engine used alone (no node's
// dispatcher: tests) gives its services: the engine's Host and keys.
// Streams, routes, punching, membership, presence events, data
// connections and the blob store are the node's to give: here they are
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

func (h partHost) OpenStream(context.Context, ids.Node, uint16) (*quic.Stream, error) {
	return nil, service.ErrUnavailable
}

func (h partHost) Route(context.Context, ids.Node) (ids.Node, bool, error) {
	return ids.Node{}, false, service.ErrUnavailable
}

func (h partHost) Punch(context.Context, ids.Node) error { return service.ErrUnavailable }

func (h partHost) Member(ids.Node) ([32]byte, bool) { return [32]byte{}, false }

// Store is the namespace of the engine's parts ("pipeline").
func (h partHost) Store() service.Namespace {
	prefix := append(append([]byte{servicesTable}, h.e.self[:]...), "pipeline\x00"...)
	return service.StoreNamespace(h.e.cfg.DB, prefix)
}

func (h partHost) Presence(func(service.PresenceEvent)) (stop func()) { return func() {} }

func (h partHost) Dial(context.Context, ids.Node, string) (net.Conn, error) {
	return nil, service.ErrUnavailable
}

func (h partHost) Listen(string) (net.Listener, error) { return nil, service.ErrUnavailable }

func (h partHost) Blobs() (*blob.Store, error) { return nil, service.ErrUnavailable }
