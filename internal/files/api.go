package files

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/pipesnet/pipes/internal/blob"
	"github.com/pipesnet/pipes/internal/ids"
)

// MaxUnsizedReader is the most bytes AddReader takes from a reader whose
// size it cannot learn (not a file, nor with a Len or Size method): such
// a reader is read into memory first, because a blob's chunk size and
// layout follow from its size. Larger content is added from a file (Add)
// or a sized reader.
const MaxUnsizedReader = 64 << 20

// zeroNonce is the manifest nonce of the service's imports (see the
// package comment).
var zeroNonce [16]byte

// Add imports the file at path under its base name and makes this node a
// holder. A directory fails with ErrIsDir, a missing file with an error
// matching fs.ErrNotExist, a file whose size changes meanwhile with one
// matching blob.ErrChanged; nothing is stored then.
func (s *Service) Add(ctx context.Context, path string, o AddOptions) (ids.Content, error) {
	if err := s.enter(); err != nil {
		return ids.Content{}, err
	}
	defer s.wg.Done()
	fi, err := os.Stat(path)
	if err != nil {
		return ids.Content{}, fmt.Errorf("files: add: %w", err)
	}
	if fi.IsDir() {
		return ids.Content{}, fmt.Errorf("%w: %s", ErrIsDir, path)
	}
	name := filepath.Base(path)
	if len(name) > MaxName {
		return ids.Content{}, fmt.Errorf("files: add: a name has at most %d bytes", MaxName)
	}
	if len(o.Readers) > 0 {
		return s.addRestrictedFile(ctx, path, name, o.Readers) // access.go
	}
	m, err := s.blobs.ImportFile(ctx, path, 0, nil, blob.WithNonce(zeroNonce))
	if err != nil {
		return ids.Content{}, fmt.Errorf("files: add %s: %w", path, err)
	}
	return s.added(m, name)
}

// AddReader imports the content r gives under name and makes this node a
// holder. See MaxUnsizedReader for readers of unknown size.
func (s *Service) AddReader(ctx context.Context, name string, r io.Reader, o AddOptions) (ids.Content, error) {
	if err := s.enter(); err != nil {
		return ids.Content{}, err
	}
	defer s.wg.Done()
	if len(name) > MaxName {
		return ids.Content{}, fmt.Errorf("files: add: a name has at most %d bytes", MaxName)
	}
	size := int64(-1)
	switch v := r.(type) {
	case *os.File:
		if fi, err := v.Stat(); err == nil && fi.Mode().IsRegular() {
			if off, err := v.Seek(0, io.SeekCurrent); err == nil {
				size = fi.Size() - off
			}
		}
	case interface{ Len() int }:
		size = int64(v.Len())
	case interface{ Size() int64 }:
		size = v.Size()
	}
	if size < 0 {
		b, err := io.ReadAll(io.LimitReader(r, MaxUnsizedReader+1))
		if err != nil {
			return ids.Content{}, fmt.Errorf("files: add %s: %w", name, err)
		}
		if len(b) > MaxUnsizedReader {
			return ids.Content{}, fmt.Errorf("%w: a reader of unknown size has more than %d bytes", ErrTooLarge, MaxUnsizedReader)
		}
		r, size = bytes.NewReader(b), int64(len(b))
	}
	if len(o.Readers) > 0 {
		return s.addRestricted(ctx, name, r, size, o.Readers) // access.go
	}
	m, err := s.blobs.Import(ctx, r, size, 0, nil, blob.WithNonce(zeroNonce))
	if err != nil {
		return ids.Content{}, fmt.Errorf("files: add %s: %w", name, err)
	}
	if n, _ := r.Read(make([]byte, 1)); n > 0 {
		// More bytes than the size said: the file grew meanwhile.
		s.discard(m.Root())
		return ids.Content{}, fmt.Errorf("files: add %s: %w", name, blob.ErrChanged)
	}
	return s.added(m, name)
}

// discard removes the blob id just imported unless a record keeps it.
func (s *Service) discard(id ids.Content) {
	s.mu.Lock()
	kept := s.files[id] != nil
	s.mu.Unlock()
	if !kept {
		s.blobs.Remove(id)
	}
}

// added records the file of manifest m, complete.
func (s *Service) added(m *blob.Manifest, name string) (ids.Content, error) {
	id := m.Root()
	if err := s.save(id, &record{name: name, size: m.Size, complete: true}); err != nil {
		return ids.Content{}, err
	}
	s.exclude(id, false)
	return id, nil
}

// Stat describes file id: from this node's record, or asking a holder of
// the index for its name and size.
func (s *Service) Stat(ctx context.Context, id ids.Content) (Info, error) {
	if err := s.enter(); err != nil {
		return Info{}, err
	}
	defer s.wg.Done()
	s.mu.Lock()
	r := s.files[id]
	s.mu.Unlock()
	holders := s.holdersOf(id, r)
	if r != nil {
		info := Info{ID: id, Name: r.name, Size: r.size, Local: r.complete, Holders: holders}
		s.fill(&info) // access.go
		return s.withDuties(info), nil
	}
	if d := s.rep.dut.get(dutyArchive, id); d != nil && len(holders) == 0 {
		return s.withDuties(Info{ID: id, Name: d.name, Size: d.size}), nil
	}
	if len(holders) == 0 {
		return Info{}, fmt.Errorf("%w: file %s", ErrNotFound, id.Short())
	}
	var errs []error
	for _, h := range holders {
		name, m, err := s.askManifest(ctx, h, id)
		if err == nil {
			info := Info{ID: id, Name: name, Size: m.Size, Holders: holders, Readable: !restricted(m)}
			if restricted(m) {
				s.fillRemote(ctx, h, id, m, &info) // access.go
			}
			return s.withDuties(info), nil
		}
		errs = append(errs, err)
	}
	return Info{}, fmt.Errorf("%w: %w", ErrNoSource, errors.Join(errs...))
}

// askManifest asks holder for the name and manifest of id.
func (s *Service) askManifest(ctx context.Context, holder ids.Node, id ids.Content) (string, *blob.Manifest, error) {
	c, err := s.host.Dial(ctx, holder, ServiceName)
	if err != nil {
		return "", nil, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	return manifestOn(c, bufio.NewReader(c), id)
}

// holdersOf returns the holders of id in the index, and this node if r
// says it is complete here.
func (s *Service) holdersOf(id ids.Content, r *record) []ids.Node {
	hs := s.idx.holders(id)
	if r != nil && r.complete {
		self := s.host.Self()
		if !slices.Contains(hs, self) {
			hs = append(hs, self)
			slices.SortFunc(hs, func(a, b ids.Node) int { return bytes.Compare(a[:], b[:]) })
		}
	}
	return hs
}

// List describes the files this node keeps, complete or being fetched,
// in id order.
func (s *Service) List() []Info {
	s.mu.Lock()
	type kept struct {
		id ids.Content
		r  record
	}
	var ks []kept
	for id, r := range s.files {
		ks = append(ks, kept{id, *r})
	}
	s.mu.Unlock()
	slices.SortFunc(ks, func(a, b kept) int { return compareIDs(a.id, b.id) })
	out := make([]Info, 0, len(ks))
	for _, k := range ks {
		info := Info{ID: k.id, Name: k.r.name, Size: k.r.size, Local: k.r.complete,
			Holders: s.holdersOf(k.id, &k.r)}
		s.fill(&info) // access.go
		out = append(out, s.withDuties(info))
	}
	return out
}

// Remove deletes this node's copy of id and its record, and announces
// that it no longer holds it; the node takes no copy of it for a duty
// from then on (until it adds or fetches it again). ErrNotFound if it
// has neither; ErrBusy while a fetch of it runs.
func (s *Service) Remove(_ context.Context, id ids.Content) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.wg.Done()
	s.mu.Lock()
	r, busy := s.files[id], s.fetches[id] != nil
	s.mu.Unlock()
	if busy {
		return fmt.Errorf("%w: %s", ErrBusy, id.Short())
	}
	if r == nil {
		return fmt.Errorf("%w: file %s", ErrNotFound, id.Short())
	}
	s.exclude(id, true)
	if err := s.ns.Delete(recordKey(id)); err != nil {
		return fmt.Errorf("files: remove: %w", err)
	}
	s.mu.Lock()
	delete(s.files, id)
	s.mu.Unlock()
	s.forget(id) // access.go
	s.touch()
	if err := s.blobs.Remove(id); err != nil && !errors.Is(err, blob.ErrNotFound) {
		return fmt.Errorf("files: remove: %w", err)
	}
	return nil
}
