package pipes

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/mesh"
	"github.com/pipesnet/pipes/internal/notify"
	"github.com/pipesnet/pipes/internal/pipeline"
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

func (n *Node) engineOrNil() *pipeline.Engine {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mu.run.Engine()
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
	// The engine is the authority while there is one: the cache below
	// may still hold a pipeline the engine has just dropped, until the
	// notification of its removal has run.
	if e, err := n.readEngine(); err == nil {
		if d, ok := e.Pipeline(ids.Pipeline(id)); ok {
			return n.pipelineFor(d), nil
		}
		return nil, fmt.Errorf("%w: pipeline %s", ErrNotFound, id)
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
	d, err := e.Create(ctx, name, pipeline.Options{ToNode: ids.Node(o.ToNode), Persistent: o.Persistent,
		Encrypted: o.Encrypted, Ephemeral: o.Ephemeral, Realtime: o.Realtime, Unsalted: o.Unsalted, Salt: o.Salt}, o.Secret)
	offline := errors.Is(err, pipeline.ErrNoKey) || errors.Is(err, mesh.ErrNoRoute)
	switch {
	case offline && d != nil && d.Opts.Persistent:
		// The other node is away: it learns of the pipeline, and gets its
		// packets, when it comes online.
		n.pipelineFor(d)
		return PipelineID(d.ID), nil
	case err != nil && d != nil && !offline:
		return PipelineID(d.ID), fmt.Errorf("pipes: pipeline created but not yet announced: %w", err)
	case err != nil:
		return PipelineID{}, mapErr(err, fmt.Sprintf("pipeline %q", name))
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
	d, err := e.Wait(ctx, ids.Pipeline(id))
	if err != nil {
		return nil, err
	}
	return n.pipelineFor(d), nil
}

// ID returns the pipeline's id.
func (p *Pipeline) ID() PipelineID { return PipelineID(p.def.ID) }

// Name returns the pipeline's name.
func (p *Pipeline) Name() string { return p.def.Name }

// Encrypted reports whether packets are encrypted with a pipeline secret.
func (p *Pipeline) Encrypted() bool { return p.def.Opts.Encrypted }

// IsPointToPoint reports whether the pipeline joins two nodes only.
func (p *Pipeline) IsPointToPoint() bool { return p.def.IsPointToPoint() }

// OtherNode returns the other node of a point-to-point pipeline.
func (p *Pipeline) OtherNode() (NodeID, bool) { return NodeID(p.def.Opts.ToNode), p.IsPointToPoint() }

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
	case errors.Is(err, pipeline.ErrNotEphemeral), errors.Is(err, pipeline.ErrUnknown):
		return mapErr(err, fmt.Sprintf("pipeline %q", p.def.Name))
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
		return false, mapErr(err, "")
	}
	return ok, nil
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
	if logged, bytes, err := e.LogCounts(p.def.ID); err == nil {
		out.Logged, out.LoggedBytes, out.Synchronizing = logged, bytes, e.Synchronizing(p.def.ID)
	}
	return out
}
