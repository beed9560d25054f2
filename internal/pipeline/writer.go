package pipeline

import "sync"

// The writer's intake. Each persistent pipeline has its own writer
// goroutine, fed by two queues, so that no goroutine serving every
// pipeline ever waits for one pipeline's writer:
//
//   - in, a bounded channel, takes local Puts (which wait for room: the
//     caller is the application) and the live batches the mesh loop hands
//     over (which never wait: full, they are dropped);
//   - held takes what the dispatcher's pipelines group hands over (sync
//     catch-up data and point-to-point batches). That group's worker
//     serves every pipeline, so it must not wait behind one pipeline
//     catching up a long history.
//
// Neither queue loses persistent data silently. An item refused because a
// queue is full is counted (Dropped) and sync is kicked (syncKick), and
// sync fetches it again from a peer that has it: a sync want answered but
// not logged up to its end is asked again once wantSettle has passed
// (schedule runs every syncTick and asks for what the log still lacks), and
// a dropped live batch leaves a gap that the exchange of heads started by
// syncKick makes sync fill. What is queued when the pipeline or the engine
// closes is not logged, and is fetched by sync after the next start.

// writerQueue is how many items may wait in a pipeline's in channel.
const writerQueue = 1024

// maxHeldPackets and maxHeldBytes bound what waits in a pipeline's held
// queue: several peers' worth of outstanding sync wants
// (wantsPerPeer*wantChunk packets each), and as much data as the packets
// kept back for a gap (maxWaitingBytes).
const (
	maxHeldPackets = 4 * wantsPerPeer * wantChunk
	maxHeldBytes   = maxWaitingBytes
)

// heldQueue is a pipeline's queue of received items from the routed
// worker, drained by the pipeline's writer, first in first out.
type heldQueue struct {
	more chan struct{} // capacity 1: signalled while items wait

	mu      sync.Mutex
	items   []ingest
	packets int
	bytes   int
}

func ingestBytes(it ingest) int {
	n := 0
	for _, pk := range it.pks {
		n += len(pk.Data)
	}
	return n
}

func (h *heldQueue) signal() {
	select {
	case h.more <- struct{}{}:
	default:
	}
}

// add queues it without waiting; it reports false if the queue is full.
// An item is always taken into an empty queue, whatever its size.
func (h *heldQueue) add(it ingest) bool {
	np, nb := len(it.pks), ingestBytes(it)
	h.mu.Lock()
	if len(h.items) > 0 && (h.packets+np > maxHeldPackets || h.bytes+nb > maxHeldBytes) {
		h.mu.Unlock()
		return false
	}
	h.items = append(h.items, it)
	h.packets += np
	h.bytes += nb
	h.mu.Unlock()
	h.signal()
	return true
}

// take removes the first items, as many as fit maxPackets and maxBytes
// (with first, at least one). If items are left it signals again.
func (h *heldQueue) take(maxPackets, maxBytes int, first bool) []ingest {
	h.mu.Lock()
	defer h.mu.Unlock()
	k, np, nb := 0, 0, 0
	for k < len(h.items) {
		ip, ib := len(h.items[k].pks), ingestBytes(h.items[k])
		if (k > 0 || !first) && (np+ip > maxPackets || nb+ib > maxBytes) {
			break
		}
		np, nb, k = np+ip, nb+ib, k+1
	}
	out := append([]ingest(nil), h.items[:k]...)
	clear(h.items[:k])
	h.items = h.items[k:]
	if len(h.items) == 0 {
		h.items = nil
	} else {
		h.signal()
	}
	h.packets -= np
	h.bytes -= nb
	return out
}

// enqueue hands received, verified packets of one sender to p's writer
// without waiting for it. held is true on the pipelines group's worker: the packets
// go to the held queue; else (the mesh loop) to the in channel. Refused
// because full, they are dropped, counted and left to sync (see above).
func (ps *persist) enqueue(p *pipe, it ingest, held bool) {
	if p.logErr != nil {
		return
	}
	ps.startWriter(p)
	if held {
		if p.plog.held.add(it) {
			return
		}
	} else {
		select {
		case p.plog.in <- it:
			return
		default:
		}
	}
	ps.dropped.Add(uint64(len(it.pks)))
	p.stats.dropped.Add(uint64(len(it.pks)))
	ps.env.syncKick(p)
}

// writer logs what arrives for a persistent pipeline, one commit per
// group of items.
func (ps *persist) writer(p *pipe) {
	pl := p.plog
	for {
		if ps.gate != nil {
			ps.gate(p.def.ID)
		}
		var items []ingest
		select {
		case it := <-pl.in:
			items = append(items, it)
		case <-pl.held.more:
			items = pl.held.take(groupPackets, groupBytes, true)
		case <-p.ctx.Done():
			return
		default:
			// Idle, and not catching up: bring the index by packet id up
			// to date (a catch-up logs packets in bulk and leaves them to
			// be indexed here; the sync loop wakes the writer when it is
			// done).
			if !p.syncing.Load() {
				if n, err := pl.log.IndexSome(4096); n > 0 {
					continue
				} else if err != nil {
					ps.log.Error("cannot index the log", "pipeline", p.def.Name, "err", err)
				}
			}
			select {
			case it := <-pl.in:
				items = append(items, it)
			case <-pl.held.more:
				items = pl.held.take(groupPackets, groupBytes, true)
			case <-p.ctx.Done():
				return
			}
		}
		if len(items) == 0 {
			continue // a signal whose items an earlier commit took
		}
		// The local Puts of a commit become one signed batch, which must
		// fit a frame: stop taking Puts once their data could pass
		// maxBatchBytes with one more packet.
		n, size, puts, putBytes := 0, 0, 0, 0
		count := func(it ingest) {
			n += max(len(it.pks), 1)
			if it.put != nil {
				size += len(it.put.data)
				putBytes += len(it.put.data)
				puts++
			} else {
				size += ingestBytes(it)
			}
		}
		for _, it := range items {
			count(it)
		}
	fill:
		for n < groupPackets && size < groupBytes && puts < maxBatchPackets && putBytes <= maxBatchBytes-maxWireData {
			select {
			case it := <-pl.in:
				items = append(items, it)
				count(it)
			case <-pl.held.more:
				more := pl.held.take(groupPackets-n, groupBytes-size, false)
				if len(more) == 0 {
					break fill // the next does not fit: it starts the next commit
				}
				for _, it := range more {
					items = append(items, it)
					count(it)
				}
			default:
				break fill
			}
		}
		ps.commit(p, items)
		// Under steady traffic the writer is never idle: it also indexes
		// a chunk after each commit, so the index cannot fall behind for
		// good.
		if !p.syncing.Load() {
			if _, err := pl.log.IndexSome(4096); err != nil {
				ps.log.Error("cannot index the log", "pipeline", p.def.Name, "err", err)
			}
		}
	}
}
