package pipeline

import (
	"context"
	"errors"

	"google.golang.org/protobuf/proto"

	"github.com/pipesnet/pipes/internal/dispatch"
	"github.com/pipesnet/pipes/internal/history"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/kinds"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

// The engine's handler groups (package dispatch). Broadcast definitions
// and batches run inline, on the mesh loop, as they arrive (they do not
// block: a persistent pipeline's batch goes to its writer's queue); every
// other group has its worker and queue, so that a persistent pipeline's
// ingest, which may wait for its writer, holds up the pipelines group
// only, never secrets, realtime keys or files (a service of its own, see
// fileserve.go). A full queue drops the message and counts it rejected,
// as the one routed queue did; senders heal loss (sync, retries).
const (
	pipelinesQueue = 4096
	notesQueue     = 1024
	realtimeQueue  = 256
	sealedQueue    = 4096
)

// register makes the engine's handler groups and registers its kinds.
func (e *Engine) register() error {
	full := func(dispatch.Msg) { e.stats.rejected.Add(1) }
	var errs []error
	group := func(name string, queue int) *dispatch.Group {
		g, err := e.disp.Group(name, dispatch.GroupConfig{Queue: queue, OnFull: full})
		errs = append(errs, err)
		return g
	}
	bc := group("broadcast", 0)
	pipes := group("pipelines", pipelinesQueue)
	notes := group("notes", notesQueue)
	rt := group("realtime", realtimeQueue)
	sealed := group("sealed", sealedQueue)
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return errors.Join(
		bc.Handle(kinds.Def, dispatch.Route{Paths: kinds.Broadcast, Validate: e.validateDef, Handle: e.onDef}),
		bc.Handle(kinds.Batch, dispatch.Route{Paths: kinds.Broadcast, Validate: e.validateBatch, Handle: e.onBatch}),
		pipes.Handle(kinds.Defs, dispatch.Route{Paths: kinds.Routed | kinds.InSealed, Handle: e.onDefs}),
		pipes.Handle(kinds.Direct, dispatch.Route{Paths: kinds.Routed | kinds.InSealed, Handle: dispatch.Proto(e.onDirect)}),
		pipes.Handle(kinds.Sync, dispatch.Route{Paths: kinds.Routed | kinds.InSealed, Handle: dispatch.Proto(e.onSync)}),
		notes.Handle(kinds.Notes, dispatch.Route{Paths: kinds.Broadcast | kinds.Routed | kinds.InSealed,
			Validate: func(raw []byte, _ ids.Node) (any, error) { return parseNotes(raw) }, Handle: e.onNotes}),
		rt.Handle(kinds.RealtimeKey, dispatch.Route{Paths: kinds.InSealed, Handle: dispatch.Proto(e.onRealtimeKey)}),
		sealed.Handle(kinds.Sealed, dispatch.Route{Paths: kinds.Routed, Handle: dispatch.Proto(e.onSealed)}),
	)
}

// Validate checks a broadcast message before the mesh forwards or delivers
// it. It runs on a peer's reader goroutine, so batches from different
// peers are verified in parallel. It returns the decoded message.
func (e *Engine) Validate(kind uint32, payload []byte, origin ids.Node) (any, error) {
	return e.disp.Validate(kind, payload, origin)
}

// Deliver takes a broadcast message the mesh delivers (once), with what
// Validate returned. It runs on the mesh loop and does not block.
func (e *Engine) Deliver(kind uint32, payload []byte, origin ids.Node, v any) {
	e.disp.Dispatch(dispatch.Msg{From: origin, Kind: kind, Via: kinds.Broadcast, Payload: payload, Body: v})
}

// DeliverRouted takes a routed message for this node. It runs on the mesh
// loop: the message is queued for its handler group's worker (dropped and
// counted if the queue is full, or its kind unknown).
func (e *Engine) DeliverRouted(src ids.Node, kind uint32, payload []byte) {
	e.disp.Dispatch(dispatch.Msg{From: src, Kind: kind, Via: kinds.Routed, Payload: payload})
}

// handleRouted handles a routed message on the calling goroutine (tests
// and fuzzing).
func (e *Engine) handleRouted(m routedMsg) error {
	return e.disp.Run(dispatch.Msg{From: m.src, Kind: m.kind, Via: kinds.Routed, Payload: m.payload})
}

func (e *Engine) validateDef(payload []byte, _ ids.Node) (any, error) {
	var m pb.PipelineDef
	if err := proto.Unmarshal(payload, &m); err != nil {
		return nil, err
	}
	if len(m.NodeA) != 0 {
		return nil, errors.New("pipeline: point-to-point definition broadcast")
	}
	return defFromProto(e.cfg.Network, e.self, &m)
}

func (e *Engine) validateBatch(payload []byte, origin ids.Node) (any, error) {
	var b pb.PacketBatch
	if err := proto.Unmarshal(payload, &b); err != nil {
		return nil, err
	}
	pks, err := openBatch(&b, e.cfg.Network, e.certs)
	if err != nil {
		e.stats.rejected.Add(1)
		return nil, err
	}
	if p := e.live.pipe(pks[0].Pipeline); p != nil {
		p.stats.received.Add(uint64(len(pks)))
	}
	if pks[0].Sender != origin {
		e.stats.rejected.Add(1)
		return nil, errors.New("pipeline: batch broadcast under another origin")
	}
	for _, p := range pks {
		if !p.Destination.IsZero() {
			e.stats.rejected.Add(1)
			return nil, errors.New("pipeline: packet for one node broadcast in clear")
		}
	}
	return &verified{pks: pks, batch: &b}, nil
}

// verified is a broadcast batch that passed Validate.
type verified struct {
	pks   []*Packet
	batch *pb.PacketBatch
}

// onDef takes a broadcast definition (on the mesh loop).
func (e *Engine) onDef(m dispatch.Msg) error {
	d, ok := m.Body.(*Def)
	if !ok {
		return errors.New("pipeline: definition not validated")
	}
	e.addDef(d)
	return nil
}

// onBatch takes a verified broadcast batch (on the mesh loop).
func (e *Engine) onBatch(m dispatch.Msg) error {
	v, ok := m.Body.(*verified)
	if !ok {
		return errors.New("pipeline: batch not validated")
	}
	if !e.persistentIngest(v.pks, v.batch, false) {
		e.deliver(v.pks[0].Pipeline, v.pks)
	}
	return nil
}

// persistentIngest hands packets of a persistent pipeline to its writer
// and reports true, or reports false for a live (or unknown) pipeline.
// Packets of a pipeline whose received definition is being added follow
// the definition (true).
// The packets come from one verified batch, which must number its
// packets consecutively: that batch is the proof stored with them. held
// is true on the pipelines group's worker (see enqueue); nothing here waits for the
// pipeline's writer.
func (e *Engine) persistentIngest(pks []*Packet, b *pb.PacketBatch, held bool) bool {
	// A pipeline being delivered is defined: that needs no registry lock.
	p, defining := e.live.pipe(pks[0].Pipeline), false
	if p == nil {
		p, defining = e.pipeOrDefining(pks[0].Pipeline)
	}
	if p == nil && defining {
		// Its definition is being added (definitions.go): follow it, so
		// that the packets find the pipeline defined.
		if !e.toDefs(func() {
			if !e.persistentIngest(pks, b, held) {
				e.deliver(pks[0].Pipeline, pks)
			}
		}) {
			e.stats.rejected.Add(uint64(len(pks)))
		}
		return true
	}
	if p == nil || !p.def.Opts.Persistent {
		return false
	}
	for i := 1; i < len(pks); i++ {
		if pks[i].Seq != pks[0].Seq+uint64(i) {
			e.stats.rejected.Add(1)
			p.stats.rejected.Add(1)
			return true
		}
	}
	proof := &history.Proof{Sender: pks[0].Sender, FirstSeq: pks[0].Seq, LastSeq: pks[len(pks)-1].Seq,
		Signature: b.Signature}
	e.logs.enqueue(p, ingest{pks: pks, proof: proof, cert: b.NodeCert}, held)
	return true
}

// onDefs takes the definitions a new peer sends in clear (broadcast
// pipelines only), or one definition inside a Sealed message.
func (e *Engine) onDefs(m dispatch.Msg) error {
	if m.Via == kinds.InSealed {
		pd, ok := m.Body.(*pb.PipelineDef)
		if !ok || pd == nil {
			return errors.New("pipeline: empty sealed definition")
		}
		d, err := defFromProto(e.cfg.Network, e.self, pd)
		if err != nil {
			return err
		}
		if d.IsPointToPoint() && d.Opts.ToNode != m.From {
			return errors.New("pipeline: point-to-point definition from a third node")
		}
		e.addDef(d)
		return nil
	}
	var defs pb.PipelineDefs
	if err := proto.Unmarshal(m.Payload, &defs); err != nil {
		return err
	}
	for _, pd := range defs.Defs {
		if len(pd.NodeA) != 0 {
			continue // point-to-point definitions travel sealed only
		}
		if d, err := defFromProto(e.cfg.Network, e.self, pd); err == nil {
			e.addDef(d)
		}
	}
	return nil
}

// onDirect takes a batch for this node: sent with a hop limit of one, it
// came straight from its sender on the QUIC connection between the two,
// or sealed end to end. The batch signature proves who sent it; it must be
// for this node.
func (e *Engine) onDirect(m dispatch.Msg, b *pb.PacketBatch) error {
	return e.acceptPrivate(m.From, b)
}

func (e *Engine) onSync(m dispatch.Msg, s *pb.Sync) error {
	return e.syncer.handle(m.From, s, m.Via == kinds.InSealed)
}

func (e *Engine) onNotes(m dispatch.Msg) error {
	var n *pb.PipelineNotes
	var err error
	switch b, _ := m.Body.(*pb.PipelineNotes); {
	case m.Via == kinds.Broadcast && b != nil: // checked by Validate
		n = b
	case m.Via == kinds.InSealed:
		if b == nil {
			return errors.New("pipeline: empty notes")
		}
		n, err = parseNotes(mustMarshal(b))
	default:
		n, err = parseNotes(m.Payload)
	}
	if err != nil {
		return err
	}
	e.notes.handle(m.From, n, m.Via == kinds.InSealed)
	return nil
}

func (e *Engine) onRealtimeKey(m dispatch.Msg, k *pb.RealtimeKey) error {
	return e.rt.acceptKey(m.From, k)
}

// onSealed opens a Sealed message and dispatches its body under the kind
// it stands for, as a message that came sealed.
func (e *Engine) onSealed(m dispatch.Msg, s *pb.Sealed) error {
	pt, err := e.sealer.open(m.From, s)
	if err != nil {
		e.stats.rejected.Add(1)
		return err
	}
	var body pb.SealedBody
	if err := proto.Unmarshal(pt, &body); err != nil {
		return err
	}
	kind, inner := sealedKind(&body)
	if kind == 0 {
		return errors.New("pipeline: sealed body of no known kind")
	}
	e.disp.Dispatch(dispatch.Msg{From: m.From, Kind: kind, Via: kinds.InSealed, Body: inner})
	return nil
}

// sealedKind returns the kind a sealed body stands for, and the body (0
// for a body of the retired file kinds: file chunks travel on data
// connections now).
func sealedKind(b *pb.SealedBody) (uint32, any) {
	switch b := b.Body.(type) {
	case *pb.SealedBody_Def:
		return kinds.Defs, b.Def
	case *pb.SealedBody_Batch:
		return kinds.Direct, b.Batch
	case *pb.SealedBody_Sync:
		return kinds.Sync, b.Sync
	case *pb.SealedBody_RealtimeKey:
		return kinds.RealtimeKey, b.RealtimeKey
	case *pb.SealedBody_Notes:
		return kinds.Notes, b.Notes
	}
	return 0, nil
}

// acceptPrivate verifies a batch sent to this node alone and delivers it.
func (e *Engine) acceptPrivate(src ids.Node, b *pb.PacketBatch) error {
	pks, err := openBatch(b, e.cfg.Network, e.certs)
	if err != nil {
		e.stats.rejected.Add(1)
		return err
	}
	for _, p := range pks {
		if p.Sender != src || p.Destination != e.self {
			e.stats.rejected.Add(1)
			return errors.New("pipeline: batch of another sender or for another node")
		}
	}
	if !e.persistentIngest(pks, b, true) {
		e.deliver(pks[0].Pipeline, pks)
	}
	return nil
}

// deliver hands verified packets of pipeline id to live delivery
// (live.go).
func (e *Engine) deliver(id ids.Pipeline, pks []*Packet) { e.live.deliver(id, pks) }

// Subscribe calls deliver for every packet of pipeline id from now on, in
// the order they are accepted, under a lock of the pipeline's delivery
// (not the engine's: deliver may call the engine's read API, Pipelines,
// Pipeline, PipelineStats, Stats): deliver must not block (a non-blocking
// channel send that reports false when full is the intended use), nor
// subscribe or shut a pipeline down. end is called
// once when the subscription ends: when ctx ends, the pipeline is removed
// or the engine closes; no packet is handed to deliver after it.
func (e *Engine) Subscribe(ctx context.Context, id ids.Pipeline, deliver func(*Packet) bool, end func()) error {
	return e.live.subscribe(ctx, id, deliver, end)
}

// PipelineStats returns the counters of one pipeline.
func (e *Engine) PipelineStats(id ids.Pipeline) Stats {
	e.mu.Lock()
	p := e.mu.pipes[id]
	e.mu.Unlock()
	if p == nil {
		return Stats{}
	}
	return Stats{Received: p.stats.received.Load(), Delivered: p.stats.delivered.Load(), Dropped: p.stats.dropped.Load(), Rejected: p.stats.rejected.Load()}
}
