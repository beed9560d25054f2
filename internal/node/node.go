package node

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pipesnet/pipes/internal/blob"
	"github.com/pipesnet/pipes/internal/conns"
	"github.com/pipesnet/pipes/internal/dispatch"
	"github.com/pipesnet/pipes/internal/identity"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/keys"
	"github.com/pipesnet/pipes/internal/mesh"
	"github.com/pipesnet/pipes/internal/pipeline"
	"github.com/pipesnet/pipes/internal/portmap"
	"github.com/pipesnet/pipes/internal/service"
	"github.com/pipesnet/pipes/internal/store"
	"github.com/pipesnet/pipes/internal/transport"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

// Config is what assembling a node needs. Key, Cert, Network, DB,
// HPKEKeyPath, BlobDir and ListenAddrs are required; zero timings take
// the defaults documented on each.
type Config struct {
	Key         *identity.KeyPair // the node's device key
	Cert        *identity.Cert    // the node's certificate, issued by its identity
	Network     ids.Network       // the network's id
	NetworkKey  [32]byte          // from the network secret: admits to the network
	Incarnation uint64            // this run's, greater than every earlier run's
	Version     string            // the software version the node announces

	DB          *store.DB // the platform's store
	StoreKey    [32]byte  // root of the node's at-rest encryption keys
	BlobDir     string    // directory of the node's blob store (file contents)
	HPKEKeyPath string    // file of the node's end-to-end encryption key, created if missing

	// ListenAddrs are the addresses to bind the node's socket on, tried in
	// order: the first free one wins.
	ListenAddrs []string
	// OfflineAfter is the silence after which a node is offline (default
	// 20s). The QUIC idle timeout follows it, within 3s..15s, so that a
	// dead peer's connection does not outlive it.
	OfflineAfter time.Duration
	// Heartbeat is the presence re-announcement period (default: a
	// quarter of OfflineAfter when that is under 20s, else the mesh's).
	Heartbeat              time.Duration
	BackoffMin, BackoffMax time.Duration // redial delays (the mesh's defaults)
	TargetDegree           int           // peers to aim for (the mesh's default)
	RelayRate              int           // see mesh.Config.RelayRate
	Logger                 *slog.Logger

	// Gateways returns the addresses of the network's gateways.
	Gateways func() []string
	// Networks returns the bootstrap network list the node announces.
	Networks func() []*pb.NetworkInfo
	// PortMap, if set, maps the node's port at its router.
	PortMap PortMapper
	// ConnAddr makes the address of one end of a data connection.
	ConnAddr func(node ids.Node, service string) net.Addr

	// OnEvent receives the mesh's events, on its dispatcher goroutine,
	// after the engine saw them.
	OnEvent func(mesh.Event)
	// OnPipeline, OnSync and OnRemoved are the engine's (see
	// pipeline.Config).
	OnPipeline func(*pipeline.Def)
	OnSync     func(id ids.Pipeline, synchronized bool)
	OnRemoved  func(*pipeline.Def)

	// Services are the node's services besides the engine's and the data
	// connections: each registers its kinds and stream protocols with the
	// node's dispatcher, is started, after those, with a host of the node
	// before the mesh starts, and closed on shutdown before them, the last
	// first.
	Services []service.Service
	// Files is the transfer the engine fetches and serves file packets'
	// content on: the node's file service (one of Services, which start
	// after the engine's, so the engine's fetches wait for it).
	Files pipeline.FileTransfer

	// Ready, if set, is called by Start once the node is assembled and
	// before it joins the network (the mesh starts when Ready returns):
	// the owner restores there what the engine must know before the first
	// peer comes.
	Ready func(*Node)
	// EngineClosed, if set, is called on shutdown once the engine has
	// stopped, before the data connections and the mesh close (the owner
	// lets go of what it holds of the engine).
	EngineClosed func()
}

// PortMapper maps the node's port at its router (the owner's port
// mapping, with its own state and goroutine).
type PortMapper interface {
	// Start starts mapping the port of the socket bound to bound, if
	// that is to be done; it returns at once. hook, if not nil, changes
	// the mapping's configuration (tests); changed is called whenever the
	// mapped address changes.
	Start(bound netip.AddrPort, hook func(*portmap.Config), changed func())
	// External returns the mapped address (invalid without a mapping).
	External() netip.AddrPort
	// Stop stops mapping and deletes the mapping at the router, within a
	// bound of its own.
	Stop()
}

// Node is one run of a node: from Start to Close or Kill. Its parts are
// built in Start and stopped in shutdown, the only two places that know
// their order.
type Node struct {
	cfg  Config
	id   ids.Node
	log  *slog.Logger
	host *meshHost

	tr       *transport.Transport
	blobs    *blob.Store
	disp     *dispatch.Dispatcher // every message and stream that arrives (services.go)
	svcs     *service.Set         // the engine's files part, the data connections
	presence presence             // the services' presence events
	eng      *pipeline.Engine
	conns    *conns.Manager
	mesh     *mesh.Mesh

	ctx    context.Context // the services' context: ends at shutdown
	cancel context.CancelFunc

	ready   bool // Ready was called: EngineClosed will be
	mapping bool // the port mapping was started

	stopOnce sync.Once
	stopErr  error
}

// Start assembles the node and joins the network: it binds the socket,
// opens the node's encryption key and blob store, makes the dispatcher,
// starts the pipeline engine (which registers its kinds), builds the data
// connections and the mesh, starts the services (the engine's files part
// and the data connections) and then the mesh, with one certificate cache
// shared by the engine and the mesh; then the port mapping. It returns once the socket is bound; connecting continues in
// the background. ctx bounds the start-up only. The test hooks of the
// node (Hooks) are read here.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	if cfg.Key == nil || cfg.Cert == nil || cfg.DB == nil {
		return nil, fmt.Errorf("node: Key, Cert and DB are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	n := &Node{cfg: cfg, id: cfg.Cert.NodeID(), log: cfg.Logger, host: &meshHost{}}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	hooks := Hooks(n.id)
	offline := cfg.OfflineAfter
	if offline == 0 {
		offline = 20 * time.Second
	}
	idle := min(max(offline, 3*time.Second), 15*time.Second)
	heartbeat := cfg.Heartbeat
	if heartbeat == 0 && offline < 4*5*time.Second {
		heartbeat = offline / 4 // keep four announcements per offline period
	}
	var err error
	n.tr, err = listen(ctx, cfg.ListenAddrs, transport.Config{
		Key: cfg.Key, Cert: cfg.Cert, NetworkID: cfg.Network, NetworkKey: cfg.NetworkKey,
		Incarnation: cfg.Incarnation, ListenAddrs: n.advertise, Logger: cfg.Logger,
		KeepAlive: idle / 3, IdleTimeout: idle, ListenUDP: hooks.ListenUDP,
	})
	if err != nil {
		return nil, err
	}
	if err := n.assemble(hooks, heartbeat, offline); err != nil {
		n.shutdown((*mesh.Mesh).Close)
		return nil, err
	}
	if cfg.Ready != nil {
		n.ready = true
		cfg.Ready(n)
	}
	n.mesh.Start()
	if cfg.PortMap != nil {
		n.mapping = true
		cfg.PortMap.Start(n.tr.Addr(), hooks.PortMap, n.mesh.AddrsChanged)
	}
	n.log.Info("node started", "listen", n.tr.Addr().String())
	return n, nil
}

// assemble builds the parts after the transport; shutdown closes those
// that were built if it fails.
func (n *Node) assemble(hooks TestHooks, heartbeat, offline time.Duration) error {
	cfg := n.cfg
	hkey, err := pipeline.LoadOrCreateKey(cfg.HPKEKeyPath)
	if err != nil {
		return fmt.Errorf("node: encryption key: %w", err)
	}
	if n.blobs, err = openBlobs(cfg); err != nil {
		return fmt.Errorf("node: file store: %w", err)
	}
	n.disp = dispatch.New(cfg.Logger)
	n.svcs = service.NewSet(n.disp)
	certs := &identity.CertCache{} // one for the engine and the mesh
	n.eng, err = pipeline.New(pipeline.Config{Network: cfg.Network, Key: cfg.Key, Cert: cfg.Cert, HPKE: hkey,
		Host: n.host, Logger: cfg.Logger, OnPipeline: cfg.OnPipeline, DB: cfg.DB, StoreKey: cfg.StoreKey,
		OnSync: cfg.OnSync, OnRemoved: cfg.OnRemoved, Blobs: n.blobs, Files: cfg.Files, Certs: certs, Dispatcher: n.disp})
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	stls, err := transport.StreamTLS(cfg.Key.Private)
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	n.conns = conns.New(conns.Config{Self: n.id, TLS: stls, Logger: cfg.Logger, Addr: cfg.ConnAddr, NoPunch: hooks.NoPunch})
	for _, svc := range append(append(n.eng.Services(), n.conns), cfg.Services...) {
		if err := n.svcs.Add(svc); err != nil {
			return fmt.Errorf("node: %w", err)
		}
	}
	n.mesh, err = mesh.New(mesh.Config{
		Transport: n.tr, Key: cfg.Key, Cert: cfg.Cert, Incarnation: cfg.Incarnation, Version: cfg.Version,
		Gateways:        cfg.Gateways,
		Addrs:           func() []string { return n.advertise(n.tr.Addr()) },
		Networks:        cfg.Networks,
		TargetDegree:    cfg.TargetDegree,
		RelayRate:       cfg.RelayRate,
		Heartbeat:       heartbeat,
		OfflineAfter:    offline,
		BackoffMin:      cfg.BackoffMin,
		BackoffMax:      cfg.BackoffMax,
		Logger:          cfg.Logger,
		OnEvent:         n.handleEvent,
		Validate:        n.disp.Validate,
		Deliver:         n.deliver,
		DeliverRouted:   n.deliverRouted,
		DeliverDatagram: n.eng.DeliverDatagram,
		HPKEKey:         hkey.PublicKey().Bytes(),
		OnForward:       hooks.ForwardTap,
		OnStream:        n.disp.AcceptStream,
		Certs:           certs,
	})
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	n.host.set(n.mesh)
	if err := n.svcs.Start(n.ctx, n.hostFor); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	return nil
}

// handleEvent runs on the mesh's dispatcher goroutine: the engine learns
// of nodes that became or stopped being peers, then the owner gets the
// event.
func (n *Node) handleEvent(e mesh.Event) {
	if e.Kind == mesh.EventNode {
		n.eng.NodeChanged(e.Node.ID, e.Node.Peer)
		n.presence.observe(e.Node)
	}
	if n.cfg.OnEvent != nil {
		n.cfg.OnEvent(e)
	}
}

// Close leaves the network: peers are told the node is leaving, every
// part stops, and Close waits for their goroutines. Closing again does
// nothing and returns the first Close's error.
func (n *Node) Close() error { return n.shutdown((*mesh.Mesh).Close) }

// Kill stops the node as a crash would: the mesh leaves with no leaving
// status and no goodbye (tests of how others notice a node that
// vanishes). Everything else stops as in Close.
func (n *Node) Kill() error { return n.shutdown((*mesh.Mesh).Kill) }

// shutdown stops the parts that were built, with how stopping the mesh.
// The order, the one place it is written:
//
//  1. the port mapping's deletion at the router starts, and runs while
//     the rest shuts down;
//  2. the engine stops (its context ends: nothing waits on it any more);
//  3. the services, the last started first: the data connections
//     (listeners and relayed connections; the connections themselves end
//     with the mesh), then the engine's files part;
//  4. the dispatcher: its workers stop after the handler they run, and
//     streams still saying their protocol are reset; no handler runs
//     after this;
//  5. the engine closes: its senders and workers stop before the mesh
//     they send through; then the owner's EngineClosed;
//  6. the mesh, which closes the transport and its socket (the transport
//     alone if the mesh was not built);
//  7. the port mapping's deletion is waited for;
//  8. the blob store, which nothing reads any more.
func (n *Node) shutdown(how func(*mesh.Mesh) error) error {
	n.stopOnce.Do(func() {
		pmDone := make(chan struct{})
		if n.mapping {
			go func() { defer close(pmDone); n.cfg.PortMap.Stop() }()
		} else {
			close(pmDone)
		}
		if n.eng != nil {
			n.eng.Stop()
		}
		n.cancel()
		if n.svcs != nil {
			if err := n.svcs.Close(); err != nil {
				n.log.Warn("closing the services", "err", err)
			}
		}
		if n.disp != nil {
			n.disp.Close()
		}
		if n.eng != nil {
			n.eng.Close()
		}
		if n.ready && n.cfg.EngineClosed != nil {
			n.cfg.EngineClosed()
		}
		if n.mesh != nil {
			n.stopErr = how(n.mesh)
		} else {
			n.stopErr = n.tr.Close()
		}
		<-pmDone
		if n.blobs != nil {
			n.blobs.Close()
		}
		if n.mesh != nil {
			n.log.Info("node stopped")
		}
	})
	return n.stopErr
}

// ID returns the node's id.
func (n *Node) ID() ids.Node { return n.id }

// Mesh returns the node's mesh (nil for a nil Node).
func (n *Node) Mesh() *mesh.Mesh {
	if n == nil {
		return nil
	}
	return n.mesh
}

// Engine returns the node's pipeline engine (nil for a nil Node).
func (n *Node) Engine() *pipeline.Engine {
	if n == nil {
		return nil
	}
	return n.eng
}

// Conns returns the node's data connections (nil for a nil Node).
func (n *Node) Conns() *conns.Manager {
	if n == nil {
		return nil
	}
	return n.conns
}

// Transport returns the node's transport (nil for a nil Node).
func (n *Node) Transport() *transport.Transport {
	if n == nil {
		return nil
	}
	return n.tr
}

// Blobs returns the node's blob store (nil for a nil Node).
func (n *Node) Blobs() *blob.Store {
	if n == nil {
		return nil
	}
	return n.blobs
}

// openBlobs opens the node's file store under its at-rest key (derived
// from the store key with the label keys.Blobs).
func openBlobs(cfg Config) (*blob.Store, error) {
	return blob.Open(cfg.BlobDir, [32]byte(keys.Derive(cfg.StoreKey[:], nil, keys.Blobs, nil, 32)))
}
