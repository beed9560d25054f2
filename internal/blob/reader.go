package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"

	"github.com/pipesnet/pipes/internal/ids"
)

// Reader returns a sequential reader of the whole content of the blob
// root, as the manifest describes it. It waits for each chunk to be
// present (see Wait), so it can read a blob while it is received, and
// holds one chunk at a time. Errors (the blob not found, ctx's end, the
// store's closing) are returned by Read. Close ends a Read that is waiting.
func (s *Store) Reader(ctx context.Context, root ids.Content) io.ReadCloser {
	ctx, cancel := context.WithCancel(ctx)
	return &reader{s: s, root: root, ctx: ctx, cancel: cancel}
}

type reader struct {
	s      *Store
	root   ids.Content
	ctx    context.Context
	cancel context.CancelFunc
	closed atomic.Bool

	m   *Manifest
	i   int    // next chunk
	buf []byte // what remains of the current chunk
	err error
}

// Read implements io.Reader.
func (r *reader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		switch {
		case r.closed.Load():
			return 0, fmt.Errorf("blob: read: %w", os.ErrClosed)
		case r.err != nil:
			return 0, r.err
		case r.m == nil:
			r.m, r.err = r.s.Manifest(r.root)
		case r.i == len(r.m.Chunks):
			r.err = io.EOF
		default:
			if r.err = r.s.Wait(r.ctx, r.root, r.i); r.err != nil {
				break
			}
			data, err := r.s.ReadChunk(r.root, r.i)
			if errors.Is(err, ErrMissing) {
				continue // damaged since Wait: wait for it to be written again
			}
			r.buf, r.err = data, err
			r.i++
		}
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// Close implements io.Closer.
func (r *reader) Close() error {
	r.closed.Store(true)
	r.cancel()
	return nil
}
