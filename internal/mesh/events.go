package mesh

import (
	"sync"
	"sync/atomic"
)

// EventKind says what an Event reports.
type EventKind int

const (
	// EventConnection: the local node gained its first peer or lost its last.
	EventConnection EventKind = iota + 1
	// EventNode: another node's presence changed (online, offline, peer,
	// name, location, version, addresses or neighbours).
	EventNode
)

// Event is one notification to the mesh's owner.
type Event struct {
	Kind      EventKind
	Connected bool     // EventConnection
	Node      NodeInfo // EventNode
}

// eventQueue hands events from the mesh loop to the owner's callback on a
// goroutine of its own, so a slow callback never stalls the network. The
// queue is bounded: when it is full the newest event is dropped and counted
// (Stats.EventsDropped); status is level-triggered, so the owner can always
// re-read the current state.
type eventQueue struct {
	mu      sync.Mutex
	cond    *sync.Cond
	items   []Event
	limit   int
	closed  bool
	dropped atomic.Uint64
	done    chan struct{}
}

func newEventQueue(limit int, fn func(Event)) *eventQueue {
	q := &eventQueue{limit: limit, done: make(chan struct{})}
	q.cond = sync.NewCond(&q.mu)
	go q.run(fn)
	return q
}

func (q *eventQueue) push(e Event) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	if len(q.items) >= q.limit {
		q.dropped.Add(1)
		return
	}
	q.items = append(q.items, e)
	q.cond.Signal()
}

func (q *eventQueue) run(fn func(Event)) {
	defer close(q.done)
	for {
		q.mu.Lock()
		for len(q.items) == 0 && !q.closed {
			q.cond.Wait()
		}
		if len(q.items) == 0 {
			q.mu.Unlock()
			return
		}
		e := q.items[0]
		q.items[0] = Event{}
		q.items = q.items[1:]
		q.mu.Unlock()
		if fn != nil {
			fn(e) // outside the lock
		}
	}
}

// close delivers what is queued, then stops the goroutine and waits for it.
func (q *eventQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.cond.Signal()
	q.mu.Unlock()
	<-q.done
}
