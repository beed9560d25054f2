package pipeline

import (
	"context"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/pipesnet/pipes/internal/history"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/keys"
	"github.com/pipesnet/pipes/internal/kinds"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

// defsKey is the at-rest key of stored definitions.
func (e *Engine) defsKey() [32]byte {
	return history.DeriveKey(e.cfg.StoreKey, keys.Definitions, nil)
}

// loadDefs restores the definitions stored by earlier runs.
func (e *Engine) loadDefs() {
	if e.cfg.DB == nil {
		return
	}
	e.notes.load()
	raws, err := history.LoadSealed[ids.Pipeline](e.cfg.DB, history.KindDef, e.self, e.defsKey())
	if err != nil {
		e.log.Error("cannot load stored pipeline definitions", "err", err)
	}
	for _, raw := range raws {
		var m pb.PipelineDef
		if proto.Unmarshal(raw, &m) != nil {
			continue
		}
		if d, err := defFromProto(e.cfg.Network, e.self, &m); err == nil {
			e.defineNow(d)
		}
	}
}

// Create defines a pipeline, or returns the existing one with the same name
// and options. A pipeline of the same name and other options is
// ErrConflict. Broadcast pipelines are announced to every node; a
// point-to-point one only to the other node, end to end encrypted.
//
// An encrypted pipeline needs its secret: creating one that exists with
// another secret is ErrWrongSecret; creating it again with the right
// secret gives this node the key, as SetSecret does.
func (e *Engine) Create(ctx context.Context, name string, o Options, secret []byte) (*Def, error) {
	if o.Persistent && e.cfg.DB == nil {
		return nil, fmt.Errorf("%w: persistent pipelines need a store", ErrNotImplemented)
	}
	d, key, err := newDef(e.cfg.Network, e.self, name, o, secret)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	for _, p := range e.mu.pipes {
		if p.def.Name == name && p.def.A == d.A && p.def.B == d.B && !p.def.sameKind(d) {
			e.mu.Unlock()
			if o.Encrypted && p.def.Opts.Encrypted && sameOptions(p.def.Opts, o) {
				return nil, fmt.Errorf("%w for %q", ErrWrongSecret, name)
			}
			return nil, fmt.Errorf("%w: %q", ErrConflict, name)
		}
	}
	existing := e.mu.pipes[d.ID]
	if t := e.notes.tomb(d.ID); t != nil && o.Ephemeral && d.Created <= t.TimeMs {
		d.Created = t.TimeMs + 1 // created again after its shutdown (tombstone times are bounded)
	}
	e.mu.Unlock()
	if existing != nil {
		if key != nil {
			e.notes.setKey(existing, key, true)
		}
		if existing.def.IsPointToPoint() {
			// The other node may not have it yet (it was away, or had not
			// announced its key): tell it again.
			return existing.def, e.announce(ctx, existing.def)
		}
		return existing.def, nil
	}
	if err := e.waitCleanup(ctx, d.ID); err != nil {
		return nil, err
	}
	if !e.defineNow(d) {
		if p, ok := e.pipeOf(d.ID); ok {
			d = p.def // created concurrently
		} else {
			return nil, fmt.Errorf("pipeline: %q was not added (engine closed)", name)
		}
	}
	if key != nil {
		if p, ok := e.pipeOf(d.ID); ok {
			e.notes.setKey(p, key, false)
		}
	}
	if p, _ := e.pipeOf(d.ID); p != nil && p.logErr != nil {
		return nil, p.logErr
	}
	if err := e.announce(ctx, d); err != nil {
		return d, err
	}
	return d, nil
}

// waitCleanup waits until the stored state of a removed pipeline of id,
// if any, is deleted.
func (e *Engine) waitCleanup(ctx context.Context, id ids.Pipeline) error {
	e.mu.Lock()
	ch := e.mu.cleaning[id]
	e.mu.Unlock()
	if ch == nil {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-e.ctx.Done():
		return ErrClosed
	}
}

// sameOptions compares the options that define a pipeline's kind.
func sameOptions(a, b Options) bool {
	return a.ToNode == b.ToNode && a.Persistent == b.Persistent && a.Encrypted == b.Encrypted &&
		a.Ephemeral == b.Ephemeral && a.Realtime == b.Realtime && a.Unsalted == b.Unsalted &&
		string(a.Salt) == string(b.Salt)
}

// announce tells the network (or the other node) of d, and of this node's
// proof that it holds d's secret.
func (e *Engine) announce(ctx context.Context, d *Def) error {
	if err := e.announceDef(ctx, d); err != nil {
		return err
	}
	if p, ok := e.pipeOf(d.ID); ok {
		e.notes.announceProof(p)
	}
	return nil
}

func (e *Engine) announceDef(ctx context.Context, d *Def) error {
	m := d.toProto()
	send, err := e.sealOrPlain(ctx, d.IsPointToPoint(), d.other(e.self), &pb.SealedBody{Body: &pb.SealedBody_Def{Def: m}}, m, e.broadcastAs(kinds.Def))
	if err != nil {
		return err
	}
	return send()
}

// pipeOf returns the state of pipeline id.
func (e *Engine) pipeOf(id ids.Pipeline) (*pipe, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.mu.pipes[id]
	return p, p != nil
}

// defineNow records a definition; it reports whether it was new. The
// definition is stored (a synced write: not on the mesh loop, see addDef)
// before the pipeline is known, its waiters released and the packets and
// proofs that waited for it handed on (live delivery takes the packets,
// live.add); a persistent pipeline's log is opened.
func (e *Engine) defineNow(d *Def) bool {
	e.mu.Lock()
	if e.mu.closed || e.mu.pipes[d.ID] != nil {
		e.mu.Unlock()
		return false
	}
	if ch := e.mu.cleaning[d.ID]; ch != nil {
		// A removed pipeline of this id is still being deleted: add this
		// one once that is done, so the deletion cannot take it too.
		e.mu.Unlock()
		e.spawn(func() {
			select {
			case <-ch:
				e.defineNow(d)
			case <-e.ctx.Done():
			}
		})
		return false
	}
	t := e.notes.tomb(d.ID)
	dead := t != nil && d.Opts.Ephemeral // only ephemeral pipelines can be shut down
	if dead && d.Created > t.TimeMs {
		e.notes.dropTomb(d.ID) // created again after its shutdown
	}
	e.mu.Unlock()
	if dead {
		if d.Created <= t.TimeMs {
			return false
		}
		e.notes.forgetTomb(d.ID)
	}
	p := newPipe(e.ctx, d)
	if d.Opts.Persistent {
		pl, err := e.logs.openLog(d)
		if err != nil {
			p.logErr = fmt.Errorf("pipeline %q: %w", d.Name, err)
			e.log.Error("cannot open the pipeline's log", "pipeline", d.Name, "err", err)
		} else {
			p.plog = pl
			p.sync = newSyncState()
		}
	}
	if e.cfg.DB != nil && !e.cfg.ReadOnly { // a read-only engine adds only stored ones
		if raw, err := marshal(d.toProto()); err == nil {
			if err := history.SaveSealed(e.cfg.DB, history.KindDef, e.self, d.ID, e.defsKey(), raw); err != nil {
				e.log.Warn("cannot store the pipeline definition", "pipeline", d.Name, "err", err)
			}
		}
	}
	e.mu.Lock()
	if e.mu.closed || e.mu.pipes[d.ID] != nil {
		e.mu.Unlock()
		return false
	}
	e.mu.pipes[d.ID] = p
	// Delivery starts (the packets that waited for the definition pass
	// first) before anyone learns of the pipeline and can subscribe.
	e.live.add(p)
	if d.Opts.Realtime {
		e.rt.addPipe(p)
	}
	for _, w := range e.mu.waiters[d.ID] {
		close(w)
	}
	delete(e.mu.waiters, d.ID)
	proofs := e.notes.takeProofs(d.ID)
	e.mu.Unlock()
	if raw, ok := e.notes.storedKey(d.ID); ok && d.Opts.Encrypted {
		if k := keyFromRaw(raw); string(k.public()) == string(d.SecretKey) {
			e.notes.setKey(p, k, false)
		}
	}
	for _, pr := range proofs {
		e.notes.addProof(p, pr)
	}
	if e.cfg.OnPipeline != nil {
		e.notify.Push(func() { e.cfg.OnPipeline(d) })
	}
	return true
}

// Pipelines returns the known pipelines, ordered by name then id.
func (e *Engine) Pipelines() []*Def {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]*Def, 0, len(e.mu.pipes))
	for _, p := range e.mu.pipes {
		out = append(out, p.def)
	}
	slices.SortFunc(out, func(a, b *Def) int {
		if a.Name != b.Name {
			if a.Name < b.Name {
				return -1
			}
			return 1
		}
		return slices.Compare(a.ID[:], b.ID[:])
	})
	return out
}

// Pipeline returns the definition of id.
func (e *Engine) Pipeline(id ids.Pipeline) (*Def, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if p := e.mu.pipes[id]; p != nil {
		return p.def, true
	}
	return nil, false
}

// Wait returns the definition of id once it is known.
func (e *Engine) Wait(ctx context.Context, id ids.Pipeline) (*Def, error) {
	e.mu.Lock()
	if p := e.mu.pipes[id]; p != nil {
		e.mu.Unlock()
		return p.def, nil
	}
	if e.mu.closed {
		e.mu.Unlock()
		return nil, ErrClosed
	}
	w := make(chan struct{})
	e.mu.waiters[id] = append(e.mu.waiters[id], w)
	e.mu.Unlock()
	select {
	case <-w:
		d, _ := e.Pipeline(id)
		return d, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-e.ctx.Done():
		return nil, ErrClosed
	}
}

// sendDefs sends the broadcast pipelines' definitions to a new peer, so
// nodes that join late learn of pipelines created before.
func (e *Engine) sendDefs(peer ids.Node) {
	var defs []*pb.PipelineDef
	for _, d := range e.Pipelines() {
		if !d.IsPointToPoint() {
			defs = append(defs, d.toProto())
		}
	}
	if len(defs) == 0 {
		return
	}
	for chunk := range slices.Chunk(defs, 1024) {
		b, err := marshal(&pb.PipelineDefs{Defs: chunk})
		if err != nil {
			return
		}
		if err := e.cfg.Host.Send(e.ctx, peer, kinds.Defs, b); err != nil {
			e.log.Debug("cannot send pipeline definitions", "peer", peer.Short(), "err", err)
			return
		}
	}
}

// Restore adds a definition known from an earlier run of the node, without
// announcing it.
func (e *Engine) Restore(d *Def) { e.defineNow(d) }
