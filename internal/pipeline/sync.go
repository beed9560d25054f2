package pipeline

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/pipesnet/pipes/internal/identity"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/kinds"
	"github.com/pipesnet/pipes/internal/wire/pb"
	"github.com/pipesnet/pipes/internal/worker"
)

// Sync of persistent pipelines. A node's history of a pipeline is, for
// each sender, that sender's packets 1..head: the heads form a version
// vector, and what a node lacks is, per sender, a range of sequence
// numbers. Nodes exchange their heads (SyncOffer) when they connect, when
// a periodic digest shows that they differ, when a packet arrives after a
// gap, and after they finish catching up; each then pulls what it lacks
// (SyncWant) in chunks, spread over every peer that has them, and the
// peers answer with signed batch segments (SyncData) read from their logs.
// Traffic is the missing packets plus a few bytes per sender, whatever
// the size of the history.
//
// For broadcast pipelines sync runs between direct peers (kind kinds.Sync);
// a point-to-point pipeline syncs between its two nodes only, sealed end
// to end and routed through any nodes between them.
//
// Sync is a part of the engine of its own (syncer): it owns one
// goroutine, the sync loop, which owns the sync state of every persistent
// pipeline (pipe.sync) and the part's own; everything else talks to it
// through do. It also owns the sync servers (serve), which answer wants
// from the logs. It takes no lock of the engine's: it reaches the engine
// through syncEnv, and the mesh through syncHost.

const (
	syncTick      = 200 * time.Millisecond
	digestEvery   = 5 * time.Second
	p2pOfferEvery = 20 * time.Second
	wantChunk     = 4096             // sequence numbers per want
	wantsPerPeer  = 4                // outstanding wants per peer
	wantTimeout   = 10 * time.Second // without an answer: ask again
	wantSettle    = 3 * time.Second  // answered: wait for the writer before asking again
	missingDelay  = 300 * time.Millisecond
	replyEvery    = 200 * time.Millisecond
	kickEvery     = time.Second
	syncDataBytes = 1 << 20 // data per SyncData message
	maxWantSpan   = 4 * wantChunk
	serveWorkers  = 2
)

// syncer is the engine's sync part.
type syncer struct {
	events   chan func()
	serve    *worker.Pool[serveReq] // wants to answer from the log (serveWant); nil on a read-only engine
	nextReq  atomic.Uint64
	lastDig  time.Time
	peersNow map[ids.Node]bool

	network  ids.Network
	certs    *identity.CertCache
	ctx      context.Context // the engine's: ends on Close
	log      *slog.Logger
	host     syncHost
	env      syncEnv
	rejected *atomic.Uint64
}

// syncEnv is what the sync part needs from the engine.
type syncEnv interface {
	pipeOf(id ids.Pipeline) (*pipe, bool)
	// persistentPipes returns the persistent pipelines whose log is open.
	persistentPipes() []*pipe
	// announce tells the other node of a point-to-point pipeline of it.
	announce(ctx context.Context, d *Def) error
	// sealOrPlain and retryBusy are the engine's (send.go).
	sealOrPlain(ctx context.Context, p2p bool, to ids.Node, sealed *pb.SealedBody, msg proto.Message,
		plain func(ctx context.Context, raw []byte) error) (func() error, error)
	retryBusy(limit time.Duration, send func() error) error
	// enqueue hands verified packets to p's writer (the persistence part).
	enqueue(p *pipe, it ingest, held bool)
	// syncChanged tells the application that p started or finished catching up.
	syncChanged(id ids.Pipeline, synchronized bool)
	// tick runs the engine's periodic work on the sync loop's tick.
	tick()
}

// syncHost is the part of the node's mesh that sync uses.
type syncHost interface {
	Peers() []ids.Node
	HPKEKey(node ids.Node) ([]byte, bool)
	SendDirect(ctx context.Context, dst ids.Node, kind uint32, payload []byte) error
}

type serveReq struct {
	p      *pipe
	peer   ids.Node
	want   *pb.SyncWant
	sealed bool
}

// syncState is one persistent pipeline's sync state, owned by syncLoop.
type syncState struct {
	peers        map[ids.Node]map[ids.Node]uint64 // peer -> sender -> head it offered
	wants        map[uint64]*want
	missingSince map[ids.Node]time.Time // by sender
	lastKick     time.Time
	lastReply    map[ids.Node]time.Time
	p2pOnline    bool
	p2pOffered   time.Time
	progress     atomic.Bool // a commit happened since the last schedule

	askedMu sync.Mutex
	asked   map[ids.Node]int // wants sent to each node, ever
}

type want struct {
	peer, sender ids.Node
	from, to     uint64
	progress     time.Time
	done         bool
}

func newSyncer(e *Engine) *syncer {
	return &syncer{events: make(chan func(), 4096), peersNow: map[ids.Node]bool{},
		network: e.cfg.Network, certs: e.certs, ctx: e.ctx, log: e.log, host: e.cfg.Host, env: e,
		rejected: &e.stats.rejected}
}

// The engine's side of syncEnv and persistEnv.

func (e *Engine) enqueue(p *pipe, it ingest, held bool) { e.logs.enqueue(p, it, held) }
func (e *Engine) syncKick(p *pipe)                      { e.syncer.kick(p) }
func (e *Engine) syncProgress(p *pipe)                  { e.syncer.progressed(p) }
func (e *Engine) tick()                                 { e.notes.sendPending() }

func (e *Engine) syncChanged(id ids.Pipeline, synchronized bool) {
	if e.cfg.OnSync != nil {
		e.notify.Push(func() { e.cfg.OnSync(id, synchronized) })
	}
}

func newSyncState() *syncState {
	return &syncState{peers: map[ids.Node]map[ids.Node]uint64{}, wants: map[uint64]*want{}, asked: map[ids.Node]int{},
		missingSince: map[ids.Node]time.Time{}, lastReply: map[ids.Node]time.Time{}}
}

// do runs f on the sync loop, or drops it if the loop is far behind
// (sync state heals: offers and digests are sent again).
func (s *syncer) do(f func()) {
	select {
	case s.events <- f:
	default:
	}
}

// syncLoop runs the sync loop, a goroutine of the engine.
func (e *Engine) syncLoop() {
	defer e.wg.Done()
	e.syncer.loop()
}

// loop owns the sync state of every persistent pipeline.
func (s *syncer) loop() {
	t := time.NewTicker(syncTick)
	defer t.Stop()
	for {
		select {
		case f := <-s.events:
			f()
		case <-t.C:
			s.tickAll()
			s.env.tick()
		case <-s.ctx.Done():
			return
		}
	}
}

// persistentPipes returns the persistent pipelines whose log is open.
func (e *Engine) persistentPipes() []*pipe {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []*pipe
	for _, p := range e.mu.pipes {
		if p.plog != nil {
			out = append(out, p)
		}
	}
	return out
}

func (s *syncer) tickAll() {
	pipes := s.env.persistentPipes()
	now := time.Now()
	digest := now.Sub(s.lastDig) >= digestEvery
	var hashes []*pb.SyncHash
	for _, p := range pipes {
		if p.def.IsPointToPoint() {
			s.p2pCheck(p, now)
		} else if digest {
			h := headsHash(p.plog.log.Heads())
			hashes = append(hashes, &pb.SyncHash{Pipeline: p.def.ID[:], Hash: h[:]})
		}
		s.schedule(p, now)
	}
	if digest {
		s.lastDig = now
		if len(hashes) > 0 {
			for _, peer := range s.host.Peers() {
				s.send(nil, peer, &pb.Sync{Body: &pb.Sync_Digest{Digest: &pb.SyncDigest{Pipelines: hashes}}})
			}
		}
	}
}

// p2pCheck announces a point-to-point pipeline and offers its heads to its
// other node when that node comes online, and offers every p2pOfferEvery
// while it is.
func (s *syncer) p2pCheck(p *pipe, now time.Time) {
	st := p.sync
	other := p.def.Opts.ToNode
	_, online := s.host.HPKEKey(other)
	if !online {
		st.p2pOnline = false
		delete(st.peers, other)
		return
	}
	if !st.p2pOnline || now.Sub(st.p2pOffered) >= p2pOfferEvery {
		if !st.p2pOnline {
			// It may have been offline when the pipeline was created:
			// tell it of the pipeline (sealed) before offering.
			if err := s.env.announce(s.ctx, p.def); err != nil {
				s.log.Debug("cannot announce the pipeline", "pipeline", p.def.Name, "err", err)
			}
		}
		st.p2pOnline, st.p2pOffered = true, now
		s.sendOffer(p, other, true)
	}
}

// headsHash hashes heads sorted by sender.
func headsHash(heads map[ids.Node]uint64) [32]byte {
	senders := make([]ids.Node, 0, len(heads))
	for s := range heads {
		senders = append(senders, s)
	}
	slices.SortFunc(senders, func(a, b ids.Node) int { return bytes.Compare(a[:], b[:]) })
	h := sha256.New()
	for _, s := range senders {
		h.Write(s[:])
		h.Write(binary.BigEndian.AppendUint64(nil, heads[s]))
	}
	return [32]byte(h.Sum(nil))
}

// peersOf returns the nodes p syncs with.
func (s *syncer) peersOf(p *pipe) []ids.Node {
	if p.def.IsPointToPoint() {
		return []ids.Node{p.def.Opts.ToNode}
	}
	return s.host.Peers()
}

func (s *syncer) sendOffer(p *pipe, to ids.Node, wantReply bool) {
	heads := p.plog.log.Heads()
	o := &pb.SyncOffer{Pipeline: p.def.ID[:], WantReply: wantReply}
	for s, h := range heads {
		o.Heads = append(o.Heads, &pb.SyncHead{Sender: bytes.Clone(s[:]), Seq: h})
	}
	s.send(p, to, &pb.Sync{Body: &pb.Sync_Offer{Offer: o}})
}

// send sends a sync message: sealed for a point-to-point pipeline,
// else directly to a peer. A data message is retried while the link is
// busy, until the engine closes or it has waited 10 s; a control message
// (digest, offer, want) is tried once, since it is repeated anyway and the
// sync loop must not wait.
func (s *syncer) send(p *pipe, to ids.Node, m *pb.Sync) error {
	limit := time.Duration(0)
	if _, data := m.Body.(*pb.Sync_Data); data {
		limit = 10 * time.Second
	}
	direct := func(ctx context.Context, raw []byte) error { return s.host.SendDirect(ctx, to, kinds.Sync, raw) }
	send, err := s.env.sealOrPlain(s.ctx, p != nil && p.def.IsPointToPoint(), to, &pb.SealedBody{Body: &pb.SealedBody_Sync{Sync: m}}, m, direct)
	if err != nil {
		return err
	}
	return s.env.retryBusy(limit, send)
}

// PeerConnected is called when a node becomes a direct peer: it gets the
// broadcast pipelines' definitions and the heads of the persistent ones.
func (e *Engine) PeerConnected(peer ids.Node) {
	e.sendDefs(peer)
	e.notes.sendTo(peer)
	e.syncer.do(func() {
		for _, p := range e.persistentPipes() {
			if !p.def.IsPointToPoint() {
				e.syncer.sendOffer(p, peer, true)
			}
		}
	})
}

// PeerGone is called when a direct peer is lost: its offers and the
// chunks asked of it are forgotten, and asked of others.
func (e *Engine) PeerGone(peer ids.Node) {
	e.syncer.do(func() {
		for _, p := range e.persistentPipes() {
			if p.def.IsPointToPoint() {
				continue
			}
			delete(p.sync.peers, peer)
			for id, w := range p.sync.wants {
				if w.peer == peer {
					delete(p.sync.wants, id)
				}
			}
		}
	})
}

// kick asks the peers for their heads of p: a packet arrived after a
// gap, or could not be logged.
func (s *syncer) kick(p *pipe) {
	s.do(func() {
		if time.Since(p.sync.lastKick) < kickEvery {
			return
		}
		p.sync.lastKick = time.Now()
		for _, peer := range s.peersOf(p) {
			s.sendOffer(p, peer, true)
		}
	})
}

// progressed tells the sync loop that p's log grew.
func (s *syncer) progressed(p *pipe) {
	if p.sync.progress.CompareAndSwap(false, true) {
		s.do(func() {
			p.sync.progress.Store(false)
			s.schedule(p, time.Now())
		})
	}
}

// SyncSources returns how many sync requests of persistent pipeline id
// this node has sent to each node.
func (e *Engine) SyncSources(id ids.Pipeline) map[ids.Node]int {
	p, _ := e.pipeOf(id)
	if p == nil || p.sync == nil {
		return nil
	}
	p.sync.askedMu.Lock()
	defer p.sync.askedMu.Unlock()
	out := make(map[ids.Node]int, len(p.sync.asked))
	for k, v := range p.sync.asked {
		out[k] = v
	}
	return out
}

// Synchronizing reports whether persistent pipeline id is catching up.
func (e *Engine) Synchronizing(id ids.Pipeline) bool {
	p, _ := e.pipeOf(id)
	return p != nil && p.syncing.Load()
}

// schedule expires finished or stalled wants and asks for what p lacks,
// spread over the peers that have it.
func (s *syncer) schedule(p *pipe, now time.Time) {
	st := p.sync
	heads := p.plog.log.Heads()
	for id, w := range st.wants {
		switch {
		case heads[w.sender] >= w.to:
			delete(st.wants, id)
		case !w.done && now.Sub(w.progress) > wantTimeout, w.done && now.Sub(w.progress) > wantSettle:
			delete(st.wants, id)
		}
	}
	load := map[ids.Node]int{}
	for _, w := range st.wants {
		if !w.done {
			load[w.peer]++
		}
	}
	avail := map[ids.Node]uint64{}
	for _, hs := range st.peers {
		for s, h := range hs {
			avail[s] = max(avail[s], h)
		}
	}
	missing := false
	for s := range st.missingSince {
		if avail[s] <= heads[s] {
			delete(st.missingSince, s)
		}
	}
	for sender, top := range avail {
		if top <= heads[sender] {
			continue
		}
		since, ok := st.missingSince[sender]
		if !ok {
			st.missingSince[sender] = now
			since = now
		}
		if now.Sub(since) < missingDelay && top-heads[sender] < wantChunk/4 {
			continue // a short, recent gap: it may be on its way as live traffic
		}
		missing = true
		pos := heads[sender] + 1
		for pos <= top {
			if end, covered := st.covered(sender, pos); covered {
				pos = end + 1
				continue
			}
			end := min(pos+wantChunk-1, top)
			for _, w := range st.wants {
				if w.sender == sender && w.from > pos && w.from <= end {
					end = w.from - 1
				}
			}
			peer, ok := st.choosePeer(sender, pos, load)
			if !ok {
				break
			}
			end = min(end, st.peers[peer][sender])
			id := s.nextReq.Add(1)
			st.wants[id] = &want{peer: peer, sender: sender, from: pos, to: end, progress: now}
			load[peer]++
			st.askedMu.Lock()
			st.asked[peer]++
			st.askedMu.Unlock()
			s.log.Debug("sync want", "pipeline", p.def.Name, "of", fmt.Sprintf("%x", peer[:4]), "sender", fmt.Sprintf("%x", sender[:4]), "from", pos, "to", end)
			s.send(p, peer, &pb.Sync{Body: &pb.Sync_Want{Want: &pb.SyncWant{
				Pipeline: p.def.ID[:], Sender: bytes.Clone(sender[:]), From: pos, To: end, Request: id}}})
			pos = end + 1
		}
	}
	syncing := missing || len(st.wants) > 0
	if syncing != p.syncing.Load() { // written only here, on the sync loop
		p.syncing.Store(syncing)
		s.env.syncChanged(p.def.ID, !syncing)
		if !syncing {
			// Caught up: let the others pull what came through this node,
			// and wake the writer to index what it logged in bulk.
			for _, peer := range s.peersOf(p) {
				s.sendOffer(p, peer, false)
			}
			if p.plog.log.Unindexed() > 0 {
				s.env.enqueue(p, ingest{}, false)
			}
		}
	}
}

// covered reports whether a want covers sender's seq, and where it ends.
func (st *syncState) covered(sender ids.Node, seq uint64) (uint64, bool) {
	for _, w := range st.wants {
		if w.sender == sender && w.from <= seq && seq <= w.to {
			return w.to, true
		}
	}
	return 0, false
}

// choosePeer picks the least loaded peer that has sender's packet seq and
// can take another want.
func (st *syncState) choosePeer(sender ids.Node, seq uint64, load map[ids.Node]int) (ids.Node, bool) {
	var best ids.Node
	found := false
	for peer, hs := range st.peers {
		if hs[sender] < seq || load[peer] >= wantsPerPeer {
			continue
		}
		if !found || load[peer] < load[best] || (load[peer] == load[best] && bytes.Compare(peer[:], best[:]) < 0) {
			best, found = peer, true
		}
	}
	return best, found
}

// handle handles a sync message from src (on the pipelines group's worker).
// sealed tells whether it came end-to-end encrypted.
func (s *syncer) handle(src ids.Node, m *pb.Sync, sealed bool) error {
	var pipeID []byte
	switch b := m.Body.(type) {
	case *pb.Sync_Digest:
		if sealed || b.Digest == nil {
			return errors.New("pipeline: malformed sync digest")
		}
		s.do(func() { s.onDigest(src, b.Digest) })
		return nil
	case *pb.Sync_Offer:
		if b.Offer != nil {
			pipeID = b.Offer.Pipeline
		}
	case *pb.Sync_Want:
		if b.Want != nil {
			pipeID = b.Want.Pipeline
		}
	case *pb.Sync_Data:
		if b.Data != nil {
			pipeID = b.Data.Pipeline
		}
	}
	if len(pipeID) != 32 {
		return errors.New("pipeline: malformed sync message")
	}
	p, _ := s.env.pipeOf(ids.Pipeline(pipeID))
	if p == nil || p.plog == nil {
		return fmt.Errorf("pipeline: sync of unknown pipeline %x", pipeID[:4])
	}
	if p.def.IsPointToPoint() != sealed || (sealed && src != p.def.Opts.ToNode) {
		return errors.New("pipeline: sync message on the wrong path")
	}
	switch b := m.Body.(type) {
	case *pb.Sync_Offer:
		heads := map[ids.Node]uint64{}
		for _, h := range b.Offer.Heads {
			if len(h.Sender) != 32 {
				return errors.New("pipeline: malformed sync offer")
			}
			heads[ids.Node(h.Sender)] = h.Seq
		}
		wantReply := b.Offer.WantReply
		s.do(func() { s.onOffer(p, src, heads, wantReply) })
	case *pb.Sync_Want:
		if len(b.Want.Sender) != 32 || b.Want.From == 0 || b.Want.To < b.Want.From || b.Want.To-b.Want.From >= maxWantSpan {
			return errors.New("pipeline: malformed sync want")
		}
		// Dropped if the servers are busy: the asker asks again later.
		s.serve.TryPut(serveReq{p: p, peer: src, want: b.Want, sealed: sealed})
	case *pb.Sync_Data:
		return s.onData(p, src, b.Data)
	}
	return nil
}

func (s *syncer) onDigest(src ids.Node, d *pb.SyncDigest) {
	for _, h := range d.Pipelines {
		if len(h.Pipeline) != 32 {
			return
		}
		p, _ := s.env.pipeOf(ids.Pipeline(h.Pipeline))
		if p == nil || p.plog == nil || p.def.IsPointToPoint() {
			continue
		}
		mine := headsHash(p.plog.log.Heads())
		if !bytes.Equal(mine[:], h.Hash) {
			s.sendOffer(p, src, true)
		}
	}
}

func (s *syncer) onOffer(p *pipe, src ids.Node, heads map[ids.Node]uint64, wantReply bool) {
	s.log.Debug("sync offer", "pipeline", p.def.Name, "from", fmt.Sprintf("%x", src[:4]), "senders", len(heads), "reply", wantReply)
	st := p.sync
	st.peers[src] = heads
	mine := p.plog.log.Heads()
	ahead := false
	for s, h := range mine {
		if h > heads[s] {
			ahead = true
			break
		}
	}
	if (wantReply || ahead) && time.Since(st.lastReply[src]) >= replyEvery {
		st.lastReply[src] = time.Now()
		s.sendOffer(p, src, false)
	}
	s.schedule(p, time.Now())
}
