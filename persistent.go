package pipes

import (
	"context"
	"fmt"
	"iter"

	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/pipeline"
)

// readable returns the engine that reads a persistent pipeline's history:
// the running one, or the read-only one of a node that is not started
// (the stored history reads without Start).
func (p *Pipeline) readable() (*pipeline.Engine, error) {
	if !p.Persistent() {
		return nil, ErrNotPersistent
	}
	return p.n.readEngine()
}

// lastLogID returns the LogID of the last logged packet (-1: none).
func (p *Pipeline) lastLogID() int64 {
	if e, err := p.readable(); err == nil {
		if logged, _, err := e.LogCounts(p.def.ID); err == nil {
			return logged - 1
		}
	}
	return -1
}

// PacketWithID returns a packet of a persistent pipeline's local log, or
// an error wrapping ErrNotFound. Live pipelines keep no history:
// ErrNotPersistent.
func (p *Pipeline) PacketWithID(id PacketID) (*Packet, error) {
	e, err := p.readable()
	if err != nil {
		return nil, err
	}
	pk, err := e.PacketByID(p.def.ID, ids.Packet(id))
	if err != nil {
		return nil, mapErr(err, fmt.Sprintf("packet %s", id))
	}
	return p.packet(pk), nil
}

// PacketsSince yields the logged packets with LogID > logID, in order (-1
// for the whole history). It reads the log in chunks, so it may run while
// packets are logged; it ends at the end of the log as it finds it. On a
// live pipeline it yields ErrNotPersistent once.
func (p *Pipeline) PacketsSince(logID int64) iter.Seq2[*Packet, error] {
	return func(yield func(*Packet, error) bool) {
		e, err := p.readable()
		if err != nil {
			yield(nil, err)
			return
		}
		const chunk = 256
		after := max(logID, -1)
		for {
			n, stop := 0, false
			err := e.PacketsSince(p.def.ID, after, chunk, func(pk *pipeline.Packet) bool {
				n++
				after = pk.LogID
				stop = !yield(p.packet(pk), nil)
				return !stop
			})
			if err != nil {
				yield(nil, mapErr(err, ""))
				return
			}
			if stop || n < chunk {
				return
			}
		}
	}
}

// SubscribeSince returns the logged packets of a persistent pipeline with
// LogID > logID (-1: the whole history), then every packet logged later,
// in LogID order, until ctx ends or the node shuts down, when the channel
// is closed. It reads the log: a slow subscriber loses nothing, it only
// reads later. To resume after a restart, pass the last LogID handled.
func (p *Pipeline) SubscribeSince(ctx context.Context, logID int64) (<-chan *Packet, error) {
	if !p.Persistent() {
		return nil, ErrNotPersistent
	}
	e := p.n.engineOrNil()
	if e == nil {
		return nil, ErrNotActive
	}
	ch := make(chan *Packet, 256)
	err := e.Follow(ctx, p.def.ID, max(logID, -1), func(ctx context.Context, pk *pipeline.Packet) bool {
		select {
		case ch <- p.packet(pk):
			return true
		case <-ctx.Done():
			return false
		}
	}, func() { close(ch) })
	if err != nil {
		return nil, mapErr(err, "")
	}
	return ch, nil
}

// IsSynchronizing reports whether a persistent pipeline is catching up
// with its peers: it knows of packets it has not logged yet. Always false
// on live pipelines. HandleSyncUpdate reports the changes.
func (p *Pipeline) IsSynchronizing() bool {
	e := p.n.engineOrNil()
	return e != nil && p.Persistent() && e.Synchronizing(p.def.ID)
}

// syncUpdate runs on the engine's notification goroutine.
func (n *Node) syncUpdate(id ids.Pipeline, synchronized bool) {
	n.mu.Lock()
	p := n.mu.pipelines[PipelineID(id)]
	n.mu.Unlock()
	if p == nil {
		return
	}
	p.mu.Lock()
	ls := append([]PipelineListener(nil), p.mu.listeners...)
	p.mu.Unlock()
	for _, l := range ls {
		l.HandleSyncUpdate(synchronized, p)
	}
}
