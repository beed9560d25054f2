package pipes

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"strings"

	"github.com/pipesnet/pipes/internal/files"
	"github.com/pipesnet/pipes/internal/ids"
)

// FileID is a file's id: the BLAKE3 root of its content (the hash of its
// manifest, which lists the BLAKE3 hash of every chunk), so the same
// content gives the same id on every node, and every chunk is verified
// against it wherever it comes from.
type FileID [32]byte

// String returns the id in lower-case hex.
func (id FileID) String() string { return hex.EncodeToString(id[:]) }

// ParseFileID parses the 64 hex digits of a file id (ErrInvalidID
// otherwise).
func ParseFileID(s string) (FileID, error) {
	var id FileID
	b, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != len(id) {
		return id, fmt.Errorf("%w: a file id is 64 hex digits, not %q", ErrInvalidID, s)
	}
	copy(id[:], b)
	return id, nil
}

// FileInfo describes a file.
type FileInfo struct {
	ID      FileID
	Name    string // the name it was added under
	Size    int64  // bytes
	Local   bool   // this node holds it complete
	Holders []NodeID
}

// FileOption is an option of Files.Add and Files.AddReader. There are
// none yet.
type FileOption func(*fileOptions)

type fileOptions struct{}

// Files is the node's file service: files kept in the node's store
// (encrypted at rest), shared with the network's nodes, fetched from
// every node that holds them at once. Which nodes hold which files is
// announced by each holder to the whole network, so any node knows the
// holders without asking (docs/architecture.md, "Files"). The node must
// be started (ErrNotActive).
type Files struct{ n *Node }

// Files returns the node's file service.
func (n *Node) Files() *Files { return &Files{n: n} }

func (f *Files) svc() (*files.Service, error) {
	f.n.mu.Lock()
	defer f.n.mu.Unlock()
	if f.n.mu.files == nil {
		return nil, ErrNotActive
	}
	return f.n.mu.files, nil
}

// Add imports the file at path, under its base name, and makes this node
// one of its holders. Errors: ErrIsDir, ErrNotFound (no such file),
// ErrChanged (the file's size changed meanwhile), ErrDiskFull; nothing is
// stored then.
func (f *Files) Add(ctx context.Context, path string, opts ...FileOption) (FileID, error) {
	s, err := f.svc()
	if err != nil {
		return FileID{}, err
	}
	id, err := s.Add(ctx, path)
	return FileID(id), mapErr(err, "")
}

// AddReader imports what r gives, under name, and makes this node one of
// its holders. A reader whose size can be learnt (a file, or one with a
// Len or Size method) is streamed; any other is read into memory first
// and may give at most 64 MiB (ErrTooLarge).
func (f *Files) AddReader(ctx context.Context, name string, r io.Reader, opts ...FileOption) (FileID, error) {
	s, err := f.svc()
	if err != nil {
		return FileID{}, err
	}
	id, err := s.AddReader(ctx, name, r)
	return FileID(id), mapErr(err, "")
}

func fileInfo(i files.Info) FileInfo {
	hs := make([]NodeID, len(i.Holders))
	for k, h := range i.Holders {
		hs[k] = NodeID(h)
	}
	return FileInfo{ID: FileID(i.ID), Name: i.Name, Size: i.Size, Local: i.Local, Holders: hs}
}

// Stat describes file id: its holders as announced, and its name and size
// (from this node's copy, or asked of a holder). ErrNotFound if the node
// has no copy and knows no holder.
func (f *Files) Stat(ctx context.Context, id FileID) (FileInfo, error) {
	s, err := f.svc()
	if err != nil {
		return FileInfo{}, err
	}
	i, err := s.Stat(ctx, ids.Content(id))
	if err != nil {
		return FileInfo{}, mapErr(err, "file "+id.String()[:8])
	}
	return fileInfo(i), nil
}

// Fetch makes this node hold file id: it asks every holder known at once
// for the chunks it lacks, favouring the faster ones, verifies each
// chunk before it is stored, and drops a holder that sends a bad one.
// Chunks present are not asked for again, so a fetch that was interrupted
// (ctx, a shutdown) resumes where it stopped. progress, if not nil, gets
// the bytes present and the file's size as chunks arrive. Errors:
// ErrNotFound (no holder known), ErrNotConnected (the holders could not
// deliver every chunk), ctx's error.
func (f *Files) Fetch(ctx context.Context, id FileID, progress func(done, total int64)) error {
	s, err := f.svc()
	if err != nil {
		return err
	}
	err = s.Fetch(ctx, ids.Content(id), progress)
	if err != nil && ctx.Err() != nil && err == ctx.Err() {
		return err
	}
	return mapErr(err, "file "+id.String()[:8])
}

// Open returns a reader of this node's copy of id (ErrNotFound without
// one). Everything it returns was verified. Reading a part that has not
// arrived waits for it while a Fetch of the file runs on this node, and
// fails with ErrIncomplete otherwise.
func (f *Files) Open(id FileID) (io.ReadSeekCloser, error) {
	s, err := f.svc()
	if err != nil {
		return nil, err
	}
	r, err := s.Open(ids.Content(id))
	if err != nil {
		return nil, mapErr(err, "file "+id.String()[:8])
	}
	return mappedReader{r}, nil
}

// mappedReader maps the errors of a file's reader.
type mappedReader struct{ r io.ReadSeekCloser }

func (m mappedReader) Read(p []byte) (int, error) {
	n, err := m.r.Read(p)
	if err != nil && err != io.EOF {
		err = mapErr(err, "")
	}
	return n, err
}

func (m mappedReader) Seek(off int64, whence int) (int64, error) { return m.r.Seek(off, whence) }
func (m mappedReader) Close() error                              { return m.r.Close() }

// Remove deletes this node's copy of id and tells the network it no
// longer holds it. ErrNotFound if it has none; ErrBusy while a Fetch of
// it runs.
func (f *Files) Remove(ctx context.Context, id FileID) error {
	s, err := f.svc()
	if err != nil {
		return err
	}
	return mapErr(s.Remove(ctx, ids.Content(id)), "file "+id.String()[:8])
}

// List describes the files this node keeps, complete or being fetched, in
// id order (none when the node is not started).
func (f *Files) List() []FileInfo {
	s, err := f.svc()
	if err != nil {
		return nil
	}
	var out []FileInfo
	for _, i := range s.List() {
		out = append(out, fileInfo(i))
	}
	return out
}
