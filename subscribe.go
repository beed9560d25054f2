package pipes

import (
	"context"
	"slices"

	"github.com/pipesnet/pipes/internal/notify"
	"github.com/pipesnet/pipes/internal/pipeline"
)

// Subscribe returns the packets that arrive on the pipeline from now on. The
// channel is closed when ctx ends or the node shuts down; if the node is
// not started it is closed at once.
//
// On a live pipeline the channel holds up to 16384 packets; a subscriber
// that does not keep up loses the excess, counted in Stats().Dropped. On a
// persistent pipeline the subscription reads the log: it never loses a
// packet, however slow the subscriber, and it includes the node's own
// packets (see SubscribeSince to resume from a LogID).
func (p *Pipeline) Subscribe(ctx context.Context) <-chan *Packet {
	if p.Persistent() {
		ch, err := p.SubscribeSince(ctx, p.lastLogID())
		if err != nil {
			ch := make(chan *Packet)
			close(ch)
			return ch
		}
		return ch
	}
	ch := make(chan *Packet, 16384)
	e := p.n.engineOrNil()
	if e == nil {
		close(ch)
		return ch
	}
	err := e.Subscribe(ctx, p.def.ID, func(pk *pipeline.Packet) bool {
		select {
		case ch <- p.packet(pk):
			return true
		default:
			return false
		}
	}, func() { close(ch) })
	if err != nil {
		close(ch)
	}
	return ch
}

// AddListener adds a listener for the pipeline's packets. Callbacks run in
// order on a goroutine of the pipeline, with no lock held, while the node
// runs (the listener stays registered across Shutdown and Start). Up to
// 16384 packets wait for the listeners; beyond that packets are dropped for
// them and counted in Stats().Dropped.
func (p *Pipeline) AddListener(l PipelineListener) {
	p.mu.Lock()
	p.mu.listeners = append(p.mu.listeners, l)
	p.mu.Unlock()
	if e := p.n.engineOrNil(); e != nil {
		p.attach(e)
	}
}

// RemoveListener removes a pipeline listener (compared with ==). When the
// last listener goes, it waits for a callback in progress to return, so it
// must not be called from a listener's own callback.
func (p *Pipeline) RemoveListener(l PipelineListener) {
	p.mu.Lock()
	p.mu.listeners = slices.DeleteFunc(p.mu.listeners, func(x PipelineListener) bool { return x == l })
	p.mu.Unlock()
	p.detachIfUnused()
}

// detachIfUnused ends the listeners' subscription if no listener is left,
// deciding under the lock so that a concurrent AddListener keeps it.
func (p *Pipeline) detachIfUnused() {
	p.mu.Lock()
	if len(p.mu.listeners) > 0 {
		p.mu.Unlock()
		return
	}
	stop, q, done := p.mu.stop, p.mu.notes, p.mu.followDone
	p.mu.stop, p.mu.notes, p.mu.followDone = nil, nil, nil
	p.mu.Unlock()
	endSubscription(stop, q, done)
}

// attach subscribes the listeners to engine e, if there are listeners and
// they are not subscribed yet.
func (p *Pipeline) attach(e *pipeline.Engine) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mu.stop != nil || len(p.mu.listeners) == 0 {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	if p.Persistent() {
		// Listeners of a persistent pipeline read the log: from its end
		// the first time, then from where they stopped (across Shutdown
		// and Start). They lose nothing, and a slow one delays only
		// itself.
		from := p.mu.handled
		if !p.mu.hasHandled {
			from = p.lastLogID()
			p.mu.handled, p.mu.hasHandled = from, true
		}
		done := make(chan struct{})
		err := e.Follow(ctx, p.def.ID, from, func(ctx context.Context, pk *pipeline.Packet) bool {
			p.mu.Lock()
			ls := slices.Clone(p.mu.listeners)
			p.mu.Unlock()
			for _, l := range ls {
				l.HandlePacket(p.packet(pk), p)
			}
			p.mu.Lock()
			p.mu.handled = pk.LogID
			p.mu.Unlock()
			return true
		}, func() { close(done) })
		if err != nil {
			cancel()
			return
		}
		p.mu.stop, p.mu.followDone = cancel, done
		return
	}
	q := notify.New(16384, func(pk *Packet) {
		p.mu.Lock()
		ls := slices.Clone(p.mu.listeners)
		p.mu.Unlock()
		for _, l := range ls {
			l.HandlePacket(pk, p)
		}
	})
	if err := e.Subscribe(ctx, p.def.ID, func(pk *pipeline.Packet) bool { return q.Push(p.packet(pk)) }, func() {}); err != nil {
		cancel()
		q.Close()
		return
	}
	p.mu.stop, p.mu.notes = cancel, q
}

// detach ends the listeners' subscription and waits for callbacks in
// progress. It must not be called from a callback.
func (p *Pipeline) detach() {
	p.mu.Lock()
	stop, q, done := p.mu.stop, p.mu.notes, p.mu.followDone
	p.mu.stop, p.mu.notes, p.mu.followDone = nil, nil, nil
	p.mu.Unlock()
	endSubscription(stop, q, done)
}

// endSubscription stops a listeners' subscription and waits for its
// callbacks to finish.
func endSubscription(stop context.CancelFunc, q *notify.Queue[*Packet], done chan struct{}) {
	if stop != nil {
		stop()
	}
	if q != nil {
		q.Close()
	}
	if done != nil {
		<-done
	}
}
