package files

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pipesnet/pipes/internal/blob"
	"github.com/pipesnet/pipes/internal/ids"
)

// maxSources is the most holders one fetch uses at once.
const maxSources = 8

// fetchState is a fetch in progress: readers of the file wait on ctx for
// chunks to come.
type fetchState struct {
	ctx  context.Context
	done chan struct{}
}

// Fetch makes this node hold file id complete: it gets the manifest from
// a holder (checked against id), then the chunks this node lacks from
// every holder known at once (see sched), each verified before it is
// stored. Chunks present already are not asked for, so a fetch that was
// interrupted (ctx, a restart) goes on where it stopped. progress, if not
// nil, is called with the bytes present and the file's size, on the
// calling goroutine, as chunks arrive. One fetch of a file runs at a
// time: a second waits for the first, then finds what it left.
func (s *Service) Fetch(ctx context.Context, id ids.Content, progress func(done, total int64)) error {
	return s.fetchAs(ctx, id, progress, 0)
}

// fetchAs is Fetch; flags (recDuty, recTemp) mark the copy as taken for a
// duty or temporary, none as the user's.
func (s *Service) fetchAs(ctx context.Context, id ids.Content, progress func(done, total int64), flags byte) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.wg.Done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()
	release, err := s.claim(ctx, id)
	if err != nil {
		return err
	}
	defer release()
	return s.fetch(ctx, id, progress, flags)
}

// ended is the error of a fetch whose context ended.
func (s *Service) ended(ctx context.Context) error {
	if s.ctx.Err() != nil {
		return ErrClosed
	}
	return ctx.Err()
}

func (s *Service) fetch(ctx context.Context, id ids.Content, progress func(done, total int64), flags byte) error {
	if flags == 0 {
		s.exclude(id, false)
	}
	s.mu.Lock()
	r := s.files[id]
	s.mu.Unlock()
	if r != nil && r.complete {
		if flags == 0 && (r.duty || r.temp) {
			if err := s.save(id, &record{name: r.name, size: r.size, complete: true}); err != nil {
				return err
			}
		}
		if progress != nil {
			progress(r.size, r.size)
		}
		return nil
	}
	if d := s.rep.dut.get(dutyArchive, id); d != nil && len(s.view(time.Now()).holders(id, id, true)) == 0 {
		return s.restore(ctx, d, progress, flags)
	}
	holders := s.idx.holders(id)
	if len(holders) > maxSources {
		holders = holders[:maxSources]
	}
	conns := map[ids.Node]*holderConn{}
	defer func() {
		for _, hc := range conns {
			hc.c.Close()
		}
	}()
	m, err := s.blobs.Manifest(id)
	if r == nil || err != nil {
		if len(holders) == 0 {
			return fmt.Errorf("%w: file %s (no holder known)", ErrNotFound, id.Short())
		}
		var name string
		if name, m, err = s.firstManifest(ctx, id, holders, conns); err != nil {
			return err
		}
		if err := s.blobs.Add(m); err != nil {
			return fmt.Errorf("files: fetch: %w", err)
		}
		if err := s.save(id, &record{name: name, size: m.Size, duty: flags&recDuty != 0, temp: flags&recTemp != 0}); err != nil {
			return err
		}
	}
	missing, err := s.blobs.Missing(id)
	if err != nil {
		return fmt.Errorf("files: fetch: %w", err)
	}
	if len(missing) > 0 && len(holders) == 0 {
		return fmt.Errorf("%w: file %s (no holder known; %d chunks missing)", ErrNotFound, id.Short(), len(missing))
	}
	if len(missing) > 0 {
		if err := s.transfer(ctx, id, m, missing, holders, conns, progress); err != nil {
			return err
		}
	} else if progress != nil {
		progress(m.Size, m.Size)
	}
	s.mu.Lock()
	done := *s.files[id]
	s.mu.Unlock()
	done.size, done.complete = m.Size, true
	if flags == 0 {
		done.duty, done.temp = false, false
	}
	return s.save(id, &done)
}

// holderConn is a connection to a holder.
type holderConn struct {
	c net.Conn
	r *bufio.Reader
}

// firstManifest asks the holders in turn for the manifest of id, and
// keeps the connections it opens in conns for the transfer.
func (s *Service) firstManifest(ctx context.Context, id ids.Content, holders []ids.Node,
	conns map[ids.Node]*holderConn) (string, *blob.Manifest, error) {
	var errs []error
	for _, h := range holders {
		c, err := s.host.Dial(ctx, h, ServiceName)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		hc := &holderConn{c: c, r: bufio.NewReaderSize(c, 64<<10)}
		conns[h] = hc
		stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
		name, m, err := manifestOn(c, hc.r, id)
		if !stop() {
			return "", nil, s.ended(ctx)
		}
		if err == nil {
			return name, m, nil
		}
		if errors.Is(err, ErrBadData) {
			s.dropped(h)
		}
		c.Close()
		delete(conns, h)
		errs = append(errs, err)
	}
	if ctx.Err() != nil {
		return "", nil, s.ended(ctx)
	}
	return "", nil, fmt.Errorf("%w: the manifest of %s: %w", ErrNoSource, id.Short(), errors.Join(errs...))
}

// dropped counts a holder dropped for bad data.
func (s *Service) dropped(h ids.Node) {
	s.nDropped.Add(1)
	if f := s.hook().Dropped; f != nil {
		f(h)
	}
}

// transfer gets the missing chunks of id from the holders at once, one
// worker each, and reports progress until every chunk is stored, every
// worker gave up, or ctx ends.
func (s *Service) transfer(ctx context.Context, id ids.Content, m *blob.Manifest, missing []int,
	holders []ids.Node, conns map[ids.Node]*holderConn, progress func(done, total int64)) error {
	sc := newSched(missing, m.Size, func(i int) int64 { return int64(m.ChunkLen(i)) })
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	left := make(chan struct{}) // closed when every worker has returned
	var fatal error
	var fatalOnce sync.Once
	fail := func(err error) { fatalOnce.Do(func() { fatal = err; cancel() }) }
	for w, h := range holders {
		hc := conns[h]
		delete(conns, h) // the worker closes it
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.work(wctx, w, h, hc, id, m, sc, fail)
		}()
	}
	go func() { wg.Wait(); close(left) }() // ends with the workers, which end with wctx
	defer func() { cancel(); <-left }()
	var reported int64 = -1
	for {
		ch := sc.wait()
		done, total, n := sc.progress()
		if progress != nil && done != reported {
			reported = done
			progress(done, total)
		}
		if n == 0 {
			return nil
		}
		select {
		case <-ch:
		case <-left:
			if _, _, n := sc.progress(); n == 0 {
				continue
			}
			cancel()
			if fatal != nil {
				return fatal
			}
			if ctx.Err() != nil {
				return s.ended(ctx)
			}
			return fmt.Errorf("%w: %d chunks of %s not delivered", ErrNoSource, n, id.Short())
		}
	}
}

// work is the worker of one holder: it keeps a window of chunks
// outstanding, sized by the rate the holder delivers at, and stores each
// chunk that verifies. A holder that sends a chunk that does not verify,
// or breaks the protocol, is dropped from the transfer; its outstanding
// chunks go back to the queue.
//
// A connection that breaks (the holder's node restarted, or a duplicate
// connection between the two nodes was closed) is dialled again, up to
// maxRedials times in a row without a chunk stored in between.
func (s *Service) work(ctx context.Context, w int, holder ids.Node, hc *holderConn, id ids.Content,
	m *blob.Manifest, sc *sched, fail func(error)) {
	for failures := 0; ; {
		stored, again := s.workOn(ctx, w, holder, hc, id, m, sc, fail)
		hc = nil
		if !again || ctx.Err() != nil {
			return
		}
		if stored {
			failures = 0
		}
		if failures++; failures > maxRedials {
			return
		}
		select {
		case <-time.After(time.Duration(failures) * redialDelay):
		case <-ctx.Done():
			return
		}
	}
}

// Redials of a holder's broken connection during a fetch.
const (
	maxRedials  = 3
	redialDelay = 200 * time.Millisecond
)

// workOn is work on one connection (dialled if hc is nil). It returns
// whether it stored a chunk, and whether the connection broke (again:
// dial anew), as opposed to the holder lacking the file, breaking the
// protocol, sending bad data, or the fetch ending.
func (s *Service) workOn(ctx context.Context, w int, holder ids.Node, hc *holderConn, id ids.Content,
	m *blob.Manifest, sc *sched, fail func(error)) (stored, again bool) {
	var inflight []int
	defer func() {
		for _, i := range inflight {
			sc.release(w, i, false)
		}
	}()
	if hc == nil {
		c, err := s.host.Dial(ctx, holder, ServiceName)
		if err != nil {
			s.log.Debug("fetch: dialling a holder", "holder", holder.Short(), "err", err)
			return false, true
		}
		hc = &holderConn{c: c, r: bufio.NewReaderSize(c, 64<<10)}
	}
	defer hc.c.Close()
	stop := context.AfterFunc(ctx, func() { hc.c.Close() })
	defer stop()
	// The chunks read are verified and stored by a goroutine of their
	// own, while the next ones are read. bad is set when it met a chunk
	// that does not verify, or a write that failed: then it closes the
	// connection, gives back what is left, and the worker ends.
	store := make(chan chunkAnswer, 2)
	storerDone := make(chan struct{})
	var bad, storedAny atomic.Bool
	go func() {
		defer close(storerDone)
		for a := range store {
			if bad.Load() {
				sc.release(w, a.index, false)
				continue
			}
			if err := s.blobs.WriteChunk(id, a.index, a.data); err != nil {
				sc.release(w, a.index, false)
				bad.Store(true)
				hc.c.Close()
				if errors.Is(err, blob.ErrChunkMismatch) {
					s.nBad.Add(1)
					s.log.Debug("fetch: a holder sent a bad chunk", "holder", holder.Short(), "chunk", a.index)
					s.dropped(holder)
				} else {
					fail(fmt.Errorf("files: fetch: %w", err))
				}
				continue
			}
			sc.stored(w, a.index)
			storedAny.Store(true)
		}
	}()
	defer func() {
		close(store)
		<-storerDone
		stored = stored || storedAny.Load()
		again = again && !bad.Load()
	}()
	bw := bufio.NewWriter(hc.c)
	window := minWindow
	var rate float64 // bytes a second, smoothed
	last := time.Now()
	requested := s.hook().Requested
	for {
		if _, _, n := sc.progress(); n == 0 || ctx.Err() != nil || bad.Load() {
			return stored, false
		}
		ch := sc.wait()
		if len(inflight) < window {
			got := sc.take(w, window-len(inflight))
			for len(got) > 0 {
				run := 1
				for run < len(got) && run < maxRange && got[run] == got[0]+run {
					run++
				}
				if err := writeFrame(bw, reqChunks, chunksRequest(id, got[0], run)); err != nil {
					inflight = append(inflight, got...)
					return stored, true
				}
				for _, i := range got[:run] {
					inflight = append(inflight, i)
					if requested != nil {
						requested(holder, i)
					}
				}
				got = got[run:]
			}
			if err := bw.Flush(); err != nil {
				return stored, true
			}
		}
		if len(inflight) == 0 {
			if sc.lacksAll(w) {
				return stored, false // its holder has none of the chunks left: waiting would hold the transfer up
			}
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return stored, false
			}
		}
		if len(inflight) == 1 {
			last = time.Now() // the holder had nothing queued: do not count the idle time
		}
		a, err := readChunkAnswer(hc.r, m, inflight[0], nil)
		if err != nil {
			if errors.Is(err, ErrProtocol) {
				s.dropped(holder)
				return stored, false
			}
			return stored, true
		}
		if a.notFound {
			return stored, false
		}
		i := inflight[0]
		inflight = inflight[1:]
		if a.data == nil {
			sc.release(w, i, true)
			continue
		}
		store <- a
		now := time.Now()
		if dt := now.Sub(last).Seconds(); dt > 0 {
			r := float64(len(a.data)) / dt
			if rate == 0 {
				rate = r
			} else {
				rate = 0.7*rate + 0.3*r
			}
		}
		last = now
		window = windowFor(rate, m.ChunkSize)
	}
}
