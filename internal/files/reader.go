package files

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/pipesnet/pipes/internal/blob"
	"github.com/pipesnet/pipes/internal/ids"
)

// Open returns a reader of this node's copy of id: ErrNotFound if the
// node has no part of it. Every chunk it returns was verified against the
// manifest when it was stored and is authenticated again when read. A
// read of a chunk not present waits for it while a fetch of the file runs
// on this node (it comes, or the fetch ends and the read fails); with no
// fetch running it fails at once with ErrIncomplete.
func (s *Service) Open(id ids.Content) (io.ReadSeekCloser, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.wg.Done()
	s.mu.Lock()
	_, kept := s.files[id]
	s.mu.Unlock()
	if !kept {
		return nil, fmt.Errorf("%w: file %s", ErrNotFound, id.Short())
	}
	m, err := s.blobs.Manifest(id)
	if err != nil {
		return nil, fmt.Errorf("%w: file %s: %w", ErrNotFound, id.Short(), err)
	}
	ctx, cancel := context.WithCancel(s.ctx)
	r := &reader{s: s, id: id, m: m, ctx: ctx, cancel: cancel}
	if restricted(m) {
		return s.openRestricted(r) // access.go
	}
	return r, nil
}

// reader reads a file chunk by chunk; it keeps the current chunk.
type reader struct {
	s      *Service
	id     ids.Content
	m      *blob.Manifest
	ctx    context.Context // ends with Close or the service
	cancel context.CancelFunc
	noWait bool // a missing chunk fails at once, even during a fetch

	mu    sync.Mutex
	off   int64
	cur   int // index of buf, -1 for none
	buf   []byte
	valid bool
}

func (r *reader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ctx.Err() != nil {
		return 0, fmt.Errorf("files: read: %w", errors.New("reader closed"))
	}
	if r.off >= r.m.Size {
		return 0, io.EOF
	}
	i := int(r.off / int64(r.m.ChunkSize))
	if !r.valid || r.cur != i {
		c, err := r.chunk(i)
		if err != nil {
			return 0, err
		}
		r.buf, r.cur, r.valid = c, i, true
	}
	n := copy(p, r.buf[r.off-int64(i)*int64(r.m.ChunkSize):])
	r.off += int64(n)
	return n, nil
}

// chunk returns chunk i, waiting for it while a fetch of the file runs.
func (r *reader) chunk(i int) ([]byte, error) {
	for {
		c, err := r.s.blobs.ReadChunk(r.id, i)
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, blob.ErrMissing) {
			return nil, fmt.Errorf("files: read: %w", err)
		}
		r.s.mu.Lock()
		f := r.s.fetches[r.id]
		r.s.mu.Unlock()
		if f == nil || r.noWait {
			return nil, fmt.Errorf("%w: chunk %d of %s", ErrIncomplete, i, r.id.Short())
		}
		wctx, cancel := context.WithCancel(f.ctx)
		stop := context.AfterFunc(r.ctx, cancel)
		err = r.s.blobs.Wait(wctx, r.id, i)
		stop()
		cancel()
		if err != nil && r.ctx.Err() != nil {
			return nil, fmt.Errorf("files: read: %w", errors.New("reader closed"))
		}
		switch {
		case err == nil: // present now
		case f.ctx.Err() != nil:
			<-f.done // the fetch ended: look again, it may have stored it
		default:
			return nil, fmt.Errorf("files: read: %w", err)
		}
	}
}

func (r *reader) Seek(off int64, whence int) (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return seekTo(&r.off, r.m.Size, off, whence)
}

// seekTo moves *cur, in content of size bytes, as io.Seeker's Seek does.
func seekTo(cur *int64, size, off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		off += *cur
	case io.SeekEnd:
		off += size
	default:
		return 0, fmt.Errorf("files: seek: whence %d", whence)
	}
	if off < 0 {
		return 0, fmt.Errorf("files: seek to %d", off)
	}
	*cur = off
	return off, nil
}

func (r *reader) Close() error {
	r.cancel()
	return nil
}
