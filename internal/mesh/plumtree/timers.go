package plumtree

import (
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
	for id, m := range t.missing {
		if now.Before(m.deadline) {
			continue
		}
		// Skip announcers that are gone.
		for m.next < len(m.announcers) {
			if _, ok := t.peers[m.announcers[m.next]]; ok {
				break
			}
			m.next++
		}
		if m.next >= len(m.announcers) {
			delete(t.missing, id) // nobody left to ask; a later IHAVE starts over
			continue
		}
		p := m.announcers[m.next]
		m.next++
		m.deadline = now.Add(t.cfg.GraftRetry)
		t.stats.GraftsSent++ // the announcer makes this node its child; nothing changes here
		out = append(out, Send{To: p, Frame: &pb.Frame{Body: &pb.Frame_Graft{Graft: &pb.Graft{Id: id[:], Origin: m.origin[:]}}}})
	}
	for len(t.seenFIFO) > 0 && now.Sub(t.seenFIFO[0].at) > t.cfg.SeenTTL {
		t.expireSeenOne()
	}
	for len(t.cacheFIFO) > 0 && now.Sub(t.cacheFIFO[0].at) > t.cfg.CacheTTL {
		t.expireCacheOne()
	}
	return out
}

// flushLazy turns queued announcements into IHAVE frames.
func (t *Tree) flushLazy(out []Send) []Send {
	for p, q := range t.lazyQ {
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

// NextDeadline returns the earliest time Tick has work, if any.
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
	for _, m := range t.missing {
		consider(m.deadline)
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
