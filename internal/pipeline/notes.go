package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/pipesnet/pipes/internal/history"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/keys"
	"github.com/pipesnet/pipes/internal/kinds"
	"github.com/pipesnet/pipes/internal/store"
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

// notesPart is the engine's secrets-and-tombstones part, named after the
// PipelineNotes messages that carry proofs of possession of a pipeline's
// secret and tombstones of shut down pipelines. It owns, under its own
// lock: the stored pipeline keys, the tombstones (and this node's
// point-to-point ones not delivered yet), the proofs that wait for their
// pipeline's definition, and every pipeline's secret holders
// (pipe.holders). It stores keys and tombstones itself (sealed records of
// package history). It has no goroutine of its own: it runs on the notes
// handler group's worker, the sync loop's tick (sendPending), and the
// callers of Create, SetSecret and Shutdown.
//
// Lock order: Engine.mu, then notesPart.mu, never the other way. The
// part's lock is a leaf: the part calls its env, its host and the store
// only without it; the engine calls the part's state methods (tomb,
// dropTomb, recordTomb, takeProofs, forgetKey) with its own lock held where
// a decision spans both (a pipeline and its tombstone).
type notesPart struct {
	self       ids.Node
	ctx        context.Context // the engine's: ends on Close
	log        *slog.Logger
	env        notesEnv
	host       notesHost
	db         *store.DB // nil: nothing is stored
	secretsKey [32]byte  // at-rest key of the stored pipeline keys
	tombsKey   [32]byte  // at-rest key of the stored tombstones (the definitions')
	rejected   *atomic.Uint64

	mu struct {
		sync.Mutex
		tombs         map[ids.Pipeline]*pb.Tombstone     // shut down ephemeral pipelines
		tombsOut      map[ids.Pipeline]*pb.Tombstone     // this node's point-to-point tombstones not yet delivered
		secrets       map[ids.Pipeline][32]byte          // stored pipeline keys, loaded at start
		pendingProofs map[ids.Pipeline][]*pb.SecretProof // proofs for pipelines not yet defined
		nproofs       int
	}
}

// notesEnv is what the notes part needs from the engine. The part calls
// it only without its own lock.
type notesEnv interface {
	// pipeOf returns the state of a known pipeline.
	pipeOf(id ids.Pipeline) (*pipe, bool)
	// pipesNow returns the known pipelines.
	pipesNow() []*pipe
	// applyTomb records a tombstone and removes its pipeline (tombs.go).
	applyTomb(t *pb.Tombstone)
	// sendNotes sends notes about d to d's nodes.
	sendNotes(d *Def, n *pb.PipelineNotes) error
	// sendSealed seals body end to end for dst and routes it there.
	sendSealed(ctx context.Context, dst ids.Node, body []byte) error
}

// notesHost is the part of the node's mesh the notes part uses.
type notesHost interface {
	Send(ctx context.Context, dst ids.Node, kind uint32, payload []byte) error
	HPKEKey(node ids.Node) ([]byte, bool)
}

func newNotesPart(e *Engine) *notesPart {
	n := &notesPart{self: e.self, ctx: e.ctx, log: e.log, env: e, host: e.cfg.Host, db: e.cfg.DB,
		secretsKey: history.DeriveKey(e.cfg.StoreKey, keys.PipelineKeys, nil), tombsKey: e.defsKey(),
		rejected: &e.stats.rejected}
	return n.init()
}

// init makes n's maps.
func (n *notesPart) init() *notesPart {
	n.mu.tombs = map[ids.Pipeline]*pb.Tombstone{}
	n.mu.tombsOut = map[ids.Pipeline]*pb.Tombstone{}
	n.mu.secrets = map[ids.Pipeline][32]byte{}
	n.mu.pendingProofs = map[ids.Pipeline][]*pb.SecretProof{}
	return n
}

// pipesNow returns the known pipelines (for the notes part).
func (e *Engine) pipesNow() []*pipe {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]*pipe, 0, len(e.mu.pipes))
	for _, p := range e.mu.pipes {
		out = append(out, p)
	}
	return out
}

// load restores stored pipeline keys and tombstones.
func (n *notesPart) load() {
	if n.db == nil {
		return
	}
	keys, err := history.LoadSealed[ids.Pipeline](n.db, history.KindSecret, n.self, n.secretsKey)
	if err != nil {
		n.log.Error("cannot load stored pipeline keys", "err", err)
	}
	tombs, err := history.LoadSealed[ids.Pipeline](n.db, history.KindTomb, n.self, n.tombsKey)
	if err != nil {
		n.log.Error("cannot load stored tombstones", "err", err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for id, raw := range keys {
		if len(raw) == 32 {
			n.mu.secrets[id] = [32]byte(raw)
		}
	}
	for id, raw := range tombs {
		var t pb.Tombstone
		if proto.Unmarshal(raw, &t) == nil {
			n.mu.tombs[id] = &t
			if len(t.Peer) == 32 && ids.Node(t.Node) == n.self {
				n.mu.tombsOut[id] = &t // the other node may not have it: send it again
			}
		}
	}
}

// storedKey returns the stored key of pipeline id.
func (n *notesPart) storedKey(id ids.Pipeline) ([32]byte, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	k, ok := n.mu.secrets[id]
	return k, ok
}

// forgetKey forgets the key of a removed pipeline (its record is deleted
// with the pipeline's others).
func (n *notesPart) forgetKey(id ids.Pipeline) {
	n.mu.Lock()
	delete(n.mu.secrets, id)
	n.mu.Unlock()
}

// setKey gives this node the key of encrypted pipeline p: it is stored
// (sealed), and the node's proof of possession recorded and, if announce,
// sent.
func (n *notesPart) setKey(p *pipe, k *pipeKey, announce bool) {
	had := p.key.Swap(k) != nil
	n.mu.Lock()
	_, stored := n.mu.secrets[p.def.ID]
	n.mu.secrets[p.def.ID] = k.raw
	p.holders[n.self] = nil
	n.mu.Unlock()
	if !stored && n.db != nil {
		if err := history.SaveSealed(n.db, history.KindSecret, n.self, p.def.ID, n.secretsKey, k.raw[:]); err != nil {
			n.log.Warn("cannot store the pipeline key", "pipeline", p.def.Name, "err", err)
		}
	}
	if announce && !had {
		n.announceProof(p)
	}
}

// ownProof returns this node's proof for p (nil without the key).
func (n *notesPart) ownProof(p *pipe) *pb.SecretProof {
	k := p.key.Load()
	if k == nil {
		return nil
	}
	return &pb.SecretProof{Pipeline: p.def.ID[:], Node: n.self[:], Signature: k.proveFor(p.def.ID, n.self)}
}

// announceProof tells the pipeline's nodes that this node holds its secret.
func (n *notesPart) announceProof(p *pipe) {
	pr := n.ownProof(p)
	if pr == nil {
		return
	}
	if err := n.env.sendNotes(p.def, &pb.PipelineNotes{Proofs: []*pb.SecretProof{pr}}); err != nil {
		n.log.Debug("cannot announce the secret proof", "pipeline", p.def.Name, "err", err)
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

// sendTo sends a new peer what this node knows of broadcast pipelines'
// secret holders and of shut down pipelines.
func (n *notesPart) sendTo(peer ids.Node) {
	var out pb.PipelineNotes
	pipes := n.env.pipesNow()
	n.mu.Lock()
	for _, t := range n.mu.tombs {
		if len(t.Peer) == 0 { // point-to-point ones go sealed, to their other node only
			out.Tombstones = append(out.Tombstones, t)
		}
	}
	for _, p := range pipes {
		if p.def.IsPointToPoint() || !p.def.Opts.Encrypted {
			continue
		}
		for node, sig := range p.holders {
			if sig != nil {
				out.Proofs = append(out.Proofs, &pb.SecretProof{Pipeline: p.def.ID[:], Node: node[:], Signature: sig})
			}
		}
	}
	n.mu.Unlock()
	// This node's own proofs are not in holders with a signature: add them.
	for _, p := range pipes {
		if p.def.Opts.Encrypted && !p.def.IsPointToPoint() {
			if pr := n.ownProof(p); pr != nil {
				out.Proofs = append(out.Proofs, pr)
			}
		}
	}
	for len(out.Proofs) > 0 || len(out.Tombstones) > 0 {
		var part pb.PipelineNotes
		k := min(len(out.Proofs), maxNotes)
		part.Proofs, out.Proofs = out.Proofs[:k], out.Proofs[k:]
		k = min(len(out.Tombstones), maxNotes)
		part.Tombstones, out.Tombstones = out.Tombstones[:k], out.Tombstones[k:]
		raw, err := marshal(&part)
		if err != nil {
			return
		}
		if err := n.host.Send(n.ctx, peer, kinds.Notes, raw); err != nil {
			n.log.Debug("cannot send pipeline notes", "peer", fmt.Sprintf("%x", peer[:4]), "err", err)
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

// handle applies notes that arrived from src; sealed reports whether
// they came end to end encrypted from src (point-to-point pipelines).
func (n *notesPart) handle(src ids.Node, in *pb.PipelineNotes, sealed bool) {
	for _, pr := range in.Proofs {
		id := ids.Pipeline(pr.Pipeline)
		p, ok := n.env.pipeOf(id)
		if !ok {
			n.mu.Lock()
			if n.mu.nproofs < maxPendingProofs {
				n.mu.pendingProofs[id] = append(n.mu.pendingProofs[id], pr)
				n.mu.nproofs++
			}
			n.mu.Unlock()
			continue
		}
		n.addProof(p, pr)
	}
	for _, t := range in.Tombstones {
		id := ids.Pipeline(t.Pipeline)
		if len(t.Peer) != 0 && (!sealed || ids.Node(t.Peer) != n.self || ids.Node(t.Node) != src) {
			continue // a point-to-point tombstone comes sealed from the other node
		}
		if p, ok := n.env.pipeOf(id); ok && p.def.IsPointToPoint() && (len(t.Peer) == 0 || src != p.def.Opts.ToNode) {
			continue // only the other node can end a point-to-point pipeline
		}
		n.env.applyTomb(t)
	}
}

// takeProofs returns and forgets the proofs that waited for pipeline id
// (the engine calls it, under its lock, as id becomes known).
func (n *notesPart) takeProofs(id ids.Pipeline) []*pb.SecretProof {
	n.mu.Lock()
	defer n.mu.Unlock()
	proofs := n.mu.pendingProofs[id]
	delete(n.mu.pendingProofs, id)
	n.mu.nproofs -= len(proofs)
	return proofs
}

// addProof records a proof that checks against p's secret key.
func (n *notesPart) addProof(p *pipe, pr *pb.SecretProof) {
	node := ids.Node(pr.Node)
	n.mu.Lock()
	known := bytes.Equal(p.holders[node], pr.Signature)
	n.mu.Unlock()
	if known {
		return // checked before: proofs repeat as nodes connect
	}
	if !p.def.Opts.Encrypted || !checkProof(p.def, node, pr.Signature) {
		n.rejected.Add(1)
		return
	}
	n.mu.Lock()
	if node != n.self {
		p.holders[node] = slices.Clone(pr.Signature)
	}
	n.mu.Unlock()
}

// holdersOf returns the nodes that proved they hold p's secret, sorted.
func (n *notesPart) holdersOf(p *pipe) []ids.Node {
	n.mu.Lock()
	var out []ids.Node
	for node := range p.holders {
		out = append(out, node)
	}
	n.mu.Unlock()
	slices.SortFunc(out, func(a, b ids.Node) int { return slices.Compare(a[:], b[:]) })
	return out
}
