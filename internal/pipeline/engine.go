// Package pipeline implements live pipelines: definitions that reach every
// node, packets signed in batches by their sender and verified by every
// receiver, broadcast through the mesh or sealed end to end and routed to
// one node, replay protection, and delivery to subscribers with bounded,
// counted buffers.
//
// The engine does no networking itself: it is given a Host (the node's
// mesh) to broadcast and route through, and the mesh hands it what arrives
// (Validate on the peers' readers, Deliver and DeliverRouted on the mesh
// loop, which must not block).
//
// Message kinds (numbers in package kinds) reach their handlers through
// the node's dispatcher (package dispatch, Config.Dispatcher): one handler
// group, with its worker, per part (pipelines, notes, realtime keys,
// sealed envelopes, files), so that one part's slow work does not stall
// the others. The files part is a service (package service) that
// registers its kinds itself; the node adds it (Services) to the node's
// services. An engine given no dispatcher (one used alone, in tests) runs
// a dispatcher and a service set of its own.
//
// The engine is split into parts, each owning its state, lock and
// goroutines, reached through a small interface of what it needs from the
// engine (its env):
//
//   - the definitions registry, on the engine itself (Engine.mu;
//     registry.go, definitions.go): the pipelines known, waiters of
//     pipelines not defined yet, removals under way and definitions
//     queued; goroutines: one sender per pipeline that has sent (it
//     batches Puts), one worker per handler group, the definitions
//     goroutine (a synced write, kept off the mesh loop), one per removed
//     pipeline (deletes its records), and the notification queue for
//     callbacks;
//   - live delivery (live, live.go; live.mu, and one feed lock per
//     pipeline): packets of pipelines not defined yet (bounded), each
//     pipeline's replay windows and subscriptions, the delivered and
//     dropped counts; no goroutine: it runs on the goroutines that hand
//     it packets (mesh loop, pipelines group's worker, definitions
//     goroutine, realtime worker) and on the one that ends a
//     subscription when its context ends;
//   - notes (notesPart, notes.go, tombs.go; notesPart.mu): stored
//     pipeline keys, tombstones, proofs waiting for their pipeline and
//     every pipeline's secret holders; no goroutine;
//   - realtime (realtime.go; realtime.mu): datagram sessions, datagrams
//     waiting for their key, realtime pipelines by id prefix; the
//     datagram worker;
//   - persistence (persist, persist.go, writer.go): each persistent
//     pipeline's log state (its queues have their own leaf locks); a
//     writer and a batch sender per persistent pipeline, and the Follow
//     readers;
//   - sync (syncer, sync.go, syncdata.go): the sync state, owned by the
//     sync loop goroutine, and the sync servers;
//   - files (files.go, filefetch.go, fileserve.go; files.mu): a service
//     with its chunk servers and fetcher.
//
// Lock order: Engine.mu before a part's lock, never the other way. A
// part's lock is a leaf: a part calls its env, the mesh and the store
// only without it, and the engine calls a part under its own lock only
// for the part's state methods (a decision that spans a pipeline and,
// say, its tombstone; live.add as a pipeline becomes known). A feed's
// lock, under which live delivery hands packets to subscribers' sinks, is
// taken under no other lock, neither Engine.mu nor live.mu: the registry
// ends a pipeline's subscriptions (live.drop, live.close) without its own
// lock, and a sink may call the engine's read API. The Config's callbacks
// run on the notification queue, under no lock. Close stops every part's
// goroutines and ends every subscription.
package pipeline

import (
	"context"
	"crypto/hpke"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/pipesnet/pipes/internal/blob"
	"github.com/pipesnet/pipes/internal/dispatch"
	"github.com/pipesnet/pipes/internal/identity"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/notify"
	"github.com/pipesnet/pipes/internal/service"
	"github.com/pipesnet/pipes/internal/store"
	"github.com/pipesnet/pipes/internal/worker"
)

// Host is what the engine needs from the node's mesh.
type Host interface {
	Broadcast(ctx context.Context, kind uint32, payload []byte) error
	Send(ctx context.Context, dst ids.Node, kind uint32, payload []byte) error
	// SendDirect sends to dst only if it is a direct peer (on their QUIC
	// connection, which is end-to-end between the two), never relayed;
	// otherwise it fails and the caller seals the message instead.
	SendDirect(ctx context.Context, dst ids.Node, kind uint32, payload []byte) error
	// HPKEKey returns the end-to-end encryption key a node announced.
	HPKEKey(node ids.Node) ([]byte, bool)
	// Peers returns the direct peers.
	Peers() []ids.Node
	// Online returns the other nodes that are online.
	Online() []ids.Node
	// SendDatagramWait sends payload to dst as one unreliable datagram,
	// waiting while the first hop's datagram queue is full
	// (mesh.SendDatagramWait).
	SendDatagramWait(ctx context.Context, dst ids.Node, payload []byte) error
}

// Config configures an Engine.
type Config struct {
	Network ids.Network
	Key     *identity.KeyPair // node key: signs batches
	Cert    *identity.Cert    // node certificate: travels with batches
	HPKE    hpke.PrivateKey   // opens sealed messages
	Host    Host
	Logger  *slog.Logger
	// OnPipeline is told of each pipeline that becomes known, on the
	// engine's notification goroutine.
	OnPipeline func(*Def)
	// SubscriberBuffer is how many packets may wait for one subscriber
	// (default 16384). Beyond it packets are dropped for that subscriber
	// only, and counted.
	SubscriberBuffer int
	// OutQueue is how many packets Put may queue per pipeline before it
	// blocks (default 4096).
	OutQueue int
	// DB stores definitions and the history of persistent pipelines; nil
	// keeps definitions in memory and makes persistent pipelines
	// ErrNotImplemented.
	DB *store.DB
	// StoreKey is the root of the at-rest encryption keys (see
	// docs/security.md).
	StoreKey [32]byte
	// Blobs keeps the content of file packets; nil: PutFile and reading
	// files give ErrNoFiles.
	Blobs *blob.Store
	// Files moves the content of file packets between nodes: the node's
	// file service, on the same blob store, started after the engine's
	// services. Nil: file packets are put and read, but the content of
	// those received is not fetched (an engine used alone: tests).
	Files FileTransfer
	// OnRemoved is told, on the notification goroutine, when an ephemeral
	// pipeline is shut down and removed.
	OnRemoved func(*Def)
	// OnSync is told, on the notification goroutine, when a persistent
	// pipeline starts (false) or finishes (true) synchronizing.
	OnSync func(id ids.Pipeline, synchronized bool)
	// ReadOnly makes an engine that only reads what is stored: it loads
	// the stored definitions, keys and histories and starts none of the
	// goroutines that receive, synchronise or fetch (the node reads its
	// store while not started), and does not store again the definitions
	// it loads. Its owner must not Put, Create, Subscribe, Follow or
	// SetSecret on it, nor hand it what the mesh receives.
	ReadOnly bool
	// Certs remembers the certificates already verified, shared with the
	// node's mesh; nil: the engine keeps its own.
	Certs *identity.CertCache
	// Dispatcher is the node's dispatcher: the engine registers its kinds
	// there, and the node hands it what the mesh receives, adds the
	// engine's Services to its own and closes dispatcher and services
	// between the engine's Stop and Close. Nil: the engine makes a
	// dispatcher and a service set of its own, starts its services with
	// a host of its own (no streams, no presence events) and closes them
	// itself (an engine used alone: tests).
	Dispatcher *dispatch.Dispatcher

	// testWriterGate, if set, is called by a persistent pipeline's writer
	// before it takes what waits for it (tests hold a writer with it).
	testWriterGate func(pipe ids.Pipeline)
}

// Errors.
var (
	ErrClosed         = errors.New("pipeline: engine closed")
	ErrUnknown        = errors.New("pipeline: unknown pipeline")
	ErrNotImplemented = errors.New("pipeline: not implemented in this version")
	ErrNoKey          = errors.New("pipeline: the destination has not announced its encryption key")
	ErrRemoved        = errors.New("pipeline: the pipeline was shut down")
	ErrNotEphemeral   = errors.New("pipeline: only an ephemeral pipeline can be shut down")
)

// Stats count what happened to packets.
type Stats struct {
	Sent      uint64 // packets put
	Received  uint64 // packet copies received in broadcast batches, duplicates included
	Delivered uint64 // packets delivered to subscribers or listeners
	Dropped   uint64 // packets dropped because a subscriber's buffer was full
	Rejected  uint64 // packets or batches refused: forged, tampered, replayed, oversized, unknown pipeline
}

// Engine runs the pipelines of one node.
type Engine struct {
	cfg    Config
	self   ids.Node
	log    *slog.Logger
	clock  hlcClock
	certs  *identity.CertCache
	peers  peerSet // the direct peers told of our pipelines (peers.go)
	sealer *sealer
	notify *notify.Queue[func()]
	disp   *dispatch.Dispatcher
	svcs   *service.Set // nil when the node owns the dispatcher and the services
	defs   chan func()  // work of the definitions goroutine (definitions.go)
	syncer *syncer
	logs   *persist   // persistence: logs, writers, Follow (persist.go, writer.go)
	notes  *notesPart // secrets and tombstones (notes.go, tombs.go)
	rt     *realtime  // realtime sessions and datagrams (realtime.go)
	files  *files     // file transfer, a service (files.go)
	live   *live      // live delivery: pending packets, replay windows, subscriptions (live.go)

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	stats struct{ sent, delivered, dropped, rejected atomic.Uint64 }

	closeOnce sync.Once

	// mu is the definitions registry's lock (registry.go, definitions.go).
	mu struct {
		sync.Mutex
		pipes   map[ids.Pipeline]*pipe
		waiters map[ids.Pipeline][]chan struct{}

		cleaning map[ids.Pipeline]chan struct{} // removed pipelines whose stored state is being deleted
		defining map[ids.Pipeline]int           // received definitions queued for the definitions goroutine
		closed   bool
	}
}

// routedMsg is a routed message, as tests hand them over.
type routedMsg struct {
	src     ids.Node
	kind    uint32
	payload []byte
}

// maxPending bounds packets kept for pipelines whose definition has not
// arrived yet.
const maxPending = 4096

// New starts an engine.
func New(cfg Config) (*Engine, error) {
	if cfg.Key == nil || cfg.Cert == nil || cfg.HPKE == nil || cfg.Host == nil {
		return nil, errors.New("pipeline: Key, Cert, HPKE and Host are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.SubscriberBuffer <= 0 {
		cfg.SubscriberBuffer = 16384
	}
	if cfg.OutQueue <= 0 {
		cfg.OutQueue = 4096
	}
	if cfg.Certs == nil {
		cfg.Certs = &identity.CertCache{}
	}
	e := &Engine{cfg: cfg, self: ids.Node(cfg.Cert.NodeID()), log: cfg.Logger, disp: cfg.Dispatcher,
		defs: make(chan func(), defsQueue), certs: cfg.Certs}
	if e.disp == nil {
		e.disp = dispatch.New(cfg.Logger)
		e.svcs = service.NewSet(e.disp)
	}
	e.sealer = newSealer(e.self, cfg.HPKE)
	e.notify = notify.New(1<<16, func(f func()) { f() })
	e.mu.pipes = map[ids.Pipeline]*pipe{}
	e.mu.waiters = map[ids.Pipeline][]chan struct{}{}
	e.mu.cleaning = map[ids.Pipeline]chan struct{}{}
	e.mu.defining = map[ids.Pipeline]int{}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	e.syncer = newSyncer(e)
	e.logs = newPersist(e)
	e.notes = newNotesPart(e)
	e.rt = newRealtime(e)
	e.files = newFiles(e)
	e.live = newLive(e)
	e.loadDefs()
	if cfg.ReadOnly {
		return e, nil
	}
	err := e.register()
	if err == nil && e.svcs != nil {
		for _, svc := range e.Services() {
			err = errors.Join(err, e.svcs.Add(svc))
		}
	}
	if err != nil {
		e.Close()
		return nil, fmt.Errorf("pipeline: %w", err)
	}
	e.rt.in = worker.New(rtQueue, 1, e.rt.openDatagram)
	e.syncer.serve = worker.New(wantQueue, serveWorkers, e.syncer.serveOne)
	e.wg.Add(2)
	go e.defsWorker()
	go e.syncLoop()
	if e.svcs != nil {
		if err := e.svcs.Start(e.ctx, func(string) service.Host { return e.host() }); err != nil {
			e.Close()
			return nil, fmt.Errorf("pipeline: %w", err)
		}
	}
	return e, nil
}

// Services returns the engine's parts that are services of the node (the
// files part, when the engine keeps files), for the node to add to its
// services when it owns the dispatcher.
func (e *Engine) Services() []service.Service {
	if e.cfg.Blobs == nil || e.cfg.ReadOnly {
		return nil
	}
	return []service.Service{e.files}
}

// spawn runs f on a goroutine of the engine, unless the engine is closed
// (Close waits for every goroutine it started). It reports whether f runs.
func (e *Engine) spawn(f func()) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.mu.closed {
		return false
	}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		f()
	}()
	return true
}

// spawnPipe runs f on a goroutine of pipeline p, unless the engine is
// closed or p removed. It reports whether f runs.
func (e *Engine) spawnPipe(p *pipe, f func()) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.mu.closed || p.removed {
		return false
	}
	e.wg.Add(1)
	p.wg.Add(1)
	go func() {
		defer e.wg.Done()
		defer p.wg.Done()
		f()
	}()
	return true
}

// pipeErr is the error of an operation on p that ended because p's
// goroutines stopped.
func (e *Engine) pipeErr() error {
	if e.ctx.Err() != nil {
		return ErrClosed
	}
	return ErrRemoved
}

// Stop is the first phase of closing: the engine refuses new work and its
// context ends, so that its handlers and services stop waiting. The owner
// of the dispatcher closes its services and the dispatcher after Stop
// (no handler runs after that) and then calls Close.
func (e *Engine) Stop() {
	e.mu.Lock()
	e.mu.closed = true
	e.mu.Unlock()
	e.cancel()
}

// Close stops the engine's goroutines and ends every subscription. For
// an engine whose dispatcher is the node's, the node calls Stop and
// closes its services and its dispatcher first. Closing again does
// nothing.
func (e *Engine) Close() {
	e.closeOnce.Do(e.close)
}

func (e *Engine) close() {
	e.Stop()
	if e.svcs != nil {
		if err := e.svcs.Close(); err != nil {
			e.log.Warn("closing the engine's services", "err", err)
		}
		e.disp.Close()
	}
	if e.rt.in != nil {
		e.rt.in.Close()
		e.syncer.serve.Close()
	}
	e.wg.Wait()
	e.live.close()
	e.notify.Close()
}

// Stats returns the engine's counters.
func (e *Engine) Stats() Stats {
	return Stats{Sent: e.stats.sent.Load(), Delivered: e.stats.delivered.Load(),
		Dropped: e.stats.dropped.Load() + e.notify.Dropped(), Rejected: e.stats.rejected.Load()}
}
