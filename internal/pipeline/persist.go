package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/proto"

	"github.com/pipesnet/pipes/internal/history"
	"github.com/pipesnet/pipes/internal/identity"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/keys"
	"github.com/pipesnet/pipes/internal/store"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

// Persistent pipelines. Every packet goes through the pipeline's writer
// goroutine, which logs it (history.Log: synced, encrypted at rest) before
// anyone sees it:
//
//   - a local Put waits for its packet to be logged, so that Put returning
//     nil means the packet is durable; the writer signs the packets it
//     logged together as one batch and hands the batch to the pipeline's
//     sender, which broadcasts it (or sends it to the other node);
//   - received packets (live batches, or sync segments) are logged in each
//     sender's sequence order: a packet after a gap waits in memory
//     (bounded) until the gap is filled, by live traffic or by sync.
//
// Subscribers and listeners read the log (Follow), so a slow one never
// loses a packet; they are woken after each commit.

// maxWaiting bounds the received packets of one pipeline kept while an
// earlier packet of their sender is missing. Beyond it they are dropped:
// sync fetches them again once the gap is filled.
const maxWaiting = 65536

// maxWaitingBytes bounds their data, and maxWaitingPerSender how many one
// sender may hold, so that one sender cannot take the budget of all.
const (
	maxWaitingBytes     = 64 << 20
	maxWaitingPerSender = 16384
)

// groupPackets and groupBytes bound what the writer logs in one commit
// (one fsync). Local Puts are signed as one batch per commit, so at most
// maxBatchPackets of them go in one.
const (
	groupPackets = 8 * maxBatchPackets
	groupBytes   = 4 * maxBatchBytes
)

// persist is the engine's persistence part. It owns each persistent
// pipeline's log state (pipe.plog: the history, the writer's queues, the
// packets waiting for a gap) and its goroutines: the pipeline's writer
// (writer.go), which logs, and its batch sender, which sends what the
// writer signed, both started on the first packet; and the readers that
// Follow starts. It has no lock over pipelines: a plog's queues and commit
// signal have their own (leaves; nothing is called while they are held),
// and what waits for a gap belongs to the writer goroutine. It reaches the
// rest of the engine through persistEnv, never under a lock of its own.
type persist struct {
	self     ids.Node
	key      *identity.KeyPair // signs the local Puts' batches
	cert     *identity.Cert    // travels with them
	db       *store.DB
	storeKey [32]byte
	log      *slog.Logger
	clock    *hlcClock
	gate     func(pipe ids.Pipeline) // Config.testWriterGate
	env      persistEnv

	sent, delivered, dropped *atomic.Uint64 // the engine's counters
}

// persistEnv is what the persistence part needs from the engine.
type persistEnv interface {
	// spawnPipe runs f on a goroutine of pipeline p, unless the engine is
	// closed or p removed.
	spawnPipe(p *pipe, f func()) bool
	// pipeErr is the error of an operation on p ended because p's
	// goroutines stopped.
	pipeErr() error
	// transmit sends a batch this node signed to p's nodes.
	transmit(p *pipe, dest ids.Node, b *pb.PacketBatch) error
	// syncKick and syncProgress tell p's sync that packets are missing,
	// or that a commit happened.
	syncKick(p *pipe)
	syncProgress(p *pipe)
	// noteFile hands a file packet logged to the files part.
	noteFile(p *pipe, pk *Packet)
}

func newPersist(e *Engine) *persist {
	return &persist{self: e.self, key: e.cfg.Key, cert: e.cfg.Cert, db: e.cfg.DB, storeKey: e.cfg.StoreKey,
		log: e.log, clock: &e.clock, gate: e.cfg.testWriterGate, env: e,
		sent: &e.stats.sent, delivered: &e.stats.delivered, dropped: &e.stats.dropped}
}

// plog is the persistent state of one pipe.
type plog struct {
	log  *history.Log
	in   chan ingest // local Puts, and what the mesh loop hands over
	held heldQueue   // what the pipelines group's worker hands over
	once sync.Once

	mu      sync.Mutex
	changed chan struct{} // closed and replaced after each commit

	// owned by the writer goroutine
	waiting  map[ids.Node]map[uint64]waitingPacket
	nwaiting int
	wbytes   int               // data bytes of the waiting packets
	certs    map[ids.Node]bool // senders whose certificate is stored
}

type waitingPacket struct {
	pk    *Packet
	proof *history.Proof
	cert  *pb.Signed
}

// ingest is one item for the writer: a local Put, or verified packets of
// one sender with the proof that covers them.
type ingest struct {
	put   *localPut
	pks   []*Packet
	proof *history.Proof
	cert  *pb.Signed // the sender's certificate, stored with its first proof
}

type localPut struct {
	data []byte
	typ  int64
	hlc  int64
	dest ids.Node
	file bool
	done chan putResult
}

type putResult struct {
	id    ids.Packet
	logID int64
	err   error
}

func newPlog(l *history.Log) *plog {
	return &plog{log: l, in: make(chan ingest, writerQueue), held: heldQueue{more: make(chan struct{}, 1)}, changed: make(chan struct{}),
		waiting: map[ids.Node]map[uint64]waitingPacket{}, certs: map[ids.Node]bool{}}
}

// wait returns a channel closed at the next commit.
func (pl *plog) wait() <-chan struct{} {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	return pl.changed
}

func (pl *plog) signal() {
	pl.mu.Lock()
	close(pl.changed)
	pl.changed = make(chan struct{})
	pl.mu.Unlock()
}

// recordID is the packet id of a logged record.
func recordID(pipe ids.Pipeline) func(r *history.Record) ids.Packet {
	return func(r *history.Record) ids.Packet {
		return packetID(pipe, r.Sender, r.Seq, r.HLC, r.Type, r.Dest, r.File, r.Data)
	}
}

// packetFromRecord makes a Packet of a logged record. The data is copied:
// records may be shared by the log's cache of decoded blocks, and packets
// go to applications.
func packetFromRecord(pipe ids.Pipeline, r *history.Record) *Packet {
	return &Packet{ID: r.ID, Pipeline: pipe, Sender: r.Sender, Seq: r.Seq, HLC: r.HLC, Type: r.Type,
		Data: bytes.Clone(r.Data), Destination: r.Dest, File: r.File, LogID: r.LogID, Logged: true}
}

// openLog opens the history of a persistent pipeline.
func (ps *persist) openLog(d *Def) (*plog, error) {
	if ps.db == nil {
		return nil, fmt.Errorf("%w: persistent pipelines need a store", ErrNotImplemented)
	}
	l, err := history.Open(ps.db, history.Config{Node: ps.self, Pipeline: d.ID,
		Key: history.DeriveKey(ps.storeKey, keys.PipelineLog, d.ID[:]), PacketID: recordID(d.ID)})
	if err != nil {
		return nil, err
	}
	return newPlog(l), nil
}

// startWriter starts p's writer and sender once.
func (ps *persist) startWriter(p *pipe) {
	p.plog.once.Do(func() {
		p.batches = make(chan *pb.PacketBatch, 16)
		ps.env.spawnPipe(p, func() { ps.writer(p) })
		ps.env.spawnPipe(p, func() { ps.batchSender(p) })
	})
}

// putPersistent logs a local packet and returns its id and LogID once it
// is durable.
func (ps *persist) putPersistent(ctx context.Context, p *pipe, data []byte, typ int64, dest ids.Node, file bool) (putResult, error) {
	if p.logErr != nil {
		return putResult{}, p.logErr
	}
	ps.startWriter(p)
	req := &localPut{data: data, typ: typ, hlc: ps.clock.now(), dest: dest, file: file, done: make(chan putResult, 1)}
	select {
	case p.plog.in <- ingest{put: req}:
	case <-ctx.Done():
		return putResult{}, ctx.Err()
	case <-p.ctx.Done():
		return putResult{}, ps.env.pipeErr()
	}
	select {
	case r := <-req.done:
		if r.err != nil {
			return r, r.err
		}
		ps.sent.Add(1)
		return r, nil
	case <-ctx.Done():
		return putResult{}, ctx.Err() // handed over: it may still be logged
	case <-p.ctx.Done():
		return putResult{}, ps.env.pipeErr()
	}
}

// commit logs one group: received packets first (in sender order, gaps
// held back), then the local Puts as one signed batch.
func (ps *persist) commit(p *pipe, items []ingest) {
	pl := p.plog
	var recs []*history.Record
	var proofs []history.Proof
	proofUsed := map[*history.Proof]bool{}
	heads := map[ids.Node]uint64{}
	head := func(s ids.Node) uint64 {
		if h, ok := heads[s]; ok {
			return h
		}
		return pl.log.Head(s)
	}
	take := func(pk *Packet, proof *history.Proof, cert *pb.Signed) {
		recs = append(recs, &history.Record{ID: pk.ID, Sender: pk.Sender, Seq: pk.Seq, HLC: pk.HLC,
			Type: pk.Type, Dest: pk.Destination, File: pk.File, Data: pk.Data})
		heads[pk.Sender] = pk.Seq
		if proof != nil && !proofUsed[proof] {
			proofUsed[proof] = true
			pr := *proof
			if !pl.certs[pr.Sender] && cert != nil {
				pr.Cert, _ = proto.Marshal(cert) // once per sender, not per batch
			}
			proofs = append(proofs, pr)
		}
	}
	var kicked bool
	for _, it := range items {
		for _, pk := range it.pks {
			h := head(pk.Sender)
			switch {
			case pk.Seq <= h:
				continue // already logged
			case pk.Seq == h+1:
				take(pk, it.proof, it.cert)
				ps.clock.observe(pk.HLC)
				// Packets that waited for this one follow it.
				for w := pl.waiting[pk.Sender]; w != nil; {
					next, ok := w[head(pk.Sender)+1]
					if !ok {
						break
					}
					delete(w, next.pk.Seq)
					pl.nwaiting--
					pl.wbytes -= len(next.pk.Data)
					take(next.pk, next.proof, next.cert)
				}
			default:
				w := pl.waiting[pk.Sender]
				if w == nil {
					w = map[uint64]waitingPacket{}
					pl.waiting[pk.Sender] = w
				}
				if _, dup := w[pk.Seq]; !dup {
					if pl.nwaiting >= maxWaiting || len(w) >= maxWaitingPerSender || pl.wbytes+len(pk.Data) > maxWaitingBytes {
						// Sync fetches it once the gap before it is filled.
						ps.dropped.Add(1)
						p.stats.dropped.Add(1)
					} else {
						w[pk.Seq] = waitingPacket{pk: pk, proof: it.proof, cert: it.cert}
						pl.nwaiting++
						pl.wbytes += len(pk.Data)
					}
				}
				if !kicked {
					kicked = true
					ps.env.syncKick(p)
				}
			}
		}
	}
	// Local Puts: the next sequence numbers of this node, one signature.
	var puts []*localPut
	var batch *pb.PacketBatch
	if firstSeq := head(ps.self) + 1; true {
		var pids []ids.Packet
		var pks []*pb.Packet
		for _, it := range items {
			if it.put == nil {
				continue
			}
			q := it.put
			seq := firstSeq + uint64(len(puts))
			id := packetID(p.def.ID, ps.self, seq, q.hlc, q.typ, q.dest, q.file, q.data)
			pk := &pb.Packet{Seq: seq, Hlc: q.hlc, Type: q.typ, Data: q.data, File: q.file}
			if !q.dest.IsZero() {
				pk.Destination = q.dest[:]
			}
			puts = append(puts, q)
			pids = append(pids, id)
			pks = append(pks, pk)
			recs = append(recs, &history.Record{ID: id, Sender: ps.self, Seq: seq, HLC: q.hlc, Type: q.typ, Dest: q.dest, File: q.file, Data: q.data})
		}
		if len(puts) > 0 {
			sig := signBatch(ps.key, pids)
			pr := history.Proof{Sender: ps.self, FirstSeq: firstSeq, LastSeq: firstSeq + uint64(len(puts)) - 1, Signature: sig}
			if !pl.certs[ps.self] {
				pr.Cert, _ = proto.Marshal(ps.cert.Signed)
			}
			proofs = append(proofs, pr)
			batch = &pb.PacketBatch{NodeCert: ps.cert.Signed, Pipeline: p.def.ID[:], Packets: pks, Signature: sig}
		}
	}
	if len(recs) == 0 {
		return
	}
	err := pl.log.Append(recs, proofs)
	if err != nil {
		ps.log.Error("cannot log packets", "pipeline", p.def.Name, "packets", len(recs), "err", err)
		for _, q := range puts {
			q.done <- putResult{err: err}
		}
		// Received packets are not lost: sync fetches them again.
		ps.env.syncKick(p)
		return
	}
	for _, pr := range proofs {
		if pr.Cert != nil {
			pl.certs[pr.Sender] = true
		}
	}
	// Waiting packets that came by another way meanwhile are logged now.
	for s, h := range heads {
		if w := pl.waiting[s]; w != nil {
			for seq, wp := range w {
				if seq <= h {
					delete(w, seq)
					pl.nwaiting--
					pl.wbytes -= len(wp.pk.Data)
				}
			}
			if len(w) == 0 {
				delete(pl.waiting, s)
			}
		}
	}
	nLocal := len(puts)
	received := uint64(len(recs) - nLocal)
	for _, r := range recs[:len(recs)-nLocal] {
		if r.File {
			ps.env.noteFile(p, &Packet{Pipeline: p.def.ID, Sender: r.Sender, Data: r.Data, File: true})
		}
	}
	ps.delivered.Add(received)
	p.stats.delivered.Add(received)
	for i, q := range puts {
		r := recs[len(recs)-nLocal+i]
		q.done <- putResult{id: r.ID, logID: r.LogID}
	}
	pl.signal()
	ps.env.syncProgress(p)
	if batch != nil {
		select {
		case p.batches <- batch:
		case <-p.ctx.Done():
		}
	}
}

// batchSender transmits the batches the writer signed.
func (ps *persist) batchSender(p *pipe) {
	for {
		select {
		case b := <-p.batches:
			var dest ids.Node
			if p.def.IsPointToPoint() {
				dest = p.def.Opts.ToNode
			}
			if err := ps.env.transmit(p, dest, b); err != nil && p.ctx.Err() == nil {
				// Not lost: the packets are logged and sync delivers them.
				ps.log.Debug("batch not sent now; sync will deliver it", "pipeline", p.def.Name, "err", err)
			}
		case <-p.ctx.Done():
			return
		}
	}
}

// Follow calls fn with the logged packets of persistent pipeline id with
// LogID > after, in order, and then with each packet logged later, until
// ctx ends, the engine closes, or fn returns false. fn runs on a goroutine
// of the engine and may block; the context it gets ends when Follow must
// stop. end is called once at the end.
func (e *Engine) Follow(ctx context.Context, id ids.Pipeline, after int64, fn func(context.Context, *Packet) bool, end func()) error {
	e.mu.Lock()
	p := e.mu.pipes[id]
	closed := e.mu.closed
	if p != nil && p.plog != nil && !closed && !p.removed {
		e.wg.Add(1)
		p.wg.Add(1)
	} else if p != nil && p.removed {
		p = nil
	}
	e.mu.Unlock()
	switch {
	case closed:
		return ErrClosed
	case p == nil:
		return fmt.Errorf("%w %x", ErrUnknown, id[:4])
	case p.plog == nil:
		if p.logErr != nil {
			return p.logErr
		}
		return fmt.Errorf("pipeline: %q is not persistent", p.def.Name)
	}
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(p.ctx, cancel)
	go func() {
		defer e.wg.Done()
		defer p.wg.Done()
		defer end()
		defer stop()
		defer cancel()
		e.logs.follow(ctx, p, after, fn)
	}()
	return nil
}

// follow hands fn the logged packets of p with LogID > after, then each
// one logged later, until ctx ends or fn returns false.
func (ps *persist) follow(ctx context.Context, p *pipe, after int64, fn func(context.Context, *Packet) bool) {
	for {
		changed := p.plog.wait()
		// Read a chunk, then hand it out with no store iterator open:
		// fn may block for as long as its subscriber lags.
		var chunk []*history.Record
		err := p.plog.log.Since(after, 256, func(r *history.Record) bool {
			chunk = append(chunk, r)
			return true
		})
		if err != nil {
			ps.log.Error("cannot read the log", "pipeline", p.def.Name, "err", err)
			return
		}
		for _, r := range chunk {
			after = r.LogID
			if !fn(ctx, packetFromRecord(p.def.ID, r)) || ctx.Err() != nil {
				return
			}
		}
		if len(chunk) == 256 {
			continue
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return
		}
	}
}

// Log returns the history of persistent pipeline id.
func (e *Engine) Log(id ids.Pipeline) (*history.Log, error) {
	e.mu.Lock()
	p := e.mu.pipes[id]
	e.mu.Unlock()
	switch {
	case p == nil:
		return nil, fmt.Errorf("%w %x", ErrUnknown, id[:4])
	case p.logErr != nil:
		return nil, p.logErr
	case p.plog == nil:
		return nil, ErrNotPersistent
	}
	return p.plog.log, nil
}

// ErrNotPersistent is returned for log operations on a live pipeline.
var ErrNotPersistent = errors.New("pipeline: not a persistent pipeline")
