package pipeline

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/pipesnet/pipes/internal/history"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

// Validate checks a broadcast message before the mesh forwards or delivers
// it. It runs on a peer's reader goroutine, so batches from different
// peers are verified in parallel. It returns the decoded message.
func (e *Engine) Validate(kind uint32, payload []byte, origin [32]byte) (any, error) {
	switch kind {
	case KindDef:
		var m pb.PipelineDef
		if err := proto.Unmarshal(payload, &m); err != nil {
			return nil, err
		}
		if len(m.NodeA) != 0 {
			return nil, errors.New("pipeline: point-to-point definition broadcast")
		}
		return defFromProto(e.cfg.Network, e.self, &m)
	case KindNotes:
		return parseNotes(payload)
	case KindBatch:
		var b pb.PacketBatch
		if err := proto.Unmarshal(payload, &b); err != nil {
			return nil, err
		}
		pks, err := openBatch(&b, e.cfg.Network, &e.certs)
		if err != nil {
			e.stats.rejected.Add(1)
			return nil, err
		}
		e.mu.Lock()
		if p := e.mu.pipes[pks[0].Pipeline]; p != nil {
			p.stats.received.Add(uint64(len(pks)))
		}
		e.mu.Unlock()
		if pks[0].Sender != origin {
			e.stats.rejected.Add(1)
			return nil, errors.New("pipeline: batch broadcast under another origin")
		}
		for _, p := range pks {
			if p.Destination != ([32]byte{}) {
				e.stats.rejected.Add(1)
				return nil, errors.New("pipeline: packet for one node broadcast in clear")
			}
		}
		return &verified{pks: pks, batch: &b}, nil
	}
	return nil, fmt.Errorf("pipeline: unknown kind %d", kind)
}

// verified is a broadcast batch that passed Validate.
type verified struct {
	pks   []*Packet
	batch *pb.PacketBatch
}

// Deliver takes a broadcast message the mesh delivers (once), with what
// Validate returned. It runs on the mesh loop and does not block.
func (e *Engine) Deliver(kind uint32, payload []byte, origin [32]byte, v any) {
	switch m := v.(type) {
	case *Def:
		e.addDef(m)
	case *pb.PipelineNotes:
		// Checking proofs and storing tombstones is work for the
		// worker, not the mesh loop.
		e.DeliverRouted(origin, KindNotes, payload)
	case *verified:
		if !e.persistentIngest(m.pks, m.batch, false) {
			e.deliver(m.pks[0].Pipeline, m.pks)
		}
	}
}

// persistentIngest hands packets of a persistent pipeline to its writer
// and reports true, or reports false for a live (or unknown) pipeline.
// Packets of a pipeline whose received definition is being added follow
// the definition (true).
// The packets come from one verified batch, which must number its
// packets consecutively: that batch is the proof stored with them. held
// is true on the routed worker (see enqueue); nothing here waits for the
// pipeline's writer.
func (e *Engine) persistentIngest(pks []*Packet, b *pb.PacketBatch, held bool) bool {
	p, defining := e.pipeOrDefining(pks[0].Pipeline)
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
	e.enqueue(p, ingest{pks: pks, proof: proof, cert: b.NodeCert}, held)
	return true
}

// DeliverRouted takes a routed message for this node. It runs on the mesh
// loop: the message is queued for the engine's worker (dropped and counted
// if the queue is full).
func (e *Engine) DeliverRouted(src [32]byte, kind uint32, payload []byte) {
	select {
	case e.routed <- routedMsg{src: src, kind: kind, payload: payload}:
	default:
		e.stats.rejected.Add(1)
	}
}

func (e *Engine) routedWorker() {
	defer e.wg.Done()
	for {
		select {
		case m := <-e.routed:
			if err := e.handleRouted(m); err != nil {
				e.log.Debug("dropped routed message", "from", fmt.Sprintf("%x", m.src[:4]), "err", err)
			}
		case <-e.ctx.Done():
			return
		}
	}
}

func (e *Engine) handleRouted(m routedMsg) error {
	switch m.kind {
	case KindDefs:
		var defs pb.PipelineDefs
		if err := proto.Unmarshal(m.payload, &defs); err != nil {
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
	case KindDirect:
		// Sent with a hop limit of one: it came straight from its sender on
		// the QUIC connection between the two. The batch signature proves
		// who sent it; it must be for this node.
		var b pb.PacketBatch
		if err := proto.Unmarshal(m.payload, &b); err != nil {
			return err
		}
		return e.acceptPrivate(m.src, &b)
	case KindFileGet:
		var g pb.FileGet
		if err := proto.Unmarshal(m.payload, &g); err != nil {
			return err
		}
		return e.handleFileGet(m.src, &g, false)
	case KindFileData:
		var d pb.FileData
		if err := proto.Unmarshal(m.payload, &d); err != nil {
			return err
		}
		return e.handleFileData(m.src, &d, false)
	case KindNotes:
		n, err := parseNotes(m.payload)
		if err != nil {
			return err
		}
		e.handleNotes(m.src, n, false)
		return nil
	case KindSync:
		var s pb.Sync
		if err := proto.Unmarshal(m.payload, &s); err != nil {
			return err
		}
		return e.handleSync(m.src, &s, false)
	case KindSealed:
		var s pb.Sealed
		if err := proto.Unmarshal(m.payload, &s); err != nil {
			return err
		}
		pt, err := e.sealer.open(m.src, &s)
		if err != nil {
			e.stats.rejected.Add(1)
			return err
		}
		var body pb.SealedBody
		if err := proto.Unmarshal(pt, &body); err != nil {
			return err
		}
		switch b := body.Body.(type) {
		case *pb.SealedBody_Def:
			d, err := defFromProto(e.cfg.Network, e.self, b.Def)
			if err != nil {
				return err
			}
			if d.IsPointToPoint() && d.Opts.ToNode != m.src {
				return errors.New("pipeline: point-to-point definition from a third node")
			}
			e.addDef(d)
		case *pb.SealedBody_Batch:
			return e.acceptPrivate(m.src, b.Batch)
		case *pb.SealedBody_Sync:
			return e.handleSync(m.src, b.Sync, true)
		case *pb.SealedBody_FileGet:
			if b.FileGet == nil {
				return errors.New("pipeline: empty file request")
			}
			return e.handleFileGet(m.src, b.FileGet, true)
		case *pb.SealedBody_FileData:
			if b.FileData == nil {
				return errors.New("pipeline: empty file data")
			}
			return e.handleFileData(m.src, b.FileData, true)
		case *pb.SealedBody_RealtimeKey:
			return e.acceptRealtimeKey(m.src, b.RealtimeKey)
		case *pb.SealedBody_Notes:
			if b.Notes == nil {
				return errors.New("pipeline: empty notes")
			}
			n, err := parseNotes(mustMarshal(b.Notes))
			if err != nil {
				return err
			}
			e.handleNotes(m.src, n, true)
		}
		return nil
	}
	return fmt.Errorf("unknown routed kind %d", m.kind)
}

// acceptPrivate verifies a batch sent to this node alone and delivers it.
func (e *Engine) acceptPrivate(src [32]byte, b *pb.PacketBatch) error {
	pks, err := openBatch(b, e.cfg.Network, &e.certs)
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

// deliver hands verified packets of one pipeline to its subscribers, after
// the replay check. Packets of a pipeline not defined yet wait (bounded).
func (e *Engine) deliver(id [32]byte, pks []*Packet) {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.mu.pipes[id]
	if p == nil {
		if e.mu.closed || e.mu.tombs[id] != nil {
			return
		}
		for _, pk := range pks {
			if e.mu.npend >= maxPending {
				e.stats.rejected.Add(1)
				continue
			}
			e.mu.pending[id] = append(e.mu.pending[id], pk)
			e.mu.npend++
		}
		return
	}
	for _, pk := range pks {
		if p.def.Opts.Realtime {
			continue // realtime packets come as datagrams only
		}
		w := p.senders[pk.Sender]
		if w == nil {
			w = &replayWindow{seen: map[[32]byte]int64{}}
			p.senders[pk.Sender] = w
		}
		if !w.accept(pk) {
			e.stats.rejected.Add(1)
			p.stats.rejected.Add(1)
			continue
		}
		e.clock.observe(pk.HLC)
		e.deliverLocked(p, pk)
	}
}

// deliverLocked hands pk to p's subscribers, under the engine's lock.
func (e *Engine) deliverLocked(p *pipe, pk *Packet) {
	if pk.File {
		e.noteFile(p, pk)
	}
	e.stats.delivered.Add(1)
	p.stats.delivered.Add(1)
	for s := range p.subs {
		if !s.deliver(pk) {
			e.stats.dropped.Add(1)
			p.stats.dropped.Add(1)
		}
	}
}

// Subscribe calls deliver for every packet of pipeline id from now on,
// under the engine's lock: deliver must not block (a non-blocking channel
// send that reports false when full is the intended use). end is called
// once when the subscription ends: when ctx ends or the engine closes.
func (e *Engine) Subscribe(ctx context.Context, id [32]byte, deliver func(*Packet) bool, end func()) error {
	e.mu.Lock()
	p := e.mu.pipes[id]
	if p == nil || e.mu.closed {
		e.mu.Unlock()
		if p == nil {
			return fmt.Errorf("%w %x", ErrUnknown, id[:4])
		}
		return ErrClosed
	}
	s := &sub{deliver: deliver, end: end}
	p.subs[s] = struct{}{}
	e.mu.Unlock()
	context.AfterFunc(ctx, func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		if _, ok := p.subs[s]; ok {
			delete(p.subs, s)
			s.end()
		}
	})
	return nil
}

// PipelineStats returns the counters of one pipeline.
func (e *Engine) PipelineStats(id [32]byte) Stats {
	e.mu.Lock()
	p := e.mu.pipes[id]
	e.mu.Unlock()
	if p == nil {
		return Stats{}
	}
	return Stats{Received: p.stats.received.Load(), Delivered: p.stats.delivered.Load(), Dropped: p.stats.dropped.Load(), Rejected: p.stats.rejected.Load()}
}
