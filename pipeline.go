package pipes

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pipesnet/pipes/internal/atomicfile"
	"github.com/pipesnet/pipes/internal/history"
	"github.com/pipesnet/pipes/internal/mesh"
	"github.com/pipesnet/pipes/internal/notify"
	"github.com/pipesnet/pipes/internal/pipeline"
	"github.com/pipesnet/pipes/internal/store"
)

// MaxPacketSize is the largest packet Put accepts (1 MiB).
const MaxPacketSize = pipeline.MaxPacketSize

// PipelineOptions choose the kind of pipeline CreatePipeline makes.
//
// Encrypted pipelines seal every packet's data with a key derived from
// Secret, which never leaves the node: nodes without the secret still
// verify, forward and (persistent) store the packets, but cannot read
// them (Data gives ErrNoSecret) until SetSecret. The key derivation is
// Argon2id (64 MiB) salted, by default, with the pipeline's own identity,
// so one secret gives unrelated keys on different pipelines. Salt
// replaces that salt with the application's: every pipeline created with
// the same secret and Salt shares one key. Unsalted uses a fixed salt: the
// key depends on the secret alone, the same on every pipeline and
// network, so precomputed guesses work against all of them; use it only
// with a random secret of 16 bytes or more that several pipelines must
// share. Salt and Unsalted apply only to encrypted pipelines and exclude
// each other; both are part of the pipeline's identity, as is (through a
// public key derived from it) the secret.
//
// Ephemeral pipelines can be shut down (Shutdown), which removes them from
// every node. Realtime pipelines are live only and carry each packet as
// one datagram (see Pipeline.Put and SetupUDPPortMap).
type PipelineOptions struct {
	ToNode     NodeID // non-zero: point-to-point with that node
	Persistent bool   // else live
	Encrypted  bool
	Secret     []byte // pipeline secret, required with Encrypted
	Ephemeral  bool
	Realtime   bool   // live only: datagrams, no retransmission
	Unsalted   bool   // encrypted: derive the key from the secret alone
	Salt       []byte // encrypted: the key derivation's salt (up to 64 bytes)
}

// PutOption modifies one Put.
type PutOption func(*putOptions)

type putOptions struct {
	packetType  int
	destination NodeID
}

// WithPacketType sets the application's integer type of the packet.
func WithPacketType(t int) PutOption { return func(o *putOptions) { o.packetType = t } }

// WithDestination delivers the packet to one node only: it is encrypted end
// to end for that node and routed to it, so other nodes, relays included,
// see neither its content nor, beyond the relays on its path, that it was
// sent.
func WithDestination(id NodeID) PutOption { return func(o *putOptions) { o.destination = id } }

// Pipeline is a communication channel of a network: every packet put on it
// reaches the nodes online now (live), or one node (point-to-point).
//
// Delivery: each packet is signed by its sender (one signature per batch of
// packets) and verified by every receiver before delivery; forged,
// tampered, replayed and oversized packets are dropped and counted. A node
// does not receive its own packets. Flow control: Put blocks while the
// pipeline's send queue (4096 packets) is full, and the queue drains as
// fast as the slowest direct peer's link allows; each subscriber and
// listener has its own buffer of 16384 packets, and a subscriber that
// falls behind loses packets beyond that, counted in Stats().Dropped,
// without slowing anyone else.
type Pipeline struct {
	n   *Node
	def *pipeline.Def

	mu struct {
		sync.Mutex
		listeners  []PipelineListener
		stop       context.CancelFunc // ends the listeners' subscription
		notes      *notify.Queue[*Packet]
		followDone chan struct{} // persistent: closed when the listeners' reader ends
		closed     bool          // shut down
		udp        *udpMap       // realtime point-to-point: the UDP port map
		handled    int64         // persistent: the last LogID handed to the listeners (-1: none yet)
		hasHandled bool
	}
}

// PipelineStats count a pipeline's packets on the local node.
type PipelineStats struct {
	Received  uint64 // packet copies that arrived by broadcast, duplicates included
	Delivered uint64 // packets received and handed to subscribers
	Dropped   uint64 // live: packets a full subscriber buffer lost; persistent: received packets set aside for sync to fetch again
	Rejected  uint64 // packets refused: replayed or otherwise invalid

	// Persistent pipelines only.
	Logged        int64 // packets in the local log (the next LogID)
	LoggedBytes   int64 // their data bytes
	Synchronizing bool  // catching up with peers
}

// meshHost lets the pipeline engine use the node's mesh. The engine starts
// before the mesh exists (the mesh needs the engine's handlers), so until
// set is called the host has no peers and refuses to send.
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

func (h *meshHost) Send(ctx context.Context, dst [32]byte, kind uint32, p []byte) error {
	if m := h.mp.Load(); m != nil {
		return m.Send(ctx, dst, kind, p)
	}
	return errNoMesh
}

func (h *meshHost) SendDirect(ctx context.Context, dst [32]byte, kind uint32, p []byte) error {
	if m := h.mp.Load(); m != nil {
		return m.SendDirect(ctx, dst, kind, p)
	}
	return errNoMesh
}

func (h *meshHost) SendDatagramWait(ctx context.Context, dst [32]byte, p []byte) error {
	if m := h.mp.Load(); m != nil {
		return m.SendDatagramWait(ctx, dst, p)
	}
	return errNoMesh
}

func (h *meshHost) Peers() [][32]byte {
	m := h.mp.Load()
	if m == nil {
		return nil
	}
	peers := m.Peers()
	out := make([][32]byte, len(peers))
	for i, p := range peers {
		out[i] = p.ID
	}
	return out
}

func (h *meshHost) Online() [][32]byte {
	m := h.mp.Load()
	if m == nil {
		return nil
	}
	var out [][32]byte
	for _, n := range m.Nodes() {
		if n.Online {
			out = append(out, n.ID)
		}
	}
	return out
}

func (h *meshHost) HPKEKey(id [32]byte) ([]byte, bool) {
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

func (n *Node) engineOrNil() *pipeline.Engine {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mu.engine
}

// pipelineFor returns the one Pipeline value of a definition.
func (n *Node) pipelineFor(d *pipeline.Def) *Pipeline {
	n.mu.Lock()
	defer n.mu.Unlock()
	id := PipelineID(d.ID)
	if p := n.mu.pipelines[id]; p != nil {
		return p
	}
	p := &Pipeline{n: n, def: d}
	n.mu.pipelines[id] = p
	return p
}

// pipelineRemoved runs on the engine's notification goroutine when an
// ephemeral pipeline was shut down.
func (n *Node) pipelineRemoved(d *pipeline.Def) {
	p := n.pipelineFor(d)
	n.mu.Lock()
	delete(n.mu.pipelines, PipelineID(d.ID))
	n.mu.Unlock()
	p.mu.Lock()
	p.mu.closed = true
	ls := slices.Clone(p.mu.listeners)
	p.mu.Unlock()
	for _, l := range ls {
		l.HandleStatusUpdate(p)
	}
	// The subscription ended with the pipeline; clear it so that a
	// pipeline created again later starts a fresh one.
	p.detach()
	p.ClosePortMap()
}

// pipelineKnown runs on the engine's notification goroutine.
func (n *Node) pipelineKnown(d *pipeline.Def) {
	p := n.pipelineFor(d)
	n.mu.Lock()
	ls := slices.Clone(n.mu.listeners)
	n.mu.Unlock()
	for _, l := range ls {
		l.HandlePipeline(p, n)
	}
}

// Pipelines returns the pipelines the node knows, by name. It reads the
// node's store, so a node that is not started lists the pipelines it
// stored in earlier runs (reading them needs the network secret).
// Pipeline and, on the pipelines, HasSecret, PacketWithID, PacketsSince
// and the packets' Data and Open read the store likewise, started or not
// (not yet the content of file packets, which needs Start).
func (n *Node) Pipelines() []*Pipeline {
	out := []*Pipeline{}
	if e, err := n.readEngine(); err == nil {
		for _, d := range e.Pipelines() {
			out = append(out, n.pipelineFor(d))
		}
		return out
	}
	n.mu.Lock()
	for _, p := range n.mu.pipelines {
		out = append(out, p)
	}
	n.mu.Unlock()
	slices.SortFunc(out, func(a, b *Pipeline) int { return compareStrings(a.def.Name, b.def.Name) })
	return out
}

// Pipeline returns the pipeline with id, or ErrNotFound.
func (n *Node) Pipeline(id PipelineID) (*Pipeline, error) {
	if e, err := n.readEngine(); err == nil {
		if d, ok := e.Pipeline(id); ok {
			return n.pipelineFor(d), nil
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if p := n.mu.pipelines[id]; p != nil {
		return p, nil
	}
	return nil, fmt.Errorf("%w: pipeline %s", ErrNotFound, id)
}

// CreatePipeline creates a pipeline, or finds the existing one with the same
// name and options (the id is derived from them, so every node computes
// the same id). The same name with other options is ErrConflict. A
// broadcast pipeline is announced to every node, including nodes that join
// later; a point-to-point pipeline (ToNode) only to the other node, end to
// end encrypted; if it is offline, a persistent point-to-point pipeline is
// created anyway and announced when it comes online (a live one gives
// ErrNotConnected). The node must be started.
func (n *Node) CreatePipeline(name string, o PipelineOptions) (PipelineID, error) {
	e := n.engineOrNil()
	if e == nil {
		return PipelineID{}, ErrNotActive
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := e.Create(ctx, name, pipeline.Options{ToNode: o.ToNode, Persistent: o.Persistent,
		Encrypted: o.Encrypted, Ephemeral: o.Ephemeral, Realtime: o.Realtime, Unsalted: o.Unsalted, Salt: o.Salt}, o.Secret)
	switch {
	case errors.Is(err, pipeline.ErrWrongSecret):
		return PipelineID{}, fmt.Errorf("%w: %v", ErrWrongSecret, err)
	case errors.Is(err, pipeline.ErrSecretRequired):
		return PipelineID{}, fmt.Errorf("%w: %v", ErrNoSecret, err)
	case errors.Is(err, pipeline.ErrNotImplemented):
		return PipelineID{}, fmt.Errorf("%w: %v", ErrNotImplemented, err)
	case errors.Is(err, pipeline.ErrConflict):
		return PipelineID{}, fmt.Errorf("%w: %q", ErrConflict, name)
	case (errors.Is(err, pipeline.ErrNoKey) || errors.Is(err, mesh.ErrNoRoute)) && d != nil && d.Opts.Persistent:
		// The other node is away: it learns of the pipeline, and gets its
		// packets, when it comes online.
		n.pipelineFor(d)
		return PipelineID(d.ID), nil
	case errors.Is(err, pipeline.ErrNoKey), errors.Is(err, mesh.ErrNoRoute):
		return PipelineID{}, fmt.Errorf("%w: %v", ErrNotConnected, err)
	case err != nil && d == nil:
		return PipelineID{}, fmt.Errorf("pipes: %w", err)
	case err != nil:
		return PipelineID(d.ID), fmt.Errorf("pipes: pipeline created but not yet announced: %w", err)
	}
	n.pipelineFor(d)
	return PipelineID(d.ID), nil
}

// WaitPipeline waits until the pipeline with id is known to the node (for
// example one another node created) and returns it.
func (n *Node) WaitPipeline(ctx context.Context, id PipelineID) (*Pipeline, error) {
	e := n.engineOrNil()
	if e == nil {
		return nil, ErrNotActive
	}
	d, err := e.Wait(ctx, id)
	if err != nil {
		return nil, err
	}
	return n.pipelineFor(d), nil
}

// ID returns the pipeline's id.
func (p *Pipeline) ID() PipelineID { return p.def.ID }

// Name returns the pipeline's name.
func (p *Pipeline) Name() string { return p.def.Name }

// Encrypted reports whether packets are encrypted with a pipeline secret.
func (p *Pipeline) Encrypted() bool { return p.def.Opts.Encrypted }

// IsPointToPoint reports whether the pipeline joins two nodes only.
func (p *Pipeline) IsPointToPoint() bool { return p.def.IsPointToPoint() }

// OtherNode returns the other node of a point-to-point pipeline.
func (p *Pipeline) OtherNode() (NodeID, bool) { return p.def.Opts.ToNode, p.IsPointToPoint() }

// Persistent reports whether the pipeline keeps its history on every node.
func (p *Pipeline) Persistent() bool { return p.def.Opts.Persistent }

// Live reports whether the pipeline delivers to online nodes only.
func (p *Pipeline) Live() bool { return !p.def.Opts.Persistent }

// Realtime reports whether the pipeline uses datagrams.
func (p *Pipeline) Realtime() bool { return p.def.Opts.Realtime }

// Ephemeral reports whether the pipeline can be shut down.
func (p *Pipeline) Ephemeral() bool { return p.def.Opts.Ephemeral }

// Shutdown removes an ephemeral pipeline from the network: every node
// that has it (now, or when it next connects) drops it from Pipelines(),
// ends its subscriptions, tells its listeners (HandleStatusUpdate, with
// Closed() true) and deletes what it stored of it. Creating it again
// afterwards makes a new pipeline of the same id. Shutdown of a pipeline
// that is not ephemeral is ErrNotEphemeral.
func (p *Pipeline) Shutdown() error {
	e := p.n.engineOrNil()
	if e == nil {
		return ErrNotActive
	}
	err := e.Shutdown(p.def.ID)
	switch {
	case errors.Is(err, pipeline.ErrNotEphemeral):
		return fmt.Errorf("%w: %q", ErrNotEphemeral, p.def.Name)
	case errors.Is(err, pipeline.ErrUnknown):
		return fmt.Errorf("%w: %q", ErrClosedPipeline, p.def.Name)
	case err != nil:
		// Removed here; the other nodes learn of it when they connect.
		return fmt.Errorf("pipes: pipeline shut down locally, not yet announced: %w", err)
	}
	return nil
}

// Closed reports whether the pipeline was shut down.
func (p *Pipeline) Closed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mu.closed
}

// NodesWithEncryptionSecret lists the nodes that proved they hold the
// pipeline secret: each holder signs its node id with a key derived from
// the secret, and the proof is checked against the public key in the
// pipeline's definition, so a node cannot claim the secret without having
// it. The list includes this node if it holds the secret, and grows as
// proofs arrive (on SetSecret, and from peers as they connect).
func (p *Pipeline) NodesWithEncryptionSecret() []NodeID {
	e := p.n.engineOrNil()
	if e == nil {
		return nil
	}
	var out []NodeID
	for _, id := range e.SecretHolders(p.def.ID) {
		out = append(out, NodeID(id))
	}
	return out
}

// HasSecret reports whether this node holds the pipeline secret.
func (p *Pipeline) HasSecret() bool {
	e, err := p.n.readEngine()
	return err == nil && e.HasSecret(p.def.ID)
}

// SetSecret gives this node the secret of an encrypted pipeline. It returns
// false (and no error) if the secret is wrong. When right, the node can
// read the pipeline's packets, those it already stored included, and put
// packets on it; the key is kept (sealed) in the store across restarts,
// and the node's proof of possession is sent to the pipeline's nodes. It
// takes a moment: the key derivation is deliberately slow.
func (p *Pipeline) SetSecret(secret []byte) (bool, error) {
	e := p.n.engineOrNil()
	if e == nil {
		return false, ErrNotActive
	}
	ok, err := e.SetSecret(p.def.ID, secret)
	if err != nil {
		return false, fmt.Errorf("pipes: %w", err)
	}
	return ok, nil
}

// Put sends data as one packet and returns its id. On a live pipeline it
// returns once the packet is queued, blocking while the pipeline's send
// queue is full; on a persistent pipeline, once the packet is on disk (it
// is then sent, or synchronised later); on a realtime pipeline, once the
// datagram is queued for the link, blocking while the link's datagram
// queue is full, and a packet larger than one datagram on the path gives
// a *DatagramTooLargeError. Packets larger than MaxPacketSize
// give ErrTooLarge; a stopped node gives ErrNotActive; a full disk
// ErrDiskFull. Put is PutContext without a deadline.
func (p *Pipeline) Put(data []byte, opts ...PutOption) (PacketID, error) {
	return p.PutContext(context.Background(), data, opts...)
}

// PutContext is Put that gives up when ctx ends, with ctx's error. A
// packet of a persistent pipeline whose PutContext gave up may still be
// logged (and then sent): it was handed to the log before ctx ended.
func (p *Pipeline) PutContext(ctx context.Context, data []byte, opts ...PutOption) (PacketID, error) {
	var o putOptions
	for _, f := range opts {
		f(&o)
	}
	e := p.n.engineOrNil()
	if e == nil {
		return PacketID{}, ErrNotActive
	}
	id, err := e.Put(ctx, p.def.ID, data, int64(o.packetType), o.destination)
	switch {
	case ctx.Err() != nil && errors.Is(err, ctx.Err()):
		return PacketID{}, err
	case realtimeErr(err) != nil:
		return PacketID{}, realtimeErr(err)
	case errors.Is(err, pipeline.ErrTooLarge):
		return PacketID{}, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), MaxPacketSize)
	case errors.Is(err, pipeline.ErrClosed):
		return PacketID{}, ErrNotActive
	case errors.Is(err, pipeline.ErrRemoved), errors.Is(err, pipeline.ErrUnknown):
		// A Pipeline the engine no longer knows was shut down.
		return PacketID{}, fmt.Errorf("%w: %q", ErrClosedPipeline, p.def.Name)
	case errors.Is(err, pipeline.ErrNoSecret):
		return PacketID{}, fmt.Errorf("%w: %v", ErrNoSecret, err)
	case err != nil:
		return PacketID{}, storeErr(err)
	}
	return id, nil
}

// storeErr maps the errors of the store to the package's sentinels.
func storeErr(err error) error {
	switch {
	case errors.Is(err, store.ErrDiskFull):
		return fmt.Errorf("%w: %w", ErrDiskFull, err)
	case errors.Is(err, store.ErrCorrupt), errors.Is(err, store.ErrFailed), errors.Is(err, history.ErrDamaged):
		return fmt.Errorf("%w: %w", ErrStore, err)
	}
	return fmt.Errorf("pipes: %w", err)
}

// PutFile puts the file at path on the pipeline as one file packet and
// returns its id (the spec's putFilePacket). The file is read once, in
// chunks, into the node's file store (sealed at rest, and sealed with the
// pipeline key on an encrypted pipeline), so it may change or go away
// afterwards; the packet carries its manifest (size and a hash per
// chunk). Every node that gets the packet fetches the content in the
// background, from the sender or any other node of the pipeline that has
// it, checks each chunk as it arrives and resumes after an interruption.
// Read it with Packet.Open or Packet.WriteDataToPath. Files of any size up
// to 32 GiB; memory use does not grow with the size. Realtime pipelines
// carry no files. A node keeps the files of a pipeline (live ones
// included) until the pipeline is shut down: there is no quota or
// expiry yet. PutFile is PutFileContext without a deadline.
func (p *Pipeline) PutFile(path string) (PacketID, error) {
	return p.PutFileContext(context.Background(), path)
}

// PutFileContext is PutFile that gives up when ctx ends.
func (p *Pipeline) PutFileContext(ctx context.Context, path string) (PacketID, error) {
	e := p.n.engineOrNil()
	if e == nil {
		return PacketID{}, ErrNotActive
	}
	id, err := e.PutFile(ctx, p.def.ID, path, 0)
	switch {
	case err == nil:
		return id, nil
	case ctx.Err() != nil && errors.Is(err, ctx.Err()):
		return PacketID{}, err
	case errors.Is(err, pipeline.ErrNoSecret):
		return PacketID{}, fmt.Errorf("%w: %v", ErrNoSecret, err)
	case errors.Is(err, pipeline.ErrClosed):
		return PacketID{}, ErrNotActive
	case errors.Is(err, pipeline.ErrRemoved), errors.Is(err, pipeline.ErrUnknown):
		return PacketID{}, fmt.Errorf("%w: %q", ErrClosedPipeline, p.def.Name)
	case errors.Is(err, pipeline.ErrFileTooLarge):
		return PacketID{}, fmt.Errorf("%w: %v", ErrTooLarge, err)
	}
	return PacketID{}, storeErr(err)
}

// Subscribe returns the packets that arrive on the pipeline from now on. The
// channel is closed when ctx ends or the node shuts down; if the node is
// not started it is closed at once.
//
// On a live pipeline the channel holds up to 16384 packets; a subscriber
// that does not keep up loses the excess, counted in Stats().Dropped. On a
// persistent pipeline the subscription reads the log: it never loses a
// packet, however slow the subscriber, and it includes the node's own
// packets (see SubscribeSince to resume from a LogID).
func (p *Pipeline) Subscribe(ctx context.Context) <-chan *Packet {
	if p.Persistent() {
		ch, err := p.SubscribeSince(ctx, p.lastLogID())
		if err != nil {
			ch := make(chan *Packet)
			close(ch)
			return ch
		}
		return ch
	}
	ch := make(chan *Packet, 16384)
	e := p.n.engineOrNil()
	if e == nil {
		close(ch)
		return ch
	}
	err := e.Subscribe(ctx, p.def.ID, func(pk *pipeline.Packet) bool {
		select {
		case ch <- p.packet(pk):
			return true
		default:
			return false
		}
	}, func() { close(ch) })
	if err != nil {
		close(ch)
	}
	return ch
}

// Stats returns the pipeline's counters on this node.
func (p *Pipeline) Stats() PipelineStats {
	e := p.n.engineOrNil()
	if e == nil {
		return PipelineStats{}
	}
	s := e.PipelineStats(p.def.ID)
	p.mu.Lock()
	if p.mu.notes != nil {
		s.Dropped += p.mu.notes.Dropped()
	}
	if p.mu.udp != nil {
		s.Dropped += p.mu.udp.dropped.Load()
	}
	p.mu.Unlock()
	out := PipelineStats{Received: s.Received, Delivered: s.Delivered, Dropped: s.Dropped, Rejected: s.Rejected}
	if l, err := p.logOf(); err == nil {
		out.Logged, out.LoggedBytes, out.Synchronizing = l.Next(), l.Bytes(), e.Synchronizing(p.def.ID)
	}
	return out
}

// AddListener adds a listener for the pipeline's packets. Callbacks run in
// order on a goroutine of the pipeline, with no lock held, while the node
// runs (the listener stays registered across Shutdown and Start). Up to
// 16384 packets wait for the listeners; beyond that packets are dropped for
// them and counted in Stats().Dropped.
func (p *Pipeline) AddListener(l PipelineListener) {
	p.mu.Lock()
	p.mu.listeners = append(p.mu.listeners, l)
	p.mu.Unlock()
	if e := p.n.engineOrNil(); e != nil {
		p.attach(e)
	}
}

// RemoveListener removes a pipeline listener (compared with ==). When the
// last listener goes, it waits for a callback in progress to return, so it
// must not be called from a listener's own callback.
func (p *Pipeline) RemoveListener(l PipelineListener) {
	p.mu.Lock()
	p.mu.listeners = slices.DeleteFunc(p.mu.listeners, func(x PipelineListener) bool { return x == l })
	p.mu.Unlock()
	p.detachIfUnused()
}

// detachIfUnused ends the listeners' subscription if no listener is left,
// deciding under the lock so that a concurrent AddListener keeps it.
func (p *Pipeline) detachIfUnused() {
	p.mu.Lock()
	if len(p.mu.listeners) > 0 {
		p.mu.Unlock()
		return
	}
	stop, q, done := p.mu.stop, p.mu.notes, p.mu.followDone
	p.mu.stop, p.mu.notes, p.mu.followDone = nil, nil, nil
	p.mu.Unlock()
	endSubscription(stop, q, done)
}

// attach subscribes the listeners to engine e, if there are listeners and
// they are not subscribed yet.
func (p *Pipeline) attach(e *pipeline.Engine) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mu.stop != nil || len(p.mu.listeners) == 0 {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	if p.Persistent() {
		// Listeners of a persistent pipeline read the log: from its end
		// the first time, then from where they stopped (across Shutdown
		// and Start). They lose nothing, and a slow one delays only
		// itself.
		from := p.mu.handled
		if !p.mu.hasHandled {
			from = p.lastLogID()
			p.mu.handled, p.mu.hasHandled = from, true
		}
		done := make(chan struct{})
		err := e.Follow(ctx, p.def.ID, from, func(ctx context.Context, pk *pipeline.Packet) bool {
			p.mu.Lock()
			ls := slices.Clone(p.mu.listeners)
			p.mu.Unlock()
			for _, l := range ls {
				l.HandlePacket(p.packet(pk), p)
			}
			p.mu.Lock()
			p.mu.handled = pk.LogID
			p.mu.Unlock()
			return true
		}, func() { close(done) })
		if err != nil {
			cancel()
			return
		}
		p.mu.stop, p.mu.followDone = cancel, done
		return
	}
	q := notify.New(16384, func(pk *Packet) {
		p.mu.Lock()
		ls := slices.Clone(p.mu.listeners)
		p.mu.Unlock()
		for _, l := range ls {
			l.HandlePacket(pk, p)
		}
	})
	if err := e.Subscribe(ctx, p.def.ID, func(pk *pipeline.Packet) bool { return q.Push(p.packet(pk)) }, func() {}); err != nil {
		cancel()
		q.Close()
		return
	}
	p.mu.stop, p.mu.notes = cancel, q
}

// detach ends the listeners' subscription and waits for callbacks in
// progress. It must not be called from a callback.
func (p *Pipeline) detach() {
	p.mu.Lock()
	stop, q, done := p.mu.stop, p.mu.notes, p.mu.followDone
	p.mu.stop, p.mu.notes, p.mu.followDone = nil, nil, nil
	p.mu.Unlock()
	endSubscription(stop, q, done)
}

// endSubscription stops a listeners' subscription and waits for its
// callbacks to finish.
func endSubscription(stop context.CancelFunc, q *notify.Queue[*Packet], done chan struct{}) {
	if stop != nil {
		stop()
	}
	if q != nil {
		q.Close()
	}
	if done != nil {
		<-done
	}
}

// Packet is one unit of data on a pipeline, verified as sent by Sender.
type Packet struct {
	p  *pipeline.Packet
	pl *Pipeline

	mu    sync.Mutex
	plain []byte // decrypted data (encrypted pipelines), once read
	read  bool
	id    PacketID // computed id (realtime packets)
}

// packet wraps a packet of p.
func (p *Pipeline) packet(pk *pipeline.Packet) *Packet { return &Packet{p: pk, pl: p} }

// ID returns the packet id: SHA-256 of its header and data (computed on
// first use for a realtime packet).
func (pk *Packet) ID() PacketID {
	if pk.p.ID != ([32]byte{}) {
		return pk.p.ID
	}
	pk.mu.Lock()
	defer pk.mu.Unlock()
	if pk.id == (PacketID{}) {
		pk.id = pk.p.ComputeID()
	}
	return pk.id
}

// Type returns the application's packet type.
func (pk *Packet) Type() int { return int(pk.p.Type) }

// IsFile reports whether the packet is a file packet (PutFile): its
// content is read with Open or WriteDataToPath.
func (pk *Packet) IsFile() bool { return pk.p.File }

// Size returns the size of the data in bytes (on an encrypted pipeline,
// of the data as the application put it; for a file packet, of the file).
func (pk *Packet) Size() int64 {
	if pk.p.File {
		if e := pk.pl.n.engineOrNil(); e != nil {
			if n, err := e.FileSize(pk.p); err == nil {
				return n
			}
		}
		return -1
	}
	if pk.pl != nil && pk.pl.Encrypted() {
		return int64(max(len(pk.p.Data)-pipeline.SealOverhead, 0))
	}
	return int64(len(pk.p.Data))
}

// LogID returns the packet's position in the local log of a persistent
// pipeline: 0, 1, 2, ... in the order the node logged its packets, stable
// across restarts. It is -1 on live pipelines (and for a packet a Put
// returned before it was read back).
func (pk *Packet) LogID() int64 {
	if pk.p.Logged {
		return pk.p.LogID
	}
	return -1
}

// Sender returns the node that put the packet.
func (pk *Packet) Sender() NodeID { return pk.p.Sender }

// Seq returns the packet's sequence number among its sender's packets on
// the pipeline.
func (pk *Packet) Seq() uint64 { return pk.p.Seq }

// Time returns the packet's hybrid-logical-clock time.
func (pk *Packet) Time() time.Time { return pk.p.Time() }

// Data returns the packet's data. The slice is shared: do not modify it.
// On an encrypted pipeline it is decrypted (once): ErrNoSecret if this
// node lacks the pipeline secret, ErrCannotRead if the data does not
// decrypt. For a file packet it reads the whole file into memory, waiting
// for its content to arrive, up to MaxFileData bytes (ErrTooLarge beyond:
// use Open or WriteDataToPath).
func (pk *Packet) Data() ([]byte, error) {
	if pk.p.File {
		return pk.fileData()
	}
	if pk.pl == nil || !pk.pl.Encrypted() {
		return pk.p.Data, nil
	}
	pk.mu.Lock()
	defer pk.mu.Unlock()
	if pk.read {
		return pk.plain, nil
	}
	e, err := pk.pl.n.readEngine() // stored keys read without Start
	if err != nil {
		return nil, err
	}
	plain, err := e.ReadData(pk.p)
	switch {
	case errors.Is(err, pipeline.ErrNoSecret):
		return nil, fmt.Errorf("%w: %v", ErrNoSecret, err)
	case errors.Is(err, pipeline.ErrCannotRead):
		return nil, fmt.Errorf("%w: %v", ErrCannotRead, err)
	case err != nil:
		return nil, fmt.Errorf("pipes: %w", err)
	}
	pk.plain, pk.read = plain, true
	return plain, nil
}

// Open returns a reader of the packet's data. For a file packet it
// streams the file chunk by chunk, waiting for chunks still on their way
// (each is checked against the packet's manifest before it is read);
// Close it to stop waiting. It is OpenContext with a background context.
func (pk *Packet) Open() (io.ReadCloser, error) {
	return pk.OpenContext(context.Background())
}

// OpenContext is Open whose reads give up when ctx ends.
func (pk *Packet) OpenContext(ctx context.Context) (io.ReadCloser, error) {
	if pk.p.File {
		e := pk.pl.n.engineOrNil()
		if e == nil {
			return nil, ErrNotActive
		}
		r, err := e.OpenFile(ctx, pk.p)
		if errors.Is(err, pipeline.ErrNoSecret) {
			return nil, fmt.Errorf("%w: %v", ErrNoSecret, err)
		}
		if err != nil {
			return nil, fmt.Errorf("pipes: %w", err)
		}
		return fileReader{r}, nil
	}
	d, err := pk.Data()
	if err != nil {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(d)), nil
}

// WriteDataToPath writes the packet's data to path (mode 0644), replacing
// it atomically once complete. A file packet is streamed, never held in
// memory; if the transfer is interrupted, calling it again continues from
// the chunks already received. It is WriteDataToPathContext with a
// background context.
func (pk *Packet) WriteDataToPath(path string) error {
	return pk.WriteDataToPathContext(context.Background(), path)
}

// WriteDataToPathContext is WriteDataToPath that gives up when ctx ends.
func (pk *Packet) WriteDataToPathContext(ctx context.Context, path string) error {
	if !pk.p.File {
		d, err := pk.Data()
		if err != nil {
			return err
		}
		return atomicfile.Write(path, d, 0o644)
	}
	r, err := pk.OpenContext(ctx)
	if err != nil {
		return err
	}
	defer r.Close()
	return atomicfile.WriteFrom(path, r, 0o644)
}

// fileReader maps the errors of a file packet's reader to the package's.
type fileReader struct{ io.ReadCloser }

func (r fileReader) Read(b []byte) (int, error) {
	n, err := r.ReadCloser.Read(b)
	if errors.Is(err, pipeline.ErrCannotRead) {
		err = fmt.Errorf("%w: %v", ErrCannotRead, err)
	}
	return n, err
}

// MaxFileData is the largest file packet Data reads into memory (64 MiB).
const MaxFileData = 64 << 20

func (pk *Packet) fileData() ([]byte, error) {
	if n := pk.Size(); n > MaxFileData {
		return nil, fmt.Errorf("%w: file packet of %d bytes: use Open or WriteDataToPath", ErrTooLarge, n)
	}
	r, err := pk.Open()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}
