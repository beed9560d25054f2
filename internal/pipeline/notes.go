package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/pipesnet/pipes/internal/history"
	"github.com/pipesnet/pipes/internal/keys"
	"github.com/pipesnet/pipes/internal/kinds"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

// Bounds of notes.
const (
	maxNotes         = 4096 // proofs or tombstones in one message
	maxPendingProofs = 4096 // proofs kept for pipelines not defined yet
	maxUnknownTombs  = 4096 // tombstones kept for pipelines this node does not know
	// maxFuture is how far ahead of the local clock a tombstone's time or
	// a definition's creation time may be (clocks differ; a time far
	// ahead would block a pipeline for that long).
	maxFuture = 10 * time.Minute
)

// secretsKey is the at-rest key of stored pipeline keys.
func (e *Engine) secretsKey() [32]byte {
	return history.DeriveKey(e.cfg.StoreKey, keys.PipelineKeys, nil)
}

// loadNotes restores stored pipeline keys and tombstones.
func (e *Engine) loadNotes() {
	keys, err := history.LoadSealed(e.cfg.DB, history.KindSecret, e.self, e.secretsKey())
	if err != nil {
		e.log.Error("cannot load stored pipeline keys", "err", err)
	}
	tombs, err := history.LoadSealed(e.cfg.DB, history.KindTomb, e.self, e.defsKey())
	if err != nil {
		e.log.Error("cannot load stored tombstones", "err", err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for id, raw := range keys {
		if len(raw) == 32 {
			e.mu.secrets[id] = [32]byte(raw)
		}
	}
	for id, raw := range tombs {
		var t pb.Tombstone
		if proto.Unmarshal(raw, &t) == nil {
			e.mu.tombs[id] = &t
			if len(t.Peer) == 32 && [32]byte(t.Node) == e.self {
				e.mu.tombsOut[id] = &t // the other node may not have it: send it again
			}
		}
	}
}

// storedKey returns the stored key of pipeline id.
func (e *Engine) storedKey(id [32]byte) ([32]byte, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	k, ok := e.mu.secrets[id]
	return k, ok
}

// setKey gives this node the key of encrypted pipeline p: it is stored
// (sealed), and the node's proof of possession recorded and, if announce,
// sent.
func (e *Engine) setKey(p *pipe, k *pipeKey, announce bool) {
	had := p.key.Swap(k) != nil
	e.mu.Lock()
	_, stored := e.mu.secrets[p.def.ID]
	e.mu.secrets[p.def.ID] = k.raw
	p.holders[e.self] = nil
	e.mu.Unlock()
	if !stored && e.cfg.DB != nil {
		if err := history.SaveSealed(e.cfg.DB, history.KindSecret, e.self, p.def.ID, e.secretsKey(), k.raw[:]); err != nil {
			e.log.Warn("cannot store the pipeline key", "pipeline", p.def.Name, "err", err)
		}
	}
	if announce && !had {
		e.announceProof(p)
	}
}

// ownProof returns this node's proof for p (nil without the key).
func (e *Engine) ownProof(p *pipe) *pb.SecretProof {
	k := p.key.Load()
	if k == nil {
		return nil
	}
	return &pb.SecretProof{Pipeline: p.def.ID[:], Node: e.self[:], Signature: k.proveFor(p.def.ID, e.self)}
}

// announceProof tells the pipeline's nodes that this node holds its secret.
func (e *Engine) announceProof(p *pipe) {
	pr := e.ownProof(p)
	if pr == nil {
		return
	}
	if err := e.sendNotes(p.def, &pb.PipelineNotes{Proofs: []*pb.SecretProof{pr}}); err != nil {
		e.log.Debug("cannot announce the secret proof", "pipeline", p.def.Name, "err", err)
	}
}

// sendNotes sends notes about d to d's nodes: sealed to the other node of
// a point-to-point pipeline, else broadcast.
func (e *Engine) sendNotes(d *Def, n *pb.PipelineNotes) error {
	ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
	defer cancel()
	send, err := e.sealOrPlain(ctx, d.IsPointToPoint(), d.other(e.self), &pb.SealedBody{Body: &pb.SealedBody_Notes{Notes: n}}, n, e.broadcastAs(kinds.Notes))
	if err != nil {
		return err
	}
	return send()
}

// sendNotesTo sends a new peer what this node knows of broadcast
// pipelines' secret holders and of shut down pipelines.
func (e *Engine) sendNotesTo(peer [32]byte) {
	var n pb.PipelineNotes
	e.mu.Lock()
	for _, t := range e.mu.tombs {
		if len(t.Peer) == 0 { // point-to-point ones go sealed, to their other node only
			n.Tombstones = append(n.Tombstones, t)
		}
	}
	for _, p := range e.mu.pipes {
		if p.def.IsPointToPoint() || !p.def.Opts.Encrypted {
			continue
		}
		for node, sig := range p.holders {
			if sig != nil {
				n.Proofs = append(n.Proofs, &pb.SecretProof{Pipeline: p.def.ID[:], Node: node[:], Signature: sig})
			}
		}
	}
	e.mu.Unlock()
	// This node's own proofs are not in holders with a signature: add them.
	for _, d := range e.Pipelines() {
		if p, ok := e.pipeOf(d.ID); ok && d.Opts.Encrypted && !d.IsPointToPoint() {
			if pr := e.ownProof(p); pr != nil {
				n.Proofs = append(n.Proofs, pr)
			}
		}
	}
	for len(n.Proofs) > 0 || len(n.Tombstones) > 0 {
		var part pb.PipelineNotes
		k := min(len(n.Proofs), maxNotes)
		part.Proofs, n.Proofs = n.Proofs[:k], n.Proofs[k:]
		k = min(len(n.Tombstones), maxNotes)
		part.Tombstones, n.Tombstones = n.Tombstones[:k], n.Tombstones[k:]
		raw, err := marshal(&part)
		if err != nil {
			return
		}
		if err := e.cfg.Host.Send(e.ctx, peer, kinds.Notes, raw); err != nil {
			e.log.Debug("cannot send pipeline notes", "peer", fmt.Sprintf("%x", peer[:4]), "err", err)
			return
		}
	}
}

// mustMarshal encodes a message that was just decoded.
func mustMarshal(m proto.Message) []byte {
	b, _ := marshal(m)
	return b
}

// parseNotes decodes and bounds a PipelineNotes message.
func parseNotes(raw []byte) (*pb.PipelineNotes, error) {
	var n pb.PipelineNotes
	if err := proto.Unmarshal(raw, &n); err != nil {
		return nil, err
	}
	if len(n.Proofs) > maxNotes || len(n.Tombstones) > maxNotes {
		return nil, errors.New("pipeline: too many notes in one message")
	}
	for _, p := range n.Proofs {
		if len(p.Pipeline) != 32 || len(p.Node) != 32 || len(p.Signature) != 64 {
			return nil, errors.New("pipeline: malformed secret proof")
		}
	}
	future := time.Now().Add(maxFuture).UnixMilli()
	for _, t := range n.Tombstones {
		if len(t.Pipeline) != 32 || len(t.Node) != 32 || t.TimeMs <= 0 || t.TimeMs > future || len(t.Peer) != 0 && len(t.Peer) != 32 {
			return nil, errors.New("pipeline: malformed tombstone, or one from the future")
		}
	}
	return &n, nil
}

// handleNotes applies notes that arrived from src; sealed reports whether
// they came end to end encrypted from src (point-to-point pipelines).
func (e *Engine) handleNotes(src [32]byte, n *pb.PipelineNotes, sealed bool) {
	for _, pr := range n.Proofs {
		id := [32]byte(pr.Pipeline)
		p, ok := e.pipeOf(id)
		if !ok {
			e.mu.Lock()
			if e.mu.nproofs < maxPendingProofs {
				e.mu.pendingProofs[id] = append(e.mu.pendingProofs[id], pr)
				e.mu.nproofs++
			}
			e.mu.Unlock()
			continue
		}
		e.addProof(p, pr)
	}
	for _, t := range n.Tombstones {
		id := [32]byte(t.Pipeline)
		if len(t.Peer) != 0 && (!sealed || [32]byte(t.Peer) != e.self || [32]byte(t.Node) != src) {
			continue // a point-to-point tombstone comes sealed from the other node
		}
		if p, ok := e.pipeOf(id); ok && p.def.IsPointToPoint() && (len(t.Peer) == 0 || src != p.def.Opts.ToNode) {
			continue // only the other node can end a point-to-point pipeline
		}
		e.applyTomb(t)
	}
}

// addProof records a proof that checks against p's secret key.
func (e *Engine) addProof(p *pipe, pr *pb.SecretProof) {
	node := [32]byte(pr.Node)
	e.mu.Lock()
	known := bytes.Equal(p.holders[node], pr.Signature)
	e.mu.Unlock()
	if known {
		return // checked before: proofs repeat as nodes connect
	}
	if !p.def.Opts.Encrypted || !checkProof(p.def, node, pr.Signature) {
		e.stats.rejected.Add(1)
		return
	}
	e.mu.Lock()
	if node != e.self {
		p.holders[node] = slices.Clone(pr.Signature)
	}
	e.mu.Unlock()
}

// applyTomb records a tombstone and removes its pipeline if it is known,
// ephemeral and not re-created since.
func (e *Engine) applyTomb(t *pb.Tombstone) {
	id := [32]byte(t.Pipeline)
	e.mu.Lock()
	if old := e.mu.tombs[id]; old != nil && old.TimeMs >= t.TimeMs {
		e.mu.Unlock()
		return
	}
	p := e.mu.pipes[id]
	if p != nil && (!p.def.Opts.Ephemeral || p.def.Created > t.TimeMs || p.def.IsPointToPoint() != (len(t.Peer) != 0)) {
		e.mu.Unlock()
		return // not ephemeral (refused), or re-created after this tombstone
	}
	if p == nil && e.mu.tombs[id] == nil {
		unknown := 0
		for tid := range e.mu.tombs {
			if e.mu.pipes[tid] == nil {
				unknown++
			}
		}
		if unknown >= maxUnknownTombs {
			e.mu.Unlock()
			e.stats.rejected.Add(1)
			return
		}
	}
	e.mu.tombs[id] = t
	e.mu.Unlock()
	if e.cfg.DB != nil {
		if raw, err := marshal(t); err == nil {
			if err := history.SaveSealed(e.cfg.DB, history.KindTomb, e.self, id, e.defsKey(), raw); err != nil {
				e.log.Warn("cannot store a tombstone", "err", err)
			}
		}
	}
	if p != nil {
		e.remove(p)
	}
}

// forgetTomb deletes the stored tombstone of a pipeline created again.
func (e *Engine) forgetTomb(id [32]byte) {
	if e.cfg.DB != nil {
		if err := history.DeleteSealed(e.cfg.DB, history.KindTomb, e.self, id); err != nil {
			e.log.Warn("cannot delete a tombstone", "err", err)
		}
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
	delete(e.mu.secrets, p.def.ID)
	if e.mu.realtime[[8]byte(p.def.ID[:8])] == p {
		delete(e.mu.realtime, [8]byte(p.def.ID[:8]))
	}
	p.removed = true
	for s := range p.subs {
		s.end()
	}
	p.subs = nil
	cleaned := make(chan struct{})
	e.mu.cleaning[p.def.ID] = cleaned
	e.mu.Unlock()
	p.cancel()
	if e.cfg.OnRemoved != nil {
		d := p.def
		e.notes.Push(func() { e.cfg.OnRemoved(d) })
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
func (e *Engine) Shutdown(id [32]byte) error {
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
		e.mu.Lock()
		e.mu.tombsOut[id] = t
		e.mu.Unlock()
		return nil
	}
	return err
}

// sendPendingTombs delivers this node's point-to-point tombstones to
// their other nodes once those are online (on the sync loop's tick).
func (e *Engine) sendPendingTombs() {
	e.mu.Lock()
	var pending []*pb.Tombstone
	for _, t := range e.mu.tombsOut {
		pending = append(pending, t)
	}
	e.mu.Unlock()
	for _, t := range pending {
		peer := [32]byte(t.Peer)
		if _, online := e.cfg.Host.HPKEKey(peer); !online {
			continue
		}
		body, err := marshal(&pb.SealedBody{Body: &pb.SealedBody_Notes{Notes: &pb.PipelineNotes{Tombstones: []*pb.Tombstone{t}}}})
		if err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(e.ctx, 5*time.Second)
		err = e.sendSealed(ctx, peer, body)
		cancel()
		if err == nil {
			e.mu.Lock()
			delete(e.mu.tombsOut, [32]byte(t.Pipeline))
			e.mu.Unlock()
		}
	}
}

// SetSecret gives this node the secret of encrypted pipeline id. It
// reports false if the secret is not the pipeline's.
func (e *Engine) SetSecret(id [32]byte, secret []byte) (bool, error) {
	p, ok := e.pipeOf(id)
	if !ok {
		return false, fmt.Errorf("%w %x", ErrUnknown, id[:4])
	}
	if !p.def.Opts.Encrypted {
		return false, fmt.Errorf("pipeline: %q is not encrypted", p.def.Name)
	}
	k, ok := p.def.keyFor(e.cfg.Network, secret)
	if !ok {
		return false, nil
	}
	e.setKey(p, k, true)
	return true, nil
}

// HasSecret reports whether this node holds the secret of pipeline id.
func (e *Engine) HasSecret(id [32]byte) bool {
	p, ok := e.pipeOf(id)
	return ok && p.key.Load() != nil
}

// SecretHolders returns the nodes that proved they hold the secret of
// pipeline id (this node included if it does), sorted.
func (e *Engine) SecretHolders(id [32]byte) [][32]byte {
	e.mu.Lock()
	var out [][32]byte
	if p := e.mu.pipes[id]; p != nil {
		for n := range p.holders {
			out = append(out, n)
		}
	}
	e.mu.Unlock()
	slices.SortFunc(out, func(a, b [32]byte) int { return slices.Compare(a[:], b[:]) })
	return out
}

// ReadData returns pk's data: decrypted on an encrypted pipeline
// (ErrNoSecret without the key, ErrCannotRead if it does not decrypt).
func (e *Engine) ReadData(pk *Packet) ([]byte, error) {
	p, ok := e.pipeOf(pk.Pipeline)
	if !ok {
		return nil, fmt.Errorf("%w %x", ErrUnknown, pk.Pipeline[:4])
	}
	if !p.def.Opts.Encrypted {
		return pk.Data, nil
	}
	k := p.key.Load()
	if k == nil {
		return nil, fmt.Errorf("%w (%q)", ErrNoSecret, p.def.Name)
	}
	return k.open(pk.Pipeline, pk.Sender, pk.Data)
}
