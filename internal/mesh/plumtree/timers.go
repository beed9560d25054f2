package plumtree

import (
	"bytes"
	"container/heap"
	"time"

	"github.com/pipesnet/pipes/internal/wire/pb"
)

// Tick runs the timers due at now: it flushes queued announcements, grafts
// messages announced but not received in time, and expires old ids and
// payloads.
func (t *Tree) Tick(now time.Time) []Send {
	var out []Send
	if !t.lazyDeadline.IsZero() && !now.Before(t.lazyDeadline) {
		out = t.flushLazy(out)
	}
	for len(t.timers) > 0 && !now.Before(t.timers[0].deadline) {
		m := t.timers[0]
		// Skip announcers that are gone (RemovePeer drops them; this is
		// a second line of defence).
		for m.next < len(m.announcers) {
			if _, ok := t.peers[m.announcers[m.next]]; ok {
				break
			}
			m.next++
		}
		if m.next >= len(m.announcers) {
			// Nobody left to ask; a later IHAVE starts over.
			heap.Pop(&t.timers)
			delete(t.missing, m.id)
			continue
		}
		p := m.announcers[m.next]
		m.next++
		m.deadline = now.Add(t.cfg.GraftRetry)
		heap.Fix(&t.timers, 0)
		t.stats.GraftsSent++ // the announcer makes this node its child; nothing changes here
		out = append(out, Send{To: p, Frame: &pb.Frame{Body: &pb.Frame_Graft{Graft: &pb.Graft{Id: m.id[:], Origin: m.origin[:]}}}})
	}
	// Expire at exactly the time NextDeadline names, so that an owner
	// that sleeps until then always finds the work done.
	for len(t.seenFIFO) > 0 && !now.Before(t.seenFIFO[0].at.Add(t.cfg.SeenTTL)) {
		t.expireSeenOne()
	}
	for len(t.cacheFIFO) > 0 && !now.Before(t.cacheFIFO[0].at.Add(t.cfg.CacheTTL)) {
		t.expireCacheOne()
	}
	return out
}

// flushLazy turns queued announcements into IHAVE frames.
func (t *Tree) flushLazy(out []Send) []Send {
	for _, p := range t.peerList {
		q := t.lazyQ[p]
		for len(q) > 0 {
			n := min(len(q), t.cfg.MaxIHave)
			out = append(out, Send{To: p, Frame: &pb.Frame{Body: &pb.Frame_Ihave{Ihave: &pb.IHave{Messages: q[:n]}}}})
			t.stats.LazySent += uint64(n)
			q = q[n:]
		}
		delete(t.lazyQ, p)
	}
	t.lazyDeadline = time.Time{}
	return out
}

// NextDeadline returns the earliest time Tick has work, if any: a Tick at
// or after that time does it. The owner sleeps until then (or until a frame
// arrives); a time in the past means Tick has work now.
func (t *Tree) NextDeadline() (time.Time, bool) {
	var next time.Time
	consider := func(d time.Time) {
		if next.IsZero() || d.Before(next) {
			next = d
		}
	}
	if !t.lazyDeadline.IsZero() {
		consider(t.lazyDeadline)
	}
	if len(t.timers) > 0 {
		consider(t.timers[0].deadline)
	}
	if len(t.seenFIFO) > 0 {
		consider(t.seenFIFO[0].at.Add(t.cfg.SeenTTL))
	}
	if len(t.cacheFIFO) > 0 {
		consider(t.cacheFIFO[0].at.Add(t.cfg.CacheTTL))
	}
	return next, !next.IsZero()
}

func (t *Tree) expireSeenOne() {
	s := t.seenFIFO[0]
	t.seenFIFO[0] = stamped{}
	t.seenFIFO = t.seenFIFO[1:]
	delete(t.seen, s.id)
}

func (t *Tree) expireCacheOne() {
	s := t.cacheFIFO[0]
	t.cacheFIFO[0] = stamped{}
	t.cacheFIFO = t.cacheFIFO[1:]
	if c := t.cache[s.id]; c != nil && c.at.Equal(s.at) {
		delete(t.cache, s.id)
	}
}

// Stats returns the counters and current sizes.
func (t *Tree) Stats() Stats {
	s := t.stats
	s.Peers, s.Origins = len(t.peers), len(t.lazy)
	for _, l := range t.lazy {
		s.LazyLinks += len(l)
	}
	s.Cached, s.Missed = len(t.cache), len(t.missing)
	return s
}

// timerHeap orders missing messages by graft deadline, then by id, so
// that grafts due at the same time go out in a deterministic order.
type timerHeap []*missing

func (h timerHeap) Len() int { return len(h) }
func (h timerHeap) Less(i, j int) bool {
	if !h[i].deadline.Equal(h[j].deadline) {
		return h[i].deadline.Before(h[j].deadline)
	}
	return bytes.Compare(h[i].id[:], h[j].id[:]) < 0
}
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *timerHeap) Push(x any) {
	m := x.(*missing)
	m.index = len(*h)
	*h = append(*h, m)
}
func (h *timerHeap) Pop() any {
	old := *h
	m := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	m.index = -1
	return m
}
