// Package notify hands notifications to a callback on a goroutine of its
// own, through a bounded FIFO queue, so that whoever produces them (a
// network loop) never waits for whoever consumes them (application code).
//
// When the queue is full the newest item is dropped and counted: producers
// report state changes that consumers can re-read, or data whose loss the
// consumer is told about through the count.
package notify

import (
	"sync"
	"sync/atomic"
)

// Queue delivers items to a callback in order, one at a time.
type Queue[T any] struct {
	mu      sync.Mutex
	cond    *sync.Cond
	items   []T
	limit   int
	closed  bool
	dropped atomic.Uint64
	done    chan struct{}
}

// New starts a queue of at most limit waiting items that calls fn for each,
// on the queue's goroutine, with no lock held.
func New[T any](limit int, fn func(T)) *Queue[T] {
	q := &Queue[T]{limit: limit, done: make(chan struct{})}
	q.cond = sync.NewCond(&q.mu)
	go q.run(fn)
	return q
}

// Push queues v, or drops and counts it if the queue is full. It never
// blocks. After Close it does nothing.
func (q *Queue[T]) Push(v T) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return false
	}
	if len(q.items) >= q.limit {
		q.dropped.Add(1)
		return false
	}
	q.items = append(q.items, v)
	q.cond.Signal()
	return true
}

// Dropped returns how many items were dropped because the queue was full.
func (q *Queue[T]) Dropped() uint64 { return q.dropped.Load() }

func (q *Queue[T]) run(fn func(T)) {
	defer close(q.done)
	var zero T
	for {
		q.mu.Lock()
		for len(q.items) == 0 && !q.closed {
			q.cond.Wait()
		}
		if len(q.items) == 0 {
			q.mu.Unlock()
			return
		}
		v := q.items[0]
		q.items[0] = zero
		q.items = q.items[1:]
		q.mu.Unlock()
		fn(v)
	}
}

// Close delivers what is queued, then stops the goroutine and waits for it.
// It must not be called from the callback.
func (q *Queue[T]) Close() {
	q.mu.Lock()
	q.closed = true
	q.cond.Signal()
	q.mu.Unlock()
	<-q.done
}
