package blob

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"sync"

	"github.com/zeebo/blake3"
)

// importChunks reads the n chunks of an import from r, in order, passes
// each to transform on this goroutine, and hands it to importWorkers
// goroutines that hash it into b.m.Chunks, seal it and write it to its
// slot, so that reading, hashing, sealing and writing use several cores.
// At most 2*importWorkers chunks are in memory at once. The workers end
// before it returns.
func (s *Store) importChunks(ctx context.Context, b *blob, r io.Reader, size int64, in, overhead int,
	transform func(index int, chunk []byte) []byte) error {
	m := b.m
	n := len(m.Chunks)
	workers := min(runtime.GOMAXPROCS(0), maxImportWorkers, max(n, 1))
	type job struct {
		i   int
		c   []byte // the chunk to store, in buf
		buf []byte
	}
	free := make(chan []byte, 2*workers)
	for range 2 * workers {
		free <- make([]byte, m.ChunkSize+tagSize)
	}
	jobs := make(chan job, workers)
	var (
		mu      sync.Mutex
		failure error
		failed  = make(chan struct{})
		wg      sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if failure == nil {
			failure = err
			close(failed)
		}
	}
	for range workers {
		wg.Go(func() {
			for j := range jobs {
				select {
				case <-failed:
				default:
					m.Chunks[j.i] = blake3.Sum256(j.c)
					sealed := b.aead.Seal(j.c[:0], chunkNonce(j.i), j.c, nil)
					if _, err := b.f.WriteAt(sealed, b.slot(j.i)); err != nil {
						fail(fmt.Errorf("blob: import: %w", err))
					}
				}
				free <- j.buf
			}
		})
	}
	read := func(i int) error {
		select {
		case <-ctx.Done():
			return fmt.Errorf("blob: import: %w", ctx.Err())
		case <-s.done:
			return fmt.Errorf("blob: import: %w", ErrClosed)
		default:
		}
		var buf []byte
		select {
		case buf = <-free:
		case <-failed:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("blob: import: %w", ctx.Err())
		case <-s.done:
			return fmt.Errorf("blob: import: %w", ErrClosed)
		}
		k := int(min(int64(in), size-int64(i)*int64(in)))
		if _, err := io.ReadFull(r, buf[:k]); err != nil {
			free <- buf
			if err == io.EOF {
				err = io.ErrUnexpectedEOF // fewer than size bytes
			}
			return fmt.Errorf("blob: import: chunk %d: %w", i, err)
		}
		c := buf[:k]
		if transform != nil {
			if c = transform(i, c); len(c) != k+overhead {
				free <- buf
				return fmt.Errorf("blob: import: transform of chunk %d returned %d bytes, want %d", i, len(c), k+overhead)
			}
			if len(c) > 0 && &c[0] != &buf[0] {
				// The transform's own buffer, which its next call
				// may reuse while a worker still seals this chunk.
				c = append(buf[:0], c...)
			}
		}
		jobs <- job{i: i, c: c, buf: buf}
		return nil
	}
	for i := range n {
		if err := read(i); err != nil {
			fail(err)
			break
		}
		select {
		case <-failed:
		default:
			continue
		}
		break
	}
	close(jobs)
	wg.Wait()
	return failure
}

// maxImportWorkers bounds the goroutines of one import.
const maxImportWorkers = 4
