package files

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/pipesnet/pipes/internal/ids"
)

// Archive spreads an erasure-coded archive of file id over distinct
// nodes: data+parity shards, any data of which restore it. The node
// fetches the file first if it lacks it; it compresses the content
// (zstd) when a sample shows that it pays, cuts it into data shards and
// computes the parity shards (Reed-Solomon, streamed through temporary
// files), imports each shard as a file of the service, and sets the
// file's archive duty, which lists the shards; every node then places
// the shards (assignShards) and repairs lost ones. It returns once every
// shard is on the node it is assigned to, or with ctx's error (the duty
// stays). Errors: ErrInvalid, ErrNotFound, ErrTooFewNodes (fewer nodes
// known than shards: nothing is set).
func (s *Service) Archive(ctx context.Context, id ids.Content, data, parity int) error {
	if data < 1 || parity < 0 || data+parity > MaxShards {
		return fmt.Errorf("%w: %d data and %d parity shards (1 or more data, 0 or more parity, at most %d in all)",
			ErrInvalid, data, parity, MaxShards)
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.wg.Done()
	if n := len(s.view(time.Now()).nodes(false)); n < data+parity {
		return fmt.Errorf("%w: %d shards, %d nodes known", ErrTooFewNodes, data+parity, n)
	}
	if r, ok := s.recordOf(id); !ok || !r.complete || r.temp {
		if err := s.Fetch(ctx, id, nil); err != nil {
			return err
		}
	}
	r, ok := s.recordOf(id)
	if !ok || !r.complete {
		return fmt.Errorf("%w: file %s", ErrNotFound, id.Short())
	}
	sc, err := s.newScratch("archive", id)
	if err != nil {
		return err
	}
	defer sc.remove()

	m, err := s.blobs.Manifest(id)
	if err != nil {
		return fmt.Errorf("files: archive: %w", err)
	}
	d := &duty{kind: dutyArchive, file: id, data: data, parity: parity, size: r.size, payload: r.size, name: r.name,
		restricted: restricted(m)}
	sample := make([]byte, min(r.size, compressSample))
	src := s.blobs.Reader(ctx, id)
	_, err = io.ReadFull(src, sample)
	src.Close()
	if err != nil {
		return fmt.Errorf("files: archive: %w", err)
	}
	payload := func() (io.ReadCloser, error) { return s.blobs.Reader(ctx, id), nil }
	if pays(sample) {
		src := s.blobs.Reader(ctx, id)
		d.payload, err = compressTo(sc, "payload", src)
		src.Close()
		if err != nil {
			return fmt.Errorf("files: archive: compressing: %w", err)
		}
		d.compressed = true
		payload = func() (io.ReadCloser, error) { return sc.open("payload") }
	}
	d.shardSize = shardSizeOf(d.payload, data)
	in, err := payload()
	if err != nil {
		return fmt.Errorf("files: archive: %w", err)
	}
	paths, err := cutShards(sc, id, data, parity, in, d.payload)
	in.Close()
	if err != nil {
		return fmt.Errorf("files: archive: %w", err)
	}
	for i, p := range paths {
		m, err := s.importScratch(ctx, sc, p, zeroNonce)
		if err != nil {
			return fmt.Errorf("files: archive: %w", err)
		}
		sh := m.Root()
		d.shards = append(d.shards, sh)
		if old, ok := s.recordOf(sh); ok && old.complete && !old.temp {
			continue // kept already (by its user, or for the duty)
		}
		if err := s.save(sh, &record{name: shardName(r.name, i), size: m.Size, complete: true, duty: true}); err != nil {
			return err
		}
	}
	if err := s.setDuty(ctx, d); err != nil {
		return err
	}
	return s.waitUntil(ctx, func(v *view) bool { return placed(v, d) })
}

func shardName(name string, i int) string {
	n := fmt.Sprintf("%s.shard%d", name, i)
	if len(n) > MaxName {
		n = fmt.Sprintf("shard%d", i)
	}
	return n
}

// placed reports whether every shard of d is on an online node of its
// own.
func placed(v *view, d *duty) bool {
	to := assignShards(v, d.shards)
	seen := map[ids.Node]bool{}
	for i, sh := range d.shards {
		if seen[to[i]] || !slices.Contains(v.holders(sh, sh, true), to[i]) {
			return false
		}
		seen[to[i]] = true
	}
	return true
}

// gathered are the shards of an archive a restore or a rebuild reads.
type gathered struct {
	s       *Service
	d       *duty
	have    []bool
	fetched []ids.Content // fetched for this: dropped at the end
}

// gather makes data shards of d local (but skip), fetching those that
// are not, as temporary copies.
func (s *Service) gather(ctx context.Context, d *duty, skip int) (*gathered, error) {
	g := &gathered{s: s, d: d, have: make([]bool, len(d.shards))}
	got := 0
	v := s.view(time.Now())
	var errs []error
	for i, sh := range d.shards {
		if got == d.data {
			break
		}
		if i == skip {
			continue
		}
		r, ok := s.recordOf(sh)
		if !ok || !r.complete {
			if len(v.holders(sh, sh, true)) == 0 {
				continue
			}
			if err := s.fetchAs(ctx, sh, nil, recTemp); err != nil {
				if ctx.Err() != nil {
					g.done()
					return nil, s.ended(ctx)
				}
				errs = append(errs, err)
				continue
			}
			if r, _ := s.recordOf(sh); r.temp {
				g.fetched = append(g.fetched, sh)
			}
		}
		g.have[i] = true
		got++
	}
	if got < d.data {
		g.done()
		return nil, fmt.Errorf("%w: %d shards of %s reachable, %d needed: %w", ErrNoSource, got, d.file.Short(), d.data, errors.Join(errs...))
	}
	return g, nil
}

// open returns a reader of the bytes of shard i (after its header).
func (g *gathered) open(ctx context.Context, i int) (io.ReadCloser, error) {
	rc := g.s.blobs.Reader(ctx, g.d.shards[i])
	if err := checkHead(rc, g.d.file, i, g.d.data, g.d.parity); err != nil {
		rc.Close()
		return nil, fmt.Errorf("files: shard %d: %w", i, err)
	}
	return rc, nil
}

// done drops the temporary copies fetched.
func (g *gathered) done() {
	for _, sh := range g.fetched {
		g.s.mu.Lock()
		r := g.s.files[sh]
		drop := r != nil && r.temp && g.s.fetches[sh] == nil
		if drop {
			delete(g.s.files, sh)
		}
		g.s.mu.Unlock()
		if drop {
			g.s.ns.Delete(recordKey(sh))
			g.s.blobs.Remove(sh)
		}
	}
}

// readers opens the shards gathered (nil for the others); close closes
// them.
func (g *gathered) readers(ctx context.Context) (rs []io.Reader, close func(), err error) {
	var cs []io.Closer
	close = func() {
		for _, c := range cs {
			c.Close()
		}
	}
	rs = make([]io.Reader, len(g.have))
	for i, ok := range g.have {
		if !ok {
			continue
		}
		rc, err := g.open(ctx, i)
		if err != nil {
			close()
			return nil, nil, err
		}
		cs = append(cs, rc)
		rs[i] = rc
	}
	return rs, close, nil
}

// restore rebuilds file d.file from data of its shards and imports it
// (its id checked); flags mark the copy as for fetchAs.
func (s *Service) restore(ctx context.Context, d *duty, progress func(done, total int64), flags byte) error {
	g, err := s.gather(ctx, d, -1)
	if err != nil {
		return err
	}
	defer g.done()
	sc, err := s.newScratch("restore", d.file)
	if err != nil {
		return err
	}
	defer sc.remove()
	// Rebuild the data shards missing, to files.
	rebuilt := map[int]string{}
	if d.payload > 0 && slices.Contains(g.have[:d.data], false) {
		enc, err := coder(d.data, d.parity)
		if err != nil {
			return fmt.Errorf("files: restore: %w", err)
		}
		valid, closeAll, err := g.readers(ctx)
		if err != nil {
			return err
		}
		fill := make([]io.Writer, len(d.shards))
		var fs []*scratchFile
		for i := range d.data {
			if g.have[i] {
				continue
			}
			rebuilt[i] = fmt.Sprintf("data%d", i)
			f, err := sc.create(rebuilt[i])
			if err != nil {
				closeAll()
				return fmt.Errorf("files: restore: %w", err)
			}
			fs = append(fs, f)
			fill[i] = f
		}
		err = enc.Reconstruct(valid, fill)
		closeAll()
		for _, f := range fs {
			f.Close()
		}
		if err != nil {
			return fmt.Errorf("files: restore: %w: %w", ErrBadData, err)
		}
	}
	// Join the data shards into the payload, decompressed.
	out := "out"
	if err := s.join(ctx, g, d, rebuilt, sc, out); err != nil {
		return err
	}
	nonce := zeroNonce
	if d.restricted {
		nonce = restrictedNonce // the blob of the ciphertext, as access.go imports it
	}
	m, err := s.importScratch(ctx, sc, out, nonce)
	if err != nil {
		return fmt.Errorf("files: restore: %w", err)
	}
	if m.Root() != d.file {
		s.discard(m.Root())
		return fmt.Errorf("%w: the shards of %s restore other content", ErrBadData, d.file.Short())
	}
	if err := s.save(d.file, &record{name: d.name, size: m.Size, complete: true,
		duty: flags&recDuty != 0, temp: flags&recTemp != 0}); err != nil {
		return err
	}
	if progress != nil {
		progress(m.Size, m.Size)
	}
	return nil
}

// join writes the payload of d, decompressed, to the scratch file out.
func (s *Service) join(ctx context.Context, g *gathered, d *duty, rebuilt map[int]string, sc *scratch, out string) error {
	payload := out
	if d.compressed {
		payload = "payload"
	}
	f, err := sc.create(payload)
	if err != nil {
		return fmt.Errorf("files: restore: %w", err)
	}
	defer f.Close()
	if d.payload > 0 {
		enc, err := coder(d.data, d.parity)
		if err != nil {
			return fmt.Errorf("files: restore: %w", err)
		}
		in := make([]io.Reader, d.data)
		for i := range d.data {
			if p, ok := rebuilt[i]; ok {
				rf, err := sc.open(p)
				if err != nil {
					return fmt.Errorf("files: restore: %w", err)
				}
				defer rf.Close()
				in[i] = rf
				continue
			}
			rc, err := g.open(ctx, i)
			if err != nil {
				return err
			}
			defer rc.Close()
			in[i] = rc
		}
		if err := enc.Join(f, in, d.payload); err != nil {
			return fmt.Errorf("files: restore: %w: %w", ErrBadData, err)
		}
	}
	if !d.compressed {
		return f.Sync()
	}
	pr, err := sc.open(payload)
	if err != nil {
		return fmt.Errorf("files: restore: %w", err)
	}
	defer pr.Close()
	o, err := sc.create(out)
	if err != nil {
		return fmt.Errorf("files: restore: %w", err)
	}
	defer o.Close()
	if err := decompressTo(o, pr); err != nil {
		return fmt.Errorf("files: restore: %w: %w", ErrBadData, err)
	}
	return o.Sync()
}

// rebuildShard rebuilds shard i of d from data others, imports it (its id
// checked) and keeps it for the duty.
func (s *Service) rebuildShard(ctx context.Context, d *duty, i int) error {
	sc, err := s.newScratch("rebuild", d.file)
	if err != nil {
		return err
	}
	defer sc.remove()
	path := "shard"
	f, err := sc.create(path)
	if err != nil {
		return fmt.Errorf("files: rebuild: %w", err)
	}
	defer f.Close()
	if _, err := f.Write(shardHead(d.file, i, d.data, d.parity)); err != nil {
		return fmt.Errorf("files: rebuild: %w", err)
	}
	if d.shardSize > 0 {
		g, err := s.gather(ctx, d, i)
		if err != nil {
			return err
		}
		defer g.done()
		enc, err := coder(d.data, d.parity)
		if err != nil {
			return fmt.Errorf("files: rebuild: %w", err)
		}
		valid, closeAll, err := g.readers(ctx)
		if err != nil {
			return err
		}
		fill := make([]io.Writer, len(d.shards))
		fill[i] = f
		err = enc.Reconstruct(valid, fill)
		closeAll()
		if err != nil {
			return fmt.Errorf("files: rebuild: %w: %w", ErrBadData, err)
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("files: rebuild: %w", err)
	}
	f.Close()
	m, err := s.importScratch(ctx, sc, path, zeroNonce)
	if err != nil {
		return fmt.Errorf("files: rebuild: %w", err)
	}
	if m.Root() != d.shards[i] {
		s.discard(m.Root())
		return fmt.Errorf("%w: shard %d of %s rebuilt to other content", ErrBadData, i, d.file.Short())
	}
	return s.save(m.Root(), &record{name: shardName(d.name, i), size: m.Size, complete: true, duty: true})
}
