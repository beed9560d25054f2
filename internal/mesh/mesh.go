// Package mesh keeps a node connected to its network and spreads broadcasts
// and presence through it.
//
// Peers: the mesh dials the network's gateways, learns of other nodes from
// peer lists and presence, and dials until it has TargetDegree peers. Lost
// gateways and peers are redialled with exponential backoff and jitter. When
// two nodes dial each other at once, both keep the connection dialled by the
// node with the smaller id (or the one from the newer incarnation of a
// restarted peer), so exactly one connection survives.
//
// Broadcast: a Plumtree tree (package plumtree) carries each message once per
// tree link with IHAVE/GRAFT repair on the other links; message ids are the
// SHA-256 of kind and payload and are checked on receipt.
//
// Presence: each node signs and broadcasts a status every Heartbeat and on
// change; a node not heard from for OfflineAfter, or that said it is leaving,
// is offline.
//
// Datagrams: SendDatagram sends a payload in one unreliable QUIC datagram
// (no retransmission, no head-of-line blocking) to a peer, or through the
// relays of the route routed messages take, each forwarding it as a
// datagram. The header is 34 bytes: version (1), TTL, 32-byte destination;
// datagram.go describes it. Senders and relays read a table of first hops
// that the loop publishes, so datagrams never pass through the loop.
//
// Goroutines, all owned by the Mesh and stopped by Close: the loop (owns all
// state), the accept loop, per peer a reader and a writer of the control
// stream and a reader and a writer of datagrams, one per dial in progress,
// one opener and one prober per hard-NAT punch (bounded, see punch.go),
// one per NAT check request served, one per peer whose connection is
// checked (observed.go), and the event dispatcher that runs the owner's
// callback.
package mesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/pipesnet/pipes/internal/backoff"
	"github.com/pipesnet/pipes/internal/identity"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/kinds"
	"github.com/pipesnet/pipes/internal/mesh/plumtree"
	"github.com/pipesnet/pipes/internal/notify"
	"github.com/pipesnet/pipes/internal/transport"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

// Config configures a Mesh. Zero values take the documented defaults.
type Config struct {
	Transport   *transport.Transport // listening; the mesh closes it on Close
	Key         *identity.KeyPair
	Cert        *identity.Cert
	Incarnation uint64
	Version     string
	// Gateways returns the "host:port" addresses to keep connected to.
	Gateways func() []string
	// Addrs returns the addresses this node advertises.
	Addrs func() []string
	// Networks returns the bootstrap network list this node announces.
	Networks func() []*pb.NetworkInfo

	TargetDegree int // peers to aim for (default 6)
	MaxPeers     int // inbound connections beyond this are refused (default 3×TargetDegree)
	// RelayRate bounds the bytes a second of routed messages and
	// datagrams relayed for others that one peer may send through this
	// node (default DefaultRelayRate); the rest are dropped.
	RelayRate    int
	Heartbeat    time.Duration // status re-announcement period (default 5s)
	OfflineAfter time.Duration // silence after which a node is offline (default 20s)
	BackoffMin   time.Duration // first redial delay (default 500ms)
	BackoffMax   time.Duration // redial delay cap (default 30s)
	Plumtree     plumtree.Config
	Logger       *slog.Logger
	// OnEvent receives events on the mesh's dispatcher goroutine, in order,
	// never under a lock of the mesh. It must not call Close.
	OnEvent func(Event)
	// Validate checks a broadcast payload (any kind but presence) before it
	// is delivered or forwarded. It runs on the reader goroutine of the peer
	// that sent it, so checks of different peers run in parallel; what it
	// returns is handed to Deliver. An error drops the message (counted in
	// Stats.BadMessages). Nil accepts everything.
	Validate func(kind uint32, payload []byte, origin ids.Node) (any, error)
	// Deliver receives each broadcast message of another node (any kind but
	// presence) once, on the mesh loop. It must not block.
	Deliver func(kind uint32, payload []byte, origin ids.Node, validated any)
	// DeliverRouted receives routed messages addressed to this node, on the
	// mesh loop. It must not block.
	DeliverRouted func(src ids.Node, kind uint32, payload []byte)
	// OnStream receives each QUIC stream a direct peer opens (data
	// connections), on the goroutine that accepts that peer's streams: it
	// must not block, and owns the stream. Nil refuses them.
	OnStream func(peer ids.Node, st *quic.Stream)
	// DeliverDatagram receives each datagram addressed to this node (see
	// SendDatagram), on the datagram reader goroutine of the peer it came
	// from, so calls for different peers run concurrently. It must not
	// block. The payload is the callee's to keep. Datagrams carry no
	// source: upper layers authenticate their own. Nil discards them.
	DeliverDatagram func(payload []byte)
	// OnForward, if set, sees each routed message this node relays for
	// others, on the mesh loop (diagnostics and tests). It must not block
	// or keep the message.
	OnForward func(r *pb.Routed)
	// HPKEKey is the node's public key for end-to-end encryption, published
	// in its status.
	HPKEKey    []byte
	EventQueue int // events that may wait for OnEvent (default 4096)
	// Certs remembers the certificates already verified, shared with the
	// node's pipeline engine; nil: the mesh keeps its own.
	Certs *identity.CertCache
}

func (c *Config) fill() error {
	if c.Transport == nil || c.Key == nil || c.Cert == nil {
		return errors.New("mesh: Transport, Key and Cert are required")
	}
	none := func() []string { return nil }
	if c.Gateways == nil {
		c.Gateways = none
	}
	if c.Addrs == nil {
		c.Addrs = none
	}
	if c.Networks == nil {
		c.Networks = func() []*pb.NetworkInfo { return nil }
	}
	if c.TargetDegree <= 0 {
		c.TargetDegree = 6
	}
	if c.RelayRate <= 0 {
		c.RelayRate = DefaultRelayRate
	}
	if c.MaxPeers <= 0 {
		c.MaxPeers = 3 * c.TargetDegree
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = 5 * time.Second
	}
	if c.OfflineAfter <= 0 {
		c.OfflineAfter = 20 * time.Second
	}
	if c.OfflineAfter < 2*c.Heartbeat {
		return fmt.Errorf("mesh: OfflineAfter (%v) must be at least twice Heartbeat (%v)", c.OfflineAfter, c.Heartbeat)
	}
	if c.BackoffMin <= 0 {
		c.BackoffMin = 500 * time.Millisecond
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.EventQueue <= 0 {
		c.EventQueue = 4096
	}
	if c.Certs == nil {
		c.Certs = &identity.CertCache{}
	}
	return nil
}

// Stats are counters of the mesh, for diagnostics and metrics.
type Stats struct {
	Peers             int
	OnlineNodes       int
	Conns             int64  // verified QUIC connections open now
	HandshakesRefused uint64 // peers refused during the membership handshake
	BadMessages       uint64 // frames with a wrong id, bad signature or bad form
	FramesDropped     uint64 // frames dropped because a peer's queue was full
	EventsDropped     uint64
	DialsFailed       uint64
	RefusedInbound    uint64
	Routed            uint64 // routed messages forwarded for others
	NoRoute           uint64 // routed messages dropped for want of a route
	HardPunches       uint64 // hard-NAT punches that opened sockets (see punch.go)
	RelayLimited      uint64 // routed messages and datagrams for others dropped over a peer's relay budget
	BytesSent         uint64 // QUIC bytes sent to peers since the node started
	BytesReceived     uint64 // QUIC bytes received from peers since the node started
	Datagrams         DatagramStats
	Tree              plumtree.Stats
}

type inFrame struct {
	p  *peer
	f  *pb.Frame
	st *status // a verified presence status
	v  any     // what Validate returned
}

type closed struct {
	p   *peer
	err error
}

type dialResult struct {
	addr string
	conn *transport.Conn
	err  error
}

// target is an address the mesh may dial, with its redial schedule.
type target struct {
	backoff.Backoff
	gateway bool
	node    ids.Node // known once connected (or from a peer list)
	self    bool     // the address is the local node

	punchUntil time.Time // punching toward the node until then
	punched    time.Time // the last punch dial or probe
	probe      bool      // punch by probes (the other side dials) ...
	dialAfter  time.Time // ... until then, and dial too afterwards
	grace      time.Time // a connection to the node is checked until then
}

// snapshot is the immutable view read by Peers, Nodes and Node.
type snapshot struct {
	peers  []NodeInfo
	nodes  []NodeInfo // online, self excluded
	all    map[ids.Node]NodeInfo
	public []netip.AddrPort // addresses at least two peers observe
	// observed are the addresses any peer observes (candidates for
	// punching: a wrong one only costs a dial).
	observed []netip.AddrPort
	mapping  Mapping // how the node's NAT maps, from the observations
}

// Mesh is one node's membership in the overlay.
type Mesh struct {
	cfg  Config
	self ids.Node
	log  *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	stop   sync.Once

	connCh   chan *transport.Conn
	frameCh  chan inFrame
	closedCh chan closed
	dialCh   chan dialResult
	bcastCh  chan bcastReq
	sendCh   chan sendReq
	queryCh  chan func()   // runs a read of loop state on the loop
	drained  chan struct{} // a writer emptied its queue
	loopDone chan struct{}

	events *notify.Queue[Event]
	snap   atomic.Pointer[snapshot]
	abort  atomic.Bool // Kill: leave without a word
	stats  struct {
		bad, dialsFailed, refused atomic.Uint64
		noRoute, routed, dropped  atomic.Uint64
		hardPunches, relayLimited atomic.Uint64
		tree                      atomic.Pointer[plumtree.Stats]
		dg                        dgCounters
	}
	dgTable   atomic.Pointer[dgTable] // first hops of datagrams, published by the loop
	relayRate atomic.Int64            // Config.RelayRate (tests change it)
	hardOpen  atomic.Int32            // hard punches opening sockets now
	addrsNew  atomic.Bool             // AddrsChanged was called
	hardProbe atomic.Int32            // hard punches probing now

	// Loop state: touched only by the loop goroutine.
	peers        map[ids.Node]*peer
	pings        waiters[uint64] // pings waiting for their pong
	checks       checks          // NAT check requests waiting for their ack
	tree         *plumtree.Tree
	pres         *presence
	targets      map[string]*target // by address
	dialing      map[string]bool
	hard         map[ids.Node]*hardPunch // hard-NAT punches, by node
	hardLast     map[ids.Node]time.Time  // when the last one toward a node started
	observedAt   time.Time               // the last look for changed peer addresses
	pathsChecked time.Time               // the last checkPaths
	seq          uint64
	lastStatus   time.Time
	dirty        bool // neighbours changed since the last status
	connected    bool
	leaving      bool
	stale        bool                  // the snapshot is out of date
	heartbeat    time.Duration         // this period's jittered heartbeat
	routes       map[ids.Node]ids.Node // destination -> next hop; nil: recompute
	dgStale      bool                  // routes changed since dgTable was published
	told         map[ids.Node]bool     // whether listeners were last told a node is online
	lastPayload  struct {
		id      [32]byte // a message id
		payload []byte
	}
}

type bcastReq struct {
	kind    uint32
	payload []byte
	done    chan error
}

// New prepares a mesh; Start runs it.
func New(cfg Config) (*Mesh, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	m := &Mesh{
		cfg:      cfg,
		self:     cfg.Cert.NodeID(),
		log:      cfg.Logger,
		connCh:   make(chan *transport.Conn),
		frameCh:  make(chan inFrame, 256),
		closedCh: make(chan closed),
		dialCh:   make(chan dialResult),
		bcastCh:  make(chan bcastReq),
		sendCh:   make(chan sendReq),
		queryCh:  make(chan func()),
		drained:  make(chan struct{}, 1),
		loopDone: make(chan struct{}),
		peers:    make(map[ids.Node]*peer),
		tree:     plumtree.New(cfg.Plumtree),
		pres:     newPresence(cfg.Cert.NodeID(), cfg.OfflineAfter),
		targets:  make(map[string]*target),
		dialing:  make(map[string]bool),
		told:     make(map[ids.Node]bool),
		hard:     make(map[ids.Node]*hardPunch),
		hardLast: make(map[ids.Node]time.Time),
	}
	m.snap.Store(&snapshot{all: map[ids.Node]NodeInfo{}})
	m.relayRate.Store(int64(cfg.RelayRate))
	m.dgTable.Store(&dgTable{})
	return m, nil
}

// Start runs the mesh until Close.
func (m *Mesh) Start() {
	m.ctx, m.cancel = context.WithCancel(context.Background())
	onEvent := m.cfg.OnEvent
	if onEvent == nil {
		onEvent = func(Event) {}
	}
	m.events = notify.New(m.cfg.EventQueue, onEvent)
	m.wg.Add(2)
	go m.acceptLoop()
	go func() {
		defer m.wg.Done()
		defer close(m.loopDone)
		m.loop()
	}()
}

// Close announces that the node is leaving, closes every connection and the
// transport, and waits for every goroutine of the mesh. Idempotent.
func (m *Mesh) Close() error {
	m.stop.Do(func() {
		if m.ctx == nil { // never started
			m.dgTable.Store(&dgTable{closed: true})
			m.cfg.Transport.Close()
			return
		}
		m.cancel()
		<-m.loopDone
		m.cfg.Transport.Close()
		m.wg.Wait()
		m.events.Close()
	})
	return nil
}

// Kill stops the mesh as a crash would: no leaving status, no goodbye, the
// socket closed before anything else. Other nodes notice by timeouts.
func (m *Mesh) Kill() error {
	m.abort.Store(true)
	m.cfg.Transport.Abort()
	return m.Close()
}

// Broadcast sends payload to every other online node of the network (it is
// not delivered locally). Kind 1 is reserved for presence.
// When a peer's send queue is three-quarters full, Broadcast waits until it
// drains (backpressure) or ctx ends.
func (m *Mesh) Broadcast(ctx context.Context, kind uint32, payload []byte) error {
	if kind == kinds.Status {
		return errors.New("mesh: kind 1 is reserved for presence")
	}
	req := bcastReq{kind: kind, payload: payload, done: make(chan error, 1)}
	select {
	case m.bcastCh <- req:
	case <-ctx.Done():
		return ctx.Err()
	case <-m.loopDone:
		return ErrClosed
	}
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ErrClosed is returned by operations on a closed mesh.
var ErrClosed = errors.New("mesh: closed")

// Peers returns the directly connected nodes.
func (m *Mesh) Peers() []NodeInfo { return m.snap.Load().peers }

// PublicAddrs returns the addresses this node's packets come from as its
// peers see them (each peer reports it in the handshake), counting only
// those at least two peers agree on: behind a NAT, the public address and
// port of its mapping. A single peer's word is not trusted (it could
// lie); a NAT that maps each destination to another port (symmetric)
// shows no agreed address.
func (m *Mesh) PublicAddrs() []netip.AddrPort { return m.snap.Load().public }

// AddrsChanged tells the mesh that Config.Addrs has changed (a port
// mapping came or went): the node announces its status again soon,
// instead of at its next heartbeat. It does not block.
func (m *Mesh) AddrsChanged() { m.addrsNew.Store(true) }

// Mapping returns how the node's NAT maps its socket, as far as its
// peers' observations show.
func (m *Mesh) Mapping() Mapping { return m.snap.Load().mapping }

// Nodes returns every node online now, the local one excluded. A node is
// listed only once its status has been heard and while a route to it is
// known, so that each one listed can be addressed (its encryption key is
// known, a Send reaches it).
func (m *Mesh) Nodes() []NodeInfo { return m.snap.Load().nodes }

// Node returns what the mesh knows of id, online or not; its Online
// agrees with Nodes.
func (m *Mesh) Node(id ids.Node) (NodeInfo, bool) {
	n, ok := m.snap.Load().all[id]
	return n, ok
}

// Connected reports whether the node has at least one peer.
func (m *Mesh) Connected() bool { return len(m.snap.Load().peers) > 0 }

// Stats returns the mesh's counters.
func (m *Mesh) Stats() Stats {
	s := m.snap.Load()
	st := Stats{
		Peers:          len(s.peers),
		OnlineNodes:    len(s.nodes),
		BadMessages:    m.stats.bad.Load(),
		DialsFailed:    m.stats.dialsFailed.Load(),
		RefusedInbound: m.stats.refused.Load(),
		Routed:         m.stats.routed.Load(),
		NoRoute:        m.stats.noRoute.Load(),
		HardPunches:    m.stats.hardPunches.Load(),
		RelayLimited:   m.stats.relayLimited.Load(),
		FramesDropped:  m.stats.dropped.Load(),
		Datagrams:      m.stats.dg.load(),
	}
	ts := m.cfg.Transport.Stats()
	st.Conns, st.HandshakesRefused = ts.Conns, ts.Refused
	st.BytesSent, st.BytesReceived = ts.BytesSent, ts.BytesReceived
	if m.events != nil {
		st.EventsDropped = m.events.Dropped()
	}
	if t := m.stats.tree.Load(); t != nil {
		st.Tree = *t
	}
	return st
}

func (m *Mesh) acceptLoop() {
	defer m.wg.Done()
	for {
		c, err := m.cfg.Transport.Accept(m.ctx)
		if err != nil {
			return
		}
		select {
		case m.connCh <- c:
		case <-m.ctx.Done():
			c.Close(transport.CodeNormal, "shutting down")
			return
		}
	}
}

func (m *Mesh) dial(addr string) {
	m.dialing[addr] = true
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		c, err := m.cfg.Transport.Dial(m.ctx, addr)
		select {
		case m.dialCh <- dialResult{addr: addr, conn: c, err: err}:
		case <-m.ctx.Done():
			if c != nil {
				c.Close(transport.CodeNormal, "shutting down")
			}
		}
	}()
}

// jittered returns d ± 10%, so periodic work of many nodes spreads out.
func jittered(d time.Duration) time.Duration {
	return d + time.Duration((rand.Float64()*0.2-0.1)*float64(d))
}
