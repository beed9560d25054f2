package pipeline

import (
	"context"

	"github.com/pipesnet/pipes/internal/service"
)

// Name names the files part among the node's services (the file service
// itself is "files").
func (f *files) Name() string { return "file-packets" }

// Register registers nothing: file packets' chunks travel on the file
// service's data connections, not as messages. (The routed kinds FileGet
// and FileData of earlier versions are retired: kinds.)
func (f *files) Register(service.Registrar) error { return nil }

// Start tells the file transfer who may have the chunks of file packets,
// starts the fetcher, and resumes the fetches an earlier run left
// unfinished (they wait for the transfer, which starts after this part).
func (f *files) Start(ctx context.Context, h service.Host) error {
	e := f.e
	f.ctx, f.cancel = context.WithCancel(ctx)
	f.host = h
	if e.cfg.Files != nil {
		e.cfg.Files.SetAuthorizer(e.mayServe)
	}
	if !f.spawn(e.fileFetcher) {
		f.Close()
		return ErrClosed
	}
	if e.cfg.DB != nil {
		e.loadOwners()
	}
	e.resumeFetches()
	return nil
}

// Close stops the fetcher and the fetches, and waits for them; the file
// transfer serves no file packet from then on.
func (f *files) Close() error {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	if f.cancel != nil {
		f.cancel()
	}
	if t := f.e.cfg.Files; t != nil {
		t.SetAuthorizer(nil)
	}
	f.wg.Wait()
	return nil
}

// spawn runs fn on a goroutine of the files part, unless it is closed.
func (f *files) spawn(fn func()) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		fn()
	}()
	return true
}
