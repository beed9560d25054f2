package pipeline

import (
	"github.com/pipesnet/pipes/internal/history"
	"github.com/pipesnet/pipes/internal/ids"
)

// Reads of a persistent pipeline's stored history, in the engine's types:
// the node reads through these, never the history package itself.

// LogCounts returns how many packets the log of persistent pipeline pipe
// holds and their data bytes.
func (e *Engine) LogCounts(pipe ids.Pipeline) (logged, bytes int64, err error) {
	l, err := e.Log(pipe)
	if err != nil {
		return 0, 0, err
	}
	return l.Next(), l.Bytes(), nil
}

// PacketByID returns the logged packet id of persistent pipeline pipe
// (an error wrapping history.ErrNotFound if it is not logged).
func (e *Engine) PacketByID(pipe ids.Pipeline, id ids.Packet) (*Packet, error) {
	l, err := e.Log(pipe)
	if err != nil {
		return nil, err
	}
	r, err := l.ByID(id)
	if err != nil {
		return nil, err
	}
	return packetFromRecord(pipe, r), nil
}

// PacketsSince hands fn, in order, up to limit logged packets of
// persistent pipeline pipe with LogID > after, until fn returns false. It
// reads the log as it is now; the store's iterator is closed before fn
// runs, so fn may take its time.
func (e *Engine) PacketsSince(pipe ids.Pipeline, after int64, limit int, fn func(*Packet) bool) error {
	l, err := e.Log(pipe)
	if err != nil {
		return err
	}
	var chunk []*Packet
	err = l.Since(after, limit, func(r *history.Record) bool {
		chunk = append(chunk, packetFromRecord(pipe, r))
		return true
	})
	if err != nil {
		return err
	}
	for _, p := range chunk {
		if !fn(p) {
			break
		}
	}
	return nil
}
