package pipeline

import (
	"sync"
	"time"

	"github.com/pipesnet/pipes/internal/blob"
	"github.com/pipesnet/pipes/internal/history"
	"github.com/pipesnet/pipes/internal/ids"
)

// fetchJob is a file this node should have.
type fetchJob struct {
	pipe   ids.Pipeline
	sender ids.Node
	m      *blob.Manifest
	tries  int // fetches that ended incomplete
}

// fileSeen notes a file packet this node received (or must read): its
// content is fetched unless it is here. recorded: the fetch is in the
// store already (resumed at start), so it is not written again.
func (e *Engine) fileSeen(p *pipe, sender ids.Node, m *blob.Manifest, recorded bool) {
	if e.cfg.Blobs == nil || sender == e.self {
		return
	}
	if m.ChunkSize > maxFileChunk || m.ChunkSize <= 0 {
		e.stats.rejected.Add(1)
		return
	}
	root := m.Root()
	e.setOwner(root, p.def.ID)
	if e.cfg.Blobs.Complete(root) || e.cfg.Files == nil {
		return // complete, or no transfer to fetch it with (an engine alone)
	}
	f := e.files
	f.mu.Lock()
	if f.waiting[root] {
		f.mu.Unlock()
		return
	}
	f.waiting[root] = true
	f.queue = append(f.queue, fetchJob{pipe: p.def.ID, sender: sender, m: m})
	f.mu.Unlock()
	if e.cfg.DB != nil && !recorded {
		rec := append(append(append([]byte{}, p.def.ID[:]...), sender[:]...), m.Marshal()...)
		if err := history.SaveSealed(e.cfg.DB, history.KindFetch, e.self, root, e.defsKey(), rec); err != nil {
			e.log.Warn("cannot record a file to fetch", "err", err)
		}
	}
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// resumeFetches queues the fetches an earlier run left unfinished.
func (e *Engine) resumeFetches() {
	if e.cfg.DB == nil || e.cfg.Blobs == nil {
		return
	}
	recs, err := history.LoadSealed[ids.Content](e.cfg.DB, history.KindFetch, e.self, e.defsKey())
	if err != nil {
		e.log.Warn("cannot load the files to fetch", "err", err)
		return
	}
	for root, rec := range recs {
		m, err := blob.ParseManifest(rec[min(64, len(rec)):])
		if len(rec) < 64 || err != nil || m.Root() != root {
			continue
		}
		if p, ok := e.pipeOf(ids.Pipeline(rec[:32])); ok {
			e.fileSeen(p, ids.Node(rec[32:64]), m, true)
		} else {
			e.fetchDone(root)
		}
	}
}

// fetchDone forgets a finished (or abandoned) fetch.
func (e *Engine) fetchDone(root ids.Content) {
	f := e.files
	f.mu.Lock()
	delete(f.waiting, root)
	f.mu.Unlock()
	if e.cfg.DB != nil {
		if err := history.DeleteSealed(e.cfg.DB, history.KindFetch, e.self, root); err != nil {
			e.log.Warn("cannot forget a fetched file", "err", err)
		}
	}
}

// fileFetcher runs fetch jobs, fileFetchers at a time.
func (e *Engine) fileFetcher() {
	f := e.files
	slots := make(chan struct{}, fileFetchers)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		f.mu.Lock()
		var job *fetchJob
		if len(f.queue) > 0 {
			job = &f.queue[0]
			f.queue = f.queue[1:]
		}
		f.mu.Unlock()
		if job == nil {
			select {
			case <-f.kick:
			case s := <-f.seenQ:
				if m, err := blob.ParseManifest(s.pk.Data); err == nil {
					e.fileSeen(s.p, s.pk.Sender, m, false)
				} else {
					e.stats.rejected.Add(1)
				}
			case <-e.files.ctx.Done():
				return
			}
			continue
		}
		select {
		case slots <- struct{}{}:
		case <-e.files.ctx.Done():
			return
		}
		wg.Add(1)
		go func(j fetchJob) {
			defer wg.Done()
			defer func() { <-slots }()
			e.runFetch(j)
		}(*job)
	}
}

// runFetch fetches a file from its sources at once (fileSources) on the
// node's file transfer. If the file is still incomplete after that (no
// node that has it is reachable now), the job goes back to the queue
// after fileRetry, so that it does not hold a fetch slot.
func (e *Engine) runFetch(j fetchJob) {
	root := j.m.Root()
	p, ok := e.pipeOf(j.pipe)
	if !ok || !e.ownedBy(root, j.pipe) {
		e.fetchDone(root) // its pipeline is gone
		return
	}
	var first, last int64 = -1, -1
	err := e.cfg.Files.FetchBlob(e.files.ctx, j.m, e.fileSources(p, j.sender), func(done, _ int64) {
		if first < 0 {
			first = done
		}
		last = done
	})
	if err == nil {
		e.fetchDone(root)
		return
	}
	if e.files.ctx.Err() != nil {
		return // closing: the record stays, the next run resumes
	}
	e.log.Debug("file packet: fetch incomplete; trying again later", "file", root.Short(), "err", err)
	if last > first {
		j.tries = -1 // it got somewhere: the next try comes soon (fileRetrySoon)
	}
	e.retryFetch(j)
}

// retryFetch queues j again after a delay that doubles with each try
// (fileRetry up to fileRetryMax), so that a file no reachable node has
// costs little while it waits.
func (e *Engine) retryFetch(j fetchJob) {
	j.tries++
	delay := fileRetrySoon
	if j.tries > 0 {
		delay = min(fileRetry<<min(j.tries-1, 6), fileRetryMax)
	}
	f := e.files
	root := j.m.Root()
	hurry := make(chan struct{})
	f.mu.Lock()
	f.hurry[root] = hurry
	f.mu.Unlock()
	f.spawn(func() {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-hurry:
		case <-e.files.ctx.Done():
			return
		}
		f.mu.Lock()
		if f.hurry[root] == hurry {
			delete(f.hurry, root)
		}
		f.queue = append(f.queue, j)
		f.mu.Unlock()
		select {
		case f.kick <- struct{}{}:
		default:
		}
	})
}

// hurryFetch cuts short the wait of a fetch of root that is to be tried
// again (a reader opened the file).
func (e *Engine) hurryFetch(root ids.Content) {
	f := e.files
	f.mu.Lock()
	defer f.mu.Unlock()
	if ch := f.hurry[root]; ch != nil {
		close(ch)
		delete(f.hurry, root)
	}
}

// fileSources lists the nodes to fetch a file of p from: on a
// point-to-point pipeline its other node; else the sender first, then the
// other online nodes (members of the pipeline that fetched the file, or
// are fetching it, serve what they have; the others answer that they have
// none of it).
func (e *Engine) fileSources(p *pipe, sender ids.Node) []ids.Node {
	if p.def.IsPointToPoint() {
		return []ids.Node{p.def.Opts.ToNode}
	}
	out := []ids.Node{sender}
	for _, n := range e.files.host.Online() {
		if n != sender && n != e.self {
			out = append(out, n)
		}
	}
	return out
}

// FileProgress reports how many chunks of a file packet's content this
// node has, of how many.
func (e *Engine) FileProgress(pk *Packet) (have, total int, err error) {
	if e.cfg.Blobs == nil {
		return 0, 0, ErrNoFiles
	}
	m, err := blob.ParseManifest(pk.Data)
	if err != nil {
		return 0, 0, err
	}
	total = len(m.Chunks)
	if !e.cfg.Blobs.Has(m.Root()) {
		return 0, total, nil
	}
	missing, err := e.cfg.Blobs.Missing(m.Root())
	if err != nil {
		return 0, total, err
	}
	return total - len(missing), total, nil
}
