package files

import (
	"context"
	"fmt"
	"net"

	"github.com/pipesnet/pipes/internal/blob"
	"github.com/pipesnet/pipes/internal/ids"
)

// Blobs of other parts of the node. The blob store holds more than the
// service's files: the content of the pipelines' file packets is there
// too, under roots of their own (random manifest nonces). The service
// moves those on its transfer as well, for the part that owns them (the
// pipeline engine), which says who may have each (SetAuthorizer) and
// which nodes to fetch it from (FetchBlob): such a blob has no record, is
// not announced and is not listed; it is served only to an asker the
// authorizer admits, and fetched only from the holders the caller gives.

// authorizer says whether asker may have blob root; see SetAuthorizer.
type authorizer func(root ids.Content, asker ids.Node) bool

// SetAuthorizer sets the function that decides whether this node serves
// blob root, which is not one of the service's files, to asker (the node
// at the other end of the data connection). It runs on the serving
// connection's goroutine, under no lock of the service, for each request
// of such a blob; nil serves the service's files only (the default).
func (s *Service) SetAuthorizer(f func(root ids.Content, asker ids.Node) bool) {
	if f == nil {
		s.auth.Store(nil)
		return
	}
	a := authorizer(f)
	s.auth.Store(&a)
}

// authorized reports whether the authorizer lets asker have blob root.
func (s *Service) authorized(root ids.Content, asker ids.Node) bool {
	a := s.auth.Load()
	return a != nil && (*a)(root, asker)
}

// askerOf returns the node at the other end of a served connection, if
// the connection names it (data connections do: package conns).
func askerOf(c net.Conn) (ids.Node, bool) {
	if rc, ok := c.(interface{ RemoteNode() ids.Node }); ok {
		if n := rc.RemoteNode(); !n.IsZero() {
			return n, true
		}
	}
	return ids.Node{}, false
}

// FetchBlob makes this node hold the blob of manifest m complete, from
// the given holders at once, with the scheduler, the verification and the
// drop of holders that send bad data of Fetch: the chunks present are not
// asked for (a fetch interrupted goes on where it stopped). A holder that
// lacks the blob or some chunks is fine: the others deliver them; the
// fetch fails with ErrNoSource if together they could not. The blob is
// added to the store if it is not there. progress, if not nil, is called
// with the bytes present and the blob's size, on the calling goroutine.
//
// Called before the service starts, FetchBlob waits for the start (or
// ctx, or Close: ErrClosed). One fetch of a root runs at a time: a second
// waits for the first, then finds what it left.
func (s *Service) FetchBlob(ctx context.Context, m *blob.Manifest, holders []ids.Node, progress func(done, total int64)) error {
	select {
	case <-s.up:
	case <-s.ctx.Done():
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.wg.Done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()
	root := m.Root()
	release, err := s.claim(ctx, root)
	if err != nil {
		return err
	}
	defer release()
	if err := s.blobs.Add(m); err != nil {
		return fmt.Errorf("files: fetch: %w", err)
	}
	missing, err := s.blobs.Missing(root)
	if err != nil {
		return fmt.Errorf("files: fetch: %w", err)
	}
	if len(missing) == 0 {
		if progress != nil {
			progress(m.Size, m.Size)
		}
		return nil
	}
	self := s.host.Self()
	var from []ids.Node
	seen := map[ids.Node]bool{self: true}
	for _, h := range holders {
		if !seen[h] && !h.IsZero() && len(from) < maxSources {
			seen[h] = true
			from = append(from, h)
		}
	}
	if len(from) == 0 {
		return fmt.Errorf("%w: blob %s (no holder given)", ErrNoSource, root.Short())
	}
	return s.transfer(ctx, root, m, missing, from, map[ids.Node]*holderConn{}, progress)
}

// claim makes the caller the one fetch of root, waiting for another in
// progress to end; release ends the claim.
func (s *Service) claim(ctx context.Context, root ids.Content) (release func(), err error) {
	st := &fetchState{ctx: ctx, done: make(chan struct{})}
	for {
		s.mu.Lock()
		other := s.fetches[root]
		if other == nil {
			s.fetches[root] = st
		}
		s.mu.Unlock()
		if other == nil {
			break
		}
		select {
		case <-other.done:
		case <-ctx.Done():
			return nil, s.ended(ctx)
		}
	}
	return func() {
		s.mu.Lock()
		delete(s.fetches, root)
		s.mu.Unlock()
		close(st.done)
	}, nil
}

// lacksAll reports whether the holder of worker w lacks every chunk not
// stored yet: the worker can give the fetch nothing more.
func (s *sched) lacksAll(w int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.left == 0 {
		return false
	}
	lacks := s.lacks[w]
	if len(lacks) == 0 {
		return false
	}
	n := 0
	for i := range lacks {
		if !s.have[i] {
			n++
		}
	}
	return n == s.left
}
