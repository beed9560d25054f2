package pipeline

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/pipesnet/pipes/internal/history"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

// Tombstones: an ephemeral pipeline shut down (Shutdown) is removed on
// every node, and stays removed until it is created again later than its
// tombstone. The tombstones are the notes part's (notes.go); removing the
// pipeline is the engine's.

// tomb returns the tombstone of pipeline id, if any.
func (n *notesPart) tomb(id ids.Pipeline) *pb.Tombstone {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mu.tombs[id]
}

// dropTomb forgets the tombstone of a pipeline created again after it
// (its record is deleted by forgetTomb).
func (n *notesPart) dropTomb(id ids.Pipeline) {
	n.mu.Lock()
	delete(n.mu.tombs, id)
	n.mu.Unlock()
}

// recordTomb records t unless a tombstone as recent is there (stale) or
// too many tombstones of unknown pipelines are kept already (refused).
// known tells whether a pipeline is defined; the engine calls recordTomb
// under its lock, and known reads the engine's state without locking.
func (n *notesPart) recordTomb(t *pb.Tombstone, known func(id ids.Pipeline) bool) (stale, refused bool) {
	id := ids.Pipeline(t.Pipeline)
	n.mu.Lock()
	defer n.mu.Unlock()
	if old := n.mu.tombs[id]; old != nil && old.TimeMs >= t.TimeMs {
		return true, false
	}
	if !known(id) && n.mu.tombs[id] == nil {
		unknown := 0
		for tid := range n.mu.tombs {
			if !known(tid) {
				unknown++
			}
		}
		if unknown >= maxUnknownTombs {
			return false, true
		}
	}
	n.mu.tombs[id] = t
	return false, false
}

// storeTomb stores tombstone t (sealed).
func (n *notesPart) storeTomb(t *pb.Tombstone) {
	if n.db == nil {
		return
	}
	if raw, err := marshal(t); err == nil {
		if err := history.SaveSealed(n.db, history.KindTomb, n.self, ids.Pipeline(t.Pipeline), n.tombsKey, raw); err != nil {
			n.log.Warn("cannot store a tombstone", "err", err)
		}
	}
}

// forgetTomb deletes the stored tombstone of a pipeline created again.
func (n *notesPart) forgetTomb(id ids.Pipeline) {
	if n.db != nil {
		if err := history.DeleteSealed(n.db, history.KindTomb, n.self, id); err != nil {
			n.log.Warn("cannot delete a tombstone", "err", err)
		}
	}
}

// queueTomb keeps this node's point-to-point tombstone t until its other
// node is online (sendPending).
func (n *notesPart) queueTomb(t *pb.Tombstone) {
	n.mu.Lock()
	n.mu.tombsOut[ids.Pipeline(t.Pipeline)] = t
	n.mu.Unlock()
}

// sendPending delivers this node's point-to-point tombstones to their
// other nodes once those are online (on the sync loop's tick).
func (n *notesPart) sendPending() {
	n.mu.Lock()
	var pending []*pb.Tombstone
	for _, t := range n.mu.tombsOut {
		pending = append(pending, t)
	}
	n.mu.Unlock()
	for _, t := range pending {
		peer := ids.Node(t.Peer)
		if _, online := n.host.HPKEKey(peer); !online {
			continue
		}
		body, err := marshal(&pb.SealedBody{Body: &pb.SealedBody_Notes{Notes: &pb.PipelineNotes{Tombstones: []*pb.Tombstone{t}}}})
		if err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
		err = n.env.sendSealed(ctx, peer, body)
		cancel()
		if err == nil {
			n.mu.Lock()
			delete(n.mu.tombsOut, ids.Pipeline(t.Pipeline))
			n.mu.Unlock()
		}
	}
}

// applyTomb records a tombstone and removes its pipeline if it is known,
// ephemeral and not re-created since.
func (e *Engine) applyTomb(t *pb.Tombstone) {
	id := ids.Pipeline(t.Pipeline)
	e.mu.Lock()
	p := e.mu.pipes[id]
	if p != nil && (!p.def.Opts.Ephemeral || p.def.Created > t.TimeMs || p.def.IsPointToPoint() != (len(t.Peer) != 0)) {
		e.mu.Unlock()
		return // not ephemeral (refused), or re-created after this tombstone
	}
	stale, refused := e.notes.recordTomb(t, func(id ids.Pipeline) bool { return e.mu.pipes[id] != nil })
	e.mu.Unlock()
	if stale {
		return
	}
	if refused {
		e.stats.rejected.Add(1)
		return
	}
	e.notes.storeTomb(t)
	if p != nil {
		e.remove(p)
	}
}

// remove takes p out of the engine: its subscriptions end, its goroutines
// stop, and its definition, key and (persistent) history are deleted.
func (e *Engine) remove(p *pipe) {
	e.mu.Lock()
	if e.mu.pipes[p.def.ID] != p {
		e.mu.Unlock()
		return
	}
	delete(e.mu.pipes, p.def.ID)
	e.notes.forgetKey(p.def.ID)
	e.rt.dropPipe(p)
	p.removed = true
	cleaned := make(chan struct{})
	e.mu.cleaning[p.def.ID] = cleaned
	e.mu.Unlock()
	e.live.drop(p) // without Engine.mu: its subscribers' sinks may be running
	p.cancel()
	if e.cfg.OnRemoved != nil {
		d := p.def
		e.notify.Push(func() { e.cfg.OnRemoved(d) })
	}
	cleanup := func() {
		p.wg.Wait()
		e.dropFilesOf(p.def.ID)
		if e.cfg.DB == nil {
			return
		}
		for _, k := range []history.Kind{history.KindDef, history.KindSecret} {
			if err := history.DeleteSealed(e.cfg.DB, k, e.self, p.def.ID); err != nil {
				e.log.Warn("cannot delete the pipeline's records", "pipeline", p.def.Name, "err", err)
			}
		}
		if p.def.Opts.Persistent {
			if err := history.Drop(e.cfg.DB, e.self, p.def.ID); err != nil {
				e.log.Warn("cannot delete the pipeline's history", "pipeline", p.def.Name, "err", err)
			}
		}
	}
	done := func() {
		e.mu.Lock()
		delete(e.mu.cleaning, p.def.ID)
		e.mu.Unlock()
		close(cleaned)
	}
	if !e.spawn(func() { cleanup(); done() }) {
		done() // the engine is closing: the next start finds the tombstone
	}
}

// Shutdown ends ephemeral pipeline id on every node: a tombstone is
// applied here and sent to the pipeline's nodes (and, later, to every node
// that connects), which remove it and free its resources. Shutting down
// any other pipeline is ErrNotEphemeral.
func (e *Engine) Shutdown(id ids.Pipeline) error {
	p, ok := e.pipeOf(id)
	if !ok {
		return fmt.Errorf("%w %x", ErrUnknown, id[:4])
	}
	if !p.def.Opts.Ephemeral {
		return fmt.Errorf("%w (%q)", ErrNotEphemeral, p.def.Name)
	}
	t := &pb.Tombstone{Pipeline: id[:], TimeMs: max(time.Now().UnixMilli(), p.def.Created), Node: e.self[:]}
	if p.def.IsPointToPoint() {
		t.Peer = bytes.Clone(p.def.Opts.ToNode[:])
	}
	e.applyTomb(t)
	err := e.sendNotes(p.def, &pb.PipelineNotes{Tombstones: []*pb.Tombstone{t}})
	if err != nil && p.def.IsPointToPoint() {
		// The other node is away: it gets the tombstone when it is back.
		e.notes.queueTomb(t)
		return nil
	}
	return err
}
