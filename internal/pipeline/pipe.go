package pipeline

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

// pipe is the state of one known pipeline. Fields under the engine's lock
// unless noted; its subscriptions and replay windows are live delivery's
// (its feed, live.go).
type pipe struct {
	def     *Def
	holders map[ids.Node][]byte // nodes that proved they hold the secret -> their proof (nil: this node); under the notes part's lock
	removed bool                // shut down (ephemeral)

	// The pipeline's goroutines stop when ctx ends: engine close, or
	// shutdown of an ephemeral pipeline; wg waits for them.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	key    atomic.Pointer[pipeKey] // encrypted: the key, if this node has the secret

	seq     atomic.Uint64 // last sequence number put
	outOnce sync.Once
	out     chan outPacket // Put -> the pipeline's sender goroutine
	stats   struct{ received, delivered, dropped, rejected atomic.Uint64 }

	// Persistent pipelines only.
	plog    *plog
	logErr  error                // the log could not be opened
	batches chan *pb.PacketBatch // writer -> batchSender
	sync    *syncState           // owned by the syncer goroutine
	syncing atomic.Bool
}

func newPipe(parent context.Context, d *Def) *pipe {
	p := &pipe{def: d, holders: map[ids.Node][]byte{}}
	p.ctx, p.cancel = context.WithCancel(parent)
	return p
}

// replayWindow remembers a sender's recent packets on one pipeline (live
// delivery keeps one per sender in each feed, live.go).
// Packets older than replayAge behind the newest one seen, or already seen,
// are replays.
type replayWindow struct {
	newest int64
	seen   map[ids.Packet]int64 // id -> hlc
}

const (
	replayAge  = int64(60e9) // 60 s in nanoseconds
	replayKeep = 65536       // ids kept per sender and pipeline
)

// accept reports whether p is new, and records it.
func (w *replayWindow) accept(p *Packet) bool {
	if p.HLC < w.newest-replayAge {
		return false
	}
	if _, dup := w.seen[p.ID]; dup {
		return false
	}
	if p.HLC > w.newest {
		w.newest = p.HLC
	}
	if len(w.seen) >= replayKeep {
		for id, t := range w.seen { // forget what has aged out
			if t < w.newest-replayAge {
				delete(w.seen, id)
			}
		}
		if len(w.seen) >= replayKeep {
			return false // a burst faster than the window can track: refuse rather than risk a replay
		}
	}
	w.seen[p.ID] = p.HLC
	return true
}
