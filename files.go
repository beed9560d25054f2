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
	Name    string // the name it was added under ("" for a restricted file this node cannot read)
	Size    int64  // bytes of the content (of a restricted file: its plaintext, once its header was read)
	Local   bool   // this node holds it complete
	Holders []NodeID

	// Readers are the identities whose nodes can read the file (nil: every
	// node of the network); Readable says whether this node can. For a
	// restricted file whose header this node could not read (a fetch that
	// has not got the file's start yet, or a holder asked by Stat that
	// did not give it), Readers is nil and Readable false.
	Readers  []IdentityID
	Readable bool
	// Copies is the number of copies the network keeps of the file
	// (Replicate), 0 if it has no such duty.
	Copies int
	// Archive describes the file's erasure-coded archive (Archive), nil
	// if it has none.
	Archive *FileArchive
}

// FileArchive describes the erasure-coded archive of a file: Data+Parity
// shards on distinct nodes, any Data of which restore it.
type FileArchive struct {
	Data, Parity int
	Compressed   bool // compressed (zstd) before it was sharded
	Shards       []FileShard
}

// FileShard is one shard of an archive.
type FileShard struct {
	Index   int
	ID      FileID // the shard's own content id
	Holders []NodeID
}

// FileOption is an option of Files.Add and Files.AddReader.
type FileOption func(*fileOptions)

type fileOptions struct{ readers []ids.Identity }

func addOptions(opts []FileOption) files.AddOptions {
	var o fileOptions
	for _, f := range opts {
		f(&o)
	}
	return files.AddOptions{Readers: o.readers}
}

// WithReaders makes only the nodes of these identities able to read the
// file: its content is encrypted under a key that is sealed to each
// identity. Other nodes may hold, check and serve its ciphertext (blind
// replication), and get ErrNoSecret from Open. The adding node's own
// identity is always a reader. The file's id is that of its ciphertext,
// so the same content added again, or for other readers, gets another id.
// Each identity's nodes publish its reader key; Add fails with
// ErrNotFound, storing nothing, for an identity whose key this node has
// not learnt (none of its nodes has been online since this node joined).
// The name is sealed with the content: other nodes see it empty.
func WithReaders(readers ...IdentityID) FileOption {
	return func(o *fileOptions) {
		for _, id := range readers {
			o.readers = append(o.readers, ids.Identity(id))
		}
	}
}

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
	id, err := s.Add(ctx, path, addOptions(opts))
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
	id, err := s.AddReader(ctx, name, r, addOptions(opts))
	return FileID(id), mapErr(err, "")
}

func fileInfo(i files.Info) FileInfo {
	hs := make([]NodeID, len(i.Holders))
	for k, h := range i.Holders {
		hs[k] = NodeID(h)
	}
	fi := FileInfo{ID: FileID(i.ID), Name: i.Name, Size: i.Size, Local: i.Local, Holders: hs,
		Readable: i.Readable, Copies: i.Copies}
	for _, r := range i.Readers {
		fi.Readers = append(fi.Readers, IdentityID(r))
	}
	if a := i.Archive; a != nil {
		fi.Archive = &FileArchive{Data: a.Data, Parity: a.Parity, Compressed: a.Compressed}
		for _, sh := range a.Shards {
			fs := FileShard{Index: sh.Index, ID: FileID(sh.ID)}
			for _, h := range sh.Holders {
				fs.Holders = append(fs.Holders, NodeID(h))
			}
			fi.Archive.Shards = append(fi.Archive.Shards, fs)
		}
	}
	return fi
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

// Replicate makes the network keep at least copies copies of file id on
// online nodes from now on: nodes take copies until there are copies
// holders, and when holders leave for good (offline for longer than the
// repair delay, see docs/architecture.md "Replication") others take
// theirs; copies beyond the duty that nodes took for it are released. The
// duty is stored by the nodes and survives restarts; Replicate with
// copies 0 ends it. It returns when copies nodes hold the file, or with
// ctx's error (the duty stays). Errors: ErrNotFound (no holder known),
// ErrInvalid (copies below 0), ErrTooFewNodes (fewer known nodes than
// copies; the duty stays and is met as nodes join).
func (f *Files) Replicate(ctx context.Context, id FileID, copies int) error {
	s, err := f.svc()
	if err != nil {
		return err
	}
	err = s.Replicate(ctx, ids.Content(id), copies)
	if err != nil && ctx.Err() != nil && err == ctx.Err() {
		return err
	}
	return mapErr(err, "file "+id.String()[:8])
}

// Archive stores an erasure-coded archive of file id: the content
// (compressed with zstd first when that pays) is cut into data shards and
// parity shards are computed (Reed-Solomon), data+parity shards in all,
// each put on a distinct node; any data of them restore the file, so it
// survives the loss of parity holders. Lost shards are rebuilt and placed
// anew. Fetch of an archived file with no complete holder restores it
// from its shards. Errors: ErrNotFound, ErrInvalid (data below 1, parity
// below 0, more than 256 shards), ErrTooFewNodes (fewer nodes than
// shards).
func (f *Files) Archive(ctx context.Context, id FileID, data, parity int) error {
	s, err := f.svc()
	if err != nil {
		return err
	}
	err = s.Archive(ctx, ids.Content(id), data, parity)
	if err != nil && ctx.Err() != nil && err == ctx.Err() {
		return err
	}
	return mapErr(err, "file "+id.String()[:8])
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
