// Package worker runs work items from a bounded queue on goroutines of its
// own: the one shape of every queue-and-worker loop of the node (the
// dispatcher's handler groups, the chunk servers, the realtime datagram
// worker, the sync servers).
//
// A Pool owns its goroutines: New starts them, Close stops them and waits.
// Items run in queue order; with one worker, each finishes before the next
// starts.
package worker

import (
	"context"
	"errors"
	"sync"
)

// ErrClosed is returned by Put on a closed pool.
var ErrClosed = errors.New("worker: pool closed")

// Pool is a bounded queue of items of type T and the goroutines that run
// them.
type Pool[T any] struct {
	q    chan T
	do   func(T)
	stop chan struct{}
	once sync.Once
	wg   sync.WaitGroup
}

// New starts workers goroutines (at least one) that call do on each item
// put, from a queue of size items (at least one).
func New[T any](size, workers int, do func(T)) *Pool[T] {
	p := &Pool[T]{q: make(chan T, max(size, 1)), do: do, stop: make(chan struct{})}
	workers = max(workers, 1)
	p.wg.Add(workers)
	for range workers {
		go p.run()
	}
	return p
}

func (p *Pool[T]) run() {
	defer p.wg.Done()
	for {
		select {
		case <-p.stop:
			return
		default:
		}
		select {
		case v := <-p.q:
			p.do(v)
		case <-p.stop:
			return
		}
	}
}

// TryPut queues v without blocking. It reports false, and v is not run,
// when the queue is full or the pool closed: the caller's policy decides
// (drop and count, or ask again later).
func (p *Pool[T]) TryPut(v T) bool {
	select {
	case <-p.stop:
		return false
	default:
	}
	select {
	case p.q <- v:
		return true
	default:
		return false
	}
}

// Put queues v, waiting for room until ctx ends or the pool closes.
func (p *Pool[T]) Put(ctx context.Context, v T) error {
	select {
	case <-p.stop:
		return ErrClosed
	default:
	}
	select {
	case p.q <- v:
		return nil
	case <-p.stop:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Len returns how many items wait.
func (p *Pool[T]) Len() int { return len(p.q) }

// Close stops the workers, each after the item it runs, and waits for
// them. Items still queued are dropped. Close may be called more than once.
func (p *Pool[T]) Close() {
	p.once.Do(func() { close(p.stop) })
	p.wg.Wait()
}
