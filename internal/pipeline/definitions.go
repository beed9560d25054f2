package pipeline

import "github.com/pipesnet/pipes/internal/ids"

// The definitions goroutine. Adding a definition stores it, a synced
// write, so a definition received from the network (on the mesh loop, or
// on the worker of the dispatcher's pipelines group, which serves every
// pipeline) is added here, one at
// a time, in the order received. Until it is added, packets of its
// pipeline that arrive follow it through the same queue (persistentIngest),
// so they are handled as if the definition had been added at once.

// defsQueue is how many definitions (and packets following one) may wait
// for the definitions goroutine. Beyond it a definition is dropped and
// counted: it comes again, sent to each new peer (KindDefs) and announced
// again to the other node of a point-to-point pipeline when it comes
// online.
const defsQueue = 4096

// addDef adds a definition received from the network, on the definitions
// goroutine. It never waits.
func (e *Engine) addDef(d *Def) {
	e.mu.Lock()
	if e.mu.closed || e.mu.pipes[d.ID] != nil {
		e.mu.Unlock()
		return
	}
	e.mu.defining[d.ID]++
	e.mu.Unlock()
	if !e.toDefs(func() {
		e.defineNow(d)
		e.doneDefining(d.ID)
	}) {
		e.doneDefining(d.ID)
		e.stats.rejected.Add(1)
	}
}

func (e *Engine) doneDefining(id ids.Pipeline) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.mu.defining[id]--; e.mu.defining[id] <= 0 {
		delete(e.mu.defining, id)
	}
}

// toDefs queues f for the definitions goroutine without waiting; it
// reports false if the queue is full. A read-only engine, which has no
// such goroutine, runs f at once.
func (e *Engine) toDefs(f func()) bool {
	if e.cfg.ReadOnly {
		f()
		return true
	}
	select {
	case e.defs <- f:
		return true
	default:
		return false
	}
}

// pipeOrDefining returns the state of pipeline id, or reports whether a
// received definition of it waits for the definitions goroutine.
func (e *Engine) pipeOrDefining(id ids.Pipeline) (*pipe, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if p := e.mu.pipes[id]; p != nil {
		return p, false
	}
	return nil, e.mu.defining[id] > 0
}

// defsWorker is the definitions goroutine.
func (e *Engine) defsWorker() {
	defer e.wg.Done()
	for {
		select {
		case f := <-e.defs:
			f()
		case <-e.ctx.Done():
			return
		}
	}
}
