package files

import (
	"slices"
	"sync"
)

// sched hands the missing chunks of one fetch to the workers, one per
// holder. Chunks wait in a shared queue, in index order; a worker takes
// as many as its window has room for, so a faster holder, whose answers
// come sooner, takes more. When the queue is empty, an idle worker takes
// a chunk outstanding at one other worker only (the end game: the last
// chunks of a slow holder are asked of a faster one too; the first copy
// stored wins). A chunk a worker gives back (its holder lacks it, failed
// or was dropped) goes back to the queue unless another worker has it
// outstanding.
type sched struct {
	mu      sync.Mutex
	queue   []int         // not outstanding anywhere, not stored; ascending
	at      map[int][]int // chunk -> the workers it is outstanding at
	lacks   map[int]map[int]bool
	have    map[int]bool // chunks of this fetch stored
	left    int          // chunks not stored
	size    func(i int) int64
	done    int64 // bytes stored, with those present before the fetch
	total   int64
	changed chan struct{} // closed and replaced on every change
}

// newSched schedules the chunks missing of a file of total bytes; size
// gives a chunk's length.
func newSched(missing []int, total int64, size func(int) int64) *sched {
	s := &sched{queue: slices.Clone(missing), at: map[int][]int{}, lacks: map[int]map[int]bool{},
		have: map[int]bool{}, left: len(missing), size: size, total: total, changed: make(chan struct{})}
	slices.Sort(s.queue)
	s.done = total
	for _, i := range missing {
		s.done -= size(i)
	}
	return s
}

// wake tells the waiters of a change; s.mu is held.
func (s *sched) wake() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// wait returns a channel closed at the next change.
func (s *sched) wait() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// progress returns the bytes stored, of how many, and the chunks left.
func (s *sched) progress() (done, total int64, left int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.done, s.total, s.left
}

// take gives worker w up to n chunks: from the queue those w does not
// lack, or, when the queue has none for it, chunks outstanding at exactly
// one other worker.
func (s *sched) take(w, n int) []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int
	rest := s.queue[:0:0]
	for _, i := range s.queue {
		if len(out) < n && !s.lacks[w][i] {
			out = append(out, i)
			s.at[i] = append(s.at[i], w)
			continue
		}
		rest = append(rest, i)
	}
	s.queue = rest
	if len(out) > 0 || len(s.queue) > 0 {
		return out
	}
	// The end game.
	var cands []int
	for i, ws := range s.at {
		if len(ws) == 1 && ws[0] != w && !s.lacks[w][i] {
			cands = append(cands, i)
		}
	}
	slices.Sort(cands)
	for _, i := range cands[:min(n, len(cands))] {
		out = append(out, i)
		s.at[i] = append(s.at[i], w)
	}
	return out
}

// drop removes w from the workers chunk i is outstanding at; s.mu is
// held.
func (s *sched) drop(w, i int) {
	ws := slices.DeleteFunc(s.at[i], func(x int) bool { return x == w })
	if len(ws) == 0 {
		delete(s.at, i)
	} else {
		s.at[i] = ws
	}
}

// stored records that worker w stored chunk i, and reports whether it
// was the first to.
func (s *sched) stored(w, i int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drop(w, i)
	if s.have[i] {
		return false
	}
	s.have[i] = true
	s.left--
	s.done += s.size(i)
	s.wake()
	return true
}

// release gives chunk i back from worker w; lacks says that w's holder
// does not have it (w is not given it again).
func (s *sched) release(w, i int, lacks bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drop(w, i)
	if lacks {
		if s.lacks[w] == nil {
			s.lacks[w] = map[int]bool{}
		}
		s.lacks[w][i] = true
	}
	if !s.have[i] && s.at[i] == nil && !slices.Contains(s.queue, i) {
		j, _ := slices.BinarySearch(s.queue, i)
		s.queue = slices.Insert(s.queue, j, i)
	}
	s.wake()
}

// Windows: a worker keeps enough chunks outstanding to cover what its
// holder delivers in windowTime at the rate measured, within
// minWindow..maxWindow.
const (
	minWindow  = 2
	maxWindow  = 16
	windowTime = 0.25 // seconds
)

// windowFor returns the window of a holder delivering rate bytes a
// second, for chunks of chunk bytes.
func windowFor(rate float64, chunk int) int {
	if chunk <= 0 {
		return minWindow
	}
	w := int(rate*windowTime/float64(chunk)) + 1
	return min(max(w, minWindow), maxWindow)
}
