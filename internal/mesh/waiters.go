package mesh

import "sync"

// waiters are the callers waiting for an answer (a pong, a check's ack),
// by nonce.
type waiters[K comparable] struct {
	mu sync.Mutex
	m  map[K]chan struct{}
}

// add registers a wait for k: the channel closes when the answer comes;
// the caller must call the returned function when it stops waiting.
func (w *waiters[K]) add(k K) (<-chan struct{}, func()) {
	ch := make(chan struct{})
	w.mu.Lock()
	if w.m == nil {
		w.m = map[K]chan struct{}{}
	}
	w.m[k] = ch
	w.mu.Unlock()
	return ch, func() {
		w.mu.Lock()
		if w.m[k] == ch {
			delete(w.m, k)
		}
		w.mu.Unlock()
	}
}

// done completes the wait for k, if there is one.
func (w *waiters[K]) done(k K) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if ch := w.m[k]; ch != nil {
		close(ch)
		delete(w.m, k)
	}
}
