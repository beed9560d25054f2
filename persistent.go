package pipes

import (
	"context"
	"fmt"
	"iter"

	"github.com/pipesnet/pipes/internal/history"
	"github.com/pipesnet/pipes/internal/pipeline"
)

// logOf returns the history of a persistent pipeline.
func (p *Pipeline) logOf() (*history.Log, error) {
	if !p.Persistent() {
		return nil, ErrNotPersistent
	}
	e, err := p.n.readEngine() // the stored history reads without Start
	if err != nil {
		return nil, err
	}
	l, err := e.Log(p.def.ID)
	if err != nil {
		return nil, mapErr(err, "")
	}
	return l, nil
}

// lastLogID returns the LogID of the last logged packet (-1: none).
func (p *Pipeline) lastLogID() int64 {
	if l, err := p.logOf(); err == nil {
		return l.Next() - 1
	}
	return -1
}

// PacketWithID returns a packet of a persistent pipeline's local log, or
// an error wrapping ErrNotFound. Live pipelines keep no history:
// ErrNotPersistent.
func (p *Pipeline) PacketWithID(id PacketID) (*Packet, error) {
	l, err := p.logOf()
	if err != nil {
		return nil, err
	}
	r, err := l.ByID(id)
	if err != nil {
		return nil, mapErr(err, fmt.Sprintf("packet %s", id))
	}
	return p.packet(pipeline.PacketFromRecord(p.def.ID, r)), nil
}

// PacketsSince yields the logged packets with LogID > logID, in order (-1
// for the whole history). It reads the log in chunks, so it may run while
// packets are logged; it ends at the end of the log as it finds it. On a
// live pipeline it yields ErrNotPersistent once.
func (p *Pipeline) PacketsSince(logID int64) iter.Seq2[*Packet, error] {
	return func(yield func(*Packet, error) bool) {
		l, err := p.logOf()
		if err != nil {
			yield(nil, err)
			return
		}
		after := max(logID, -1)
		for {
			var chunk []*history.Record
			if err := l.Since(after, 256, func(r *history.Record) bool { chunk = append(chunk, r); return true }); err != nil {
				yield(nil, mapErr(err, ""))
				return
			}
			for _, r := range chunk {
				if !yield(p.packet(pipeline.PacketFromRecord(p.def.ID, r)), nil) {
					return
				}
				after = r.LogID
			}
			if len(chunk) < 256 {
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
func (n *Node) syncUpdate(id [32]byte, synchronized bool) {
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
