// Package service is the seam through which a part of the node plugs in:
// a Service registers the message kinds it handles with the node's
// dispatcher, is started with a Host (what it may use of the node) and
// closed with the node.
//
// A service's life: Register (before anything arrives: it makes its
// handler groups and registers its kinds, numbers from package kinds),
// then Start with the node's context and Host, then Close, once, after the
// node's context ended. Handlers may run from the moment Register returns
// (the host drops nothing for a registered kind), so they must cope with
// a service not started yet, as with one being closed.
package service

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/quic-go/quic-go"

	"github.com/pipesnet/pipes/internal/blob"
	"github.com/pipesnet/pipes/internal/dispatch"
	"github.com/pipesnet/pipes/internal/identity"
	"github.com/pipesnet/pipes/internal/ids"
)

// ErrUnavailable is returned by a Host for what it does not offer (a host
// without data streams, or without a store).
var ErrUnavailable = errors.New("service: not offered by this host")

// Service is a part of the node that handles message kinds of its own.
type Service interface {
	// Name names the service in logs and errors.
	Name() string
	// Register makes the service's handler groups and registers its kinds.
	Register(r Registrar) error
	// Start starts the service's goroutines, which stop when ctx ends or
	// Close is called.
	Start(ctx context.Context, h Host) error
	// Close stops the service's goroutines and waits for them.
	Close() error
}

// Registrar is where a service registers its kinds and stream protocols:
// the node's dispatcher.
type Registrar interface {
	// Group makes a handler group (see dispatch.Dispatcher.Group); its
	// Handle registers a kind.
	Group(name string, cfg dispatch.GroupConfig) (*dispatch.Group, error)
	// HandleStream registers the handler of the streams of one protocol
	// (kinds.Stream*) that direct peers open (see
	// dispatch.Dispatcher.HandleStream).
	HandleStream(proto uint16, h dispatch.StreamHandler) error
}

// Keys are the node's own keys.
type Keys struct {
	Node     *identity.KeyPair // signs what the node sends
	Cert     *identity.Cert    // the node's certificate
	StoreKey [32]byte          // root of the at-rest encryption keys (docs/security.md)
}

// PresenceEvent says that a node came online or went offline.
type PresenceEvent struct {
	Node   ids.Node
	Online bool
}

// Namespace is a service's part of the node's store: keys are relative to
// the service's prefix.
type Namespace interface {
	Get(key []byte) ([]byte, error)
	Set(key, value []byte) error
	Delete(key []byte) error
	// Scan calls fn for each key with the prefix, in key order.
	Scan(prefix []byte, fn func(key, value []byte) error) error
}

// Host is what the node offers a service.
type Host interface {
	// Self is this node's id.
	Self() ids.Node
	// Keys are this node's keys.
	Keys() Keys
	// Send routes a message of kind to dst, through relays if need be.
	Send(ctx context.Context, dst ids.Node, kind uint32, payload []byte) error
	// SendDirect sends to dst only if it is a direct peer (on their QUIC
	// connection, end to end), never relayed.
	SendDirect(ctx context.Context, dst ids.Node, kind uint32, payload []byte) error
	// Broadcast sends a message of kind to every node of the network.
	Broadcast(ctx context.Context, kind uint32, payload []byte) error
	// Peers returns the direct peers; Online the other nodes online.
	Peers() []ids.Node
	Online() []ids.Node
	// NodeKey returns the end-to-end encryption key a node announced.
	NodeKey(node ids.Node) ([]byte, bool)
	// OpenStream opens a QUIC stream of protocol proto (kinds.Stream*) to
	// a direct peer: the peer's handler of proto gets it. It fails if peer
	// is not a direct peer now.
	OpenStream(ctx context.Context, peer ids.Node, proto uint16) (*quic.Stream, error)
	// Route returns the next hop toward dst and whether dst is that hop
	// (a direct peer).
	Route(ctx context.Context, dst ids.Node) (hop ids.Node, direct bool, err error)
	// Punch tries to make dst a direct peer (hole punching through NATs).
	Punch(ctx context.Context, dst ids.Node) error
	// Member reports whether node is a member the network knows (its
	// signed presence was seen) and the id of its identity.
	Member(node ids.Node) (identity [32]byte, ok bool)
	// Store is the service's namespace of the node's store
	// (ErrUnavailable on each call when the node keeps no store).
	Store() Namespace
	// Presence calls f, on a goroutine of the host, for each node that
	// comes online or goes offline, until stop is called. f must not
	// block.
	Presence(f func(PresenceEvent)) (stop func())
	// Dial opens a data connection (package conns) to the listener of
	// service on node: a QUIC stream of their connection between direct
	// peers, else through relays with TLS end to end.
	Dial(ctx context.Context, node ids.Node, service string) (net.Conn, error)
	// Listen accepts the data connections to service on this node. A
	// service's own names begin with "pipes/", which users cannot listen
	// on (the root package refuses them).
	Listen(service string) (net.Listener, error)
	// Blobs is the node's blob store (ErrUnavailable without one).
	Blobs() (*blob.Store, error)
}

// Set wires services to one dispatcher and runs them: Add registers a
// service's kinds, Start starts the services in the order added, Close
// closes them in the reverse order.
type Set struct {
	r Registrar

	mu      sync.Mutex
	added   []Service
	started []Service
}

// NewSet returns an empty set whose services register with r.
func NewSet(r Registrar) *Set { return &Set{r: r} }

// Add registers s's kinds. A kind that another service (or the host)
// registered already fails with dispatch.ErrDuplicate; the node must not
// start then.
func (s *Set) Add(svc Service) error {
	if err := svc.Register(s.r); err != nil {
		return fmt.Errorf("service %s: %w", svc.Name(), err)
	}
	s.mu.Lock()
	s.added = append(s.added, svc)
	s.mu.Unlock()
	return nil
}

// HostFor returns the Host of the service named name (its store
// namespace is its own).
type HostFor func(name string) Host

// Start starts every service added and not started yet, each with its
// host. If one fails, those started are closed and the error returned.
func (s *Set) Start(ctx context.Context, hostFor HostFor) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, svc := range s.added[len(s.started):] {
		if err := svc.Start(ctx, hostFor(svc.Name())); err != nil {
			s.closeLocked()
			return fmt.Errorf("service %s: %w", svc.Name(), err)
		}
		s.started = append(s.started, svc)
	}
	return nil
}

// Close closes the started services, the last started first, and returns
// their errors joined.
func (s *Set) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closeLocked()
}

func (s *Set) closeLocked() error {
	var errs []error
	for i := len(s.started) - 1; i >= 0; i-- {
		if err := s.started[i].Close(); err != nil {
			errs = append(errs, fmt.Errorf("service %s: %w", s.started[i].Name(), err))
		}
	}
	s.added = s.added[len(s.started):]
	s.started = nil
	return errors.Join(errs...)
}
