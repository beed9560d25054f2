package pipeline

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/pipesnet/pipes/internal/ids"
)

// Live delivery: the part that hands verified packets of live pipelines to
// their subscribers. It holds the packets of pipelines not defined yet
// (bounded by maxPending), and, for each defined pipeline, a feed: its
// replay windows and its subscriptions.
//
// It has no goroutine of its own: it runs on the goroutines that hand it
// packets (the mesh loop for broadcast batches, the pipelines group's
// worker for batches sent to this node, the definitions goroutine for
// packets that followed their definition, the realtime worker for
// datagrams) and on the context.AfterFunc goroutine that ends a
// subscription.
//
// Locks: live.mu guards the feeds by pipeline and the pending packets. It
// is a leaf: nothing is called under it but the clock, and the registry
// takes it under Engine.mu (add). Each feed has its own lock, under which
// its packets pass the replay check and are handed to its subscribers in
// that order, and under which a subscription ends, so that no packet
// reaches a sink after its end ran. A feed's lock is taken under no other
// lock of the engine, never under live.mu nor Engine.mu: a sink may thus
// call the engine's read API (Pipelines, Pipeline, PipelineStats, Stats)
// without deadlock. A sink must not block, nor subscribe or end a
// subscription (Shutdown) itself.
type live struct {
	env   liveEnv
	clock *hlcClock

	// The engine's counters.
	delivered, dropped, rejected *atomic.Uint64

	mu struct {
		sync.Mutex
		feeds   map[ids.Pipeline]*feed
		pending map[ids.Pipeline][]*Packet // packets of pipelines not defined yet
		npend   int
		closed  bool
	}
}

// liveEnv is what live delivery needs from the engine. The part calls it
// only without its own locks.
type liveEnv interface {
	// tombed reports whether pipeline id was shut down: its packets are
	// not kept for a definition.
	tombed(id ids.Pipeline) bool
	// noteFile hands a received file packet to the files part; it does
	// not block.
	noteFile(p *pipe, pk *Packet)
}

// feed is the delivery state of one defined pipeline.
type feed struct {
	p  *pipe
	mu struct {
		sync.Mutex
		subs    map[*sub]struct{}
		senders map[ids.Node]*replayWindow
		ended   bool // the pipeline was removed or the engine closed
	}
}

// sub is one subscription: a sink that must not block (it does a
// non-blocking push), called under its feed's lock, so that ending the
// subscription and delivering never race.
type sub struct {
	deliver func(*Packet) bool // false: the subscriber's buffer was full
	end     func()
}

func newLive(e *Engine) *live {
	l := &live{env: e, clock: &e.clock, delivered: &e.stats.delivered, dropped: &e.stats.dropped,
		rejected: &e.stats.rejected}
	l.mu.feeds = map[ids.Pipeline]*feed{}
	l.mu.pending = map[ids.Pipeline][]*Packet{}
	return l
}

// tombed reports whether pipeline id was shut down (liveEnv).
func (e *Engine) tombed(id ids.Pipeline) bool { return e.notes.tomb(id) != nil }

// add starts delivering pipeline p, which the registry has just defined
// (under Engine.mu, before anyone can subscribe to it). The packets that
// waited for the definition pass the replay check and are counted, in the
// order they came, before any packet that comes after.
func (l *live) add(p *pipe) {
	f := &feed{p: p}
	f.mu.subs = map[*sub]struct{}{}
	f.mu.senders = map[ids.Node]*replayWindow{}
	l.mu.Lock()
	id := p.def.ID
	pending := l.mu.pending[id]
	delete(l.mu.pending, id)
	l.mu.npend -= len(pending)
	f.mu.ended = l.mu.closed
	// f is not published yet: nobody else sees its state, and it has no
	// subscriber.
	files := l.pass(f, pending)
	l.mu.feeds[id] = f
	l.mu.Unlock()
	l.noteFiles(p, files)
}

// drop stops delivering p (removed by the registry, which calls it without
// Engine.mu): its subscriptions end.
func (l *live) drop(p *pipe) {
	l.mu.Lock()
	f := l.mu.feeds[p.def.ID]
	if f == nil || f.p != p {
		l.mu.Unlock()
		return
	}
	delete(l.mu.feeds, p.def.ID)
	l.mu.Unlock()
	f.end()
}

// close ends every subscription; nothing is delivered or kept after it.
func (l *live) close() {
	l.mu.Lock()
	l.mu.closed = true
	feeds := make([]*feed, 0, len(l.mu.feeds))
	for _, f := range l.mu.feeds {
		feeds = append(feeds, f)
	}
	l.mu.pending = map[ids.Pipeline][]*Packet{}
	l.mu.npend = 0
	l.mu.Unlock()
	for _, f := range feeds {
		f.end()
	}
}

// end ends f's subscriptions.
func (f *feed) end() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mu.ended = true
	for s := range f.mu.subs {
		s.end()
	}
	f.mu.subs = nil
}

// lookup returns the feed of pipeline id (nil if none), and whether the
// part is closed.
func (l *live) lookup(id ids.Pipeline) (*feed, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mu.feeds[id], l.mu.closed
}

// pipe returns the state of pipeline id if it is delivered to (defined and
// not removed), without the registry's lock: the receive path asks it for
// every batch.
func (l *live) pipe(id ids.Pipeline) *pipe {
	if f, _ := l.lookup(id); f != nil {
		return f.p
	}
	return nil
}

// deliver hands verified packets of pipeline id to its subscribers, after
// the replay check. Packets of a pipeline not defined yet wait for it
// (bounded by maxPending; beyond, they are counted rejected), unless it
// was shut down.
func (l *live) deliver(id ids.Pipeline, pks []*Packet) {
	f, closed := l.lookup(id)
	if f == nil {
		if closed || l.env.tombed(id) {
			return
		}
		l.mu.Lock()
		if f = l.mu.feeds[id]; f == nil && !l.mu.closed { // defined meanwhile?
			for _, pk := range pks {
				if l.mu.npend >= maxPending {
					l.rejected.Add(1)
					continue
				}
				l.mu.pending[id] = append(l.mu.pending[id], pk)
				l.mu.npend++
			}
		}
		l.mu.Unlock()
		if f == nil {
			return
		}
	}
	f.mu.Lock()
	var files []*Packet
	if !f.mu.ended {
		files = l.pass(f, pks)
	}
	f.mu.Unlock()
	l.noteFiles(f.p, files)
}

// pass puts pks through f's replay check and hands those that pass to f's
// subscribers, under f's lock (or before f is published). It returns the
// file packets among them.
func (l *live) pass(f *feed, pks []*Packet) (files []*Packet) {
	p := f.p
	if p.def.Opts.Realtime {
		return nil // realtime packets come as datagrams only
	}
	for _, pk := range pks {
		w := f.mu.senders[pk.Sender]
		if w == nil {
			w = &replayWindow{seen: map[ids.Packet]int64{}}
			f.mu.senders[pk.Sender] = w
		}
		if !w.accept(pk) {
			l.rejected.Add(1)
			p.stats.rejected.Add(1)
			continue
		}
		l.clock.observe(pk.HLC)
		if pk.File {
			files = append(files, pk)
		}
		l.handOut(f, pk)
	}
	return files
}

// handOut hands pk to f's subscribers, under f's lock, and counts it.
func (l *live) handOut(f *feed, pk *Packet) {
	l.delivered.Add(1)
	f.p.stats.delivered.Add(1)
	for s := range f.mu.subs {
		if !s.deliver(pk) {
			l.dropped.Add(1)
			f.p.stats.dropped.Add(1)
		}
	}
}

func (l *live) noteFiles(p *pipe, files []*Packet) {
	for _, pk := range files {
		l.env.noteFile(p, pk)
	}
}

// deliverDatagram hands a realtime packet of p to p's subscribers; it
// reports false if p is not delivered to (removed, or the engine closed).
func (l *live) deliverDatagram(p *pipe, pk *Packet) bool {
	f, _ := l.lookup(p.def.ID)
	if f == nil || f.p != p {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mu.ended {
		return false
	}
	p.stats.received.Add(1)
	pk.Pipeline = p.def.ID
	l.handOut(f, pk)
	return true
}

// subscribe calls deliver for every packet of pipeline id from now on,
// under the pipeline's feed lock; end is called once, under it too, when
// the subscription ends: when ctx ends, the pipeline is removed or the
// engine closes.
func (l *live) subscribe(ctx context.Context, id ids.Pipeline, deliver func(*Packet) bool, end func()) error {
	f, closed := l.lookup(id)
	if f == nil {
		return fmt.Errorf("%w %x", ErrUnknown, id[:4])
	}
	if closed {
		return ErrClosed
	}
	s := &sub{deliver: deliver, end: end}
	f.mu.Lock()
	if f.mu.ended {
		f.mu.Unlock()
		if _, closed := l.lookup(id); closed {
			return ErrClosed
		}
		return fmt.Errorf("%w %x", ErrUnknown, id[:4])
	}
	f.mu.subs[s] = struct{}{}
	f.mu.Unlock()
	context.AfterFunc(ctx, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		if _, ok := f.mu.subs[s]; ok {
			delete(f.mu.subs, s)
			s.end()
		}
	})
	return nil
}
