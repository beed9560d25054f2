package pipeline

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/pipesnet/pipes/internal/blob"
	"github.com/pipesnet/pipes/internal/history"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/service"
)

// File packets. PutFile stores the file in the node's blob store (chunks
// of 256 KiB or more, sealed at rest) and puts a packet whose data is the
// file's manifest: its size and the BLAKE3 hash of each chunk. Every node
// that gets the packet fetches the chunks in the background, from the
// sender and the other nodes of the pipeline at once (those that fetched
// them already, or are fetching them), checks each against the manifest
// and stores it; a transfer that stops (a node leaves, the process
// restarts) resumes from the chunks already stored. Readers stream the
// content chunk by chunk as it arrives.
//
// On an encrypted pipeline each chunk is sealed with the pipeline key
// before it is hashed, so nodes without the secret fetch, check, store and
// serve chunks they cannot read; the manifest itself (sizes and hashes of
// sealed chunks) is not encrypted.
//
// Chunks travel on the file service's transfer (Config.Files, package
// files: data connections to its "pipes/files" service, every holder at
// once, each chunk verified before it is stored, holders that send bad
// data dropped). The engine decides who may have a file's chunks (a
// member of a pipeline with a packet of the file: on a point-to-point
// pipeline only its other node) and which nodes to fetch from. The files
// part is a service (fileserve.go): it registers that decision with the
// file service and owns the fetcher (filefetch.go).

const (
	fileRetry    = 10 * time.Second // all sources failed: try again after, doubling
	fileRetryMax = 10 * time.Minute
	// fileRetrySoon: a fetch that stored chunks before it stopped (a
	// holder went away midway) is tried again after this, and its delay
	// starts again from fileRetry.
	fileRetrySoon = time.Second
	fileFetchers  = 2 // files fetched at once
)

// FileTransfer moves the content of file packets between nodes: the
// node's file service (*files.Service) satisfies it.
type FileTransfer interface {
	// FetchBlob makes this node hold the blob of manifest m complete,
	// fetching the chunks it lacks from the holders given, at once, each
	// verified before it is stored; a holder that lacks the blob is fine.
	// It waits for the transfer to be started.
	FetchBlob(ctx context.Context, m *blob.Manifest, holders []ids.Node, progress func(done, total int64)) error
	// SetAuthorizer sets who may fetch blobs this node holds that are not
	// the transfer's own files (nil: nobody).
	SetAuthorizer(func(root ids.Content, asker ids.Node) bool)
}

// ErrNoFiles: the engine has no blob store.
var ErrNoFiles = errors.New("pipeline: this node keeps no files (no blob store)")

// ErrFileIncomplete: a read-only engine was asked for a file whose chunks
// are not all stored; only a running engine fetches what is missing.
var ErrFileIncomplete = errors.New("pipeline: the file is not complete on this node and the node is not started")

// Limits of file packets: chunks are at most 2 MiB (what a fetcher reads
// of one answer, and a reader holds, is one chunk), so files of 16384
// chunks are at most 32 GiB.
const (
	maxFileChunk = 2 << 20
	MaxFileSize  = blob.MaxChunks * maxFileChunk
)

// ErrFileTooLarge: a file larger than MaxFileSize.
var ErrFileTooLarge = fmt.Errorf("pipeline: file larger than %d GiB", MaxFileSize>>30)

// files is the engine's file-transfer part, a service (fileserve.go).
type files struct {
	e *Engine

	// Set by Start, before the goroutines start.
	ctx    context.Context
	cancel context.CancelFunc
	host   service.Host
	wg     sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	queue   []fetchJob
	kick    chan struct{}
	seenQ   chan seen
	waiting map[ids.Content]bool                  // roots queued or active
	hurry   map[ids.Content]chan struct{}         // roots waiting to be tried again: closed to try now
	owners  map[ids.Content]map[ids.Pipeline]bool // root -> the pipelines with a packet of the file
}

// seen is a file packet received, for the fetcher to look at.
type seen struct {
	p  *pipe
	pk *Packet
}

// noteFile hands a received file packet to the fetcher without blocking
// (it runs on the mesh loop or under the engine's lock). If the fetcher is
// behind, the file is fetched when a reader opens it.
func (e *Engine) noteFile(p *pipe, pk *Packet) {
	if e.cfg.Blobs == nil || pk.Sender == e.self {
		return
	}
	select {
	case e.files.seenQ <- seen{p: p, pk: pk}:
	default:
	}
}

func newFiles(e *Engine) *files {
	return &files{e: e, kick: make(chan struct{}, 1),
		seenQ: make(chan seen, 1024), waiting: map[ids.Content]bool{}, hurry: map[ids.Content]chan struct{}{},
		owners: map[ids.Content]map[ids.Pipeline]bool{}}
}

// fileAD binds a sealed chunk to its pipeline, sender and place.
func fileAD(pipe ids.Pipeline, sender ids.Node, index int) []byte {
	ad := append([]byte("pipes/v1 file chunk"), pipe[:]...)
	ad = append(ad, sender[:]...)
	return binary.BigEndian.AppendUint64(ad, uint64(index))
}

// PutFile puts the file at path on pipeline id as a file packet and
// returns its id. The file is read once, in chunks, into the blob store.
func (e *Engine) PutFile(ctx context.Context, id ids.Pipeline, path string, typ int64) (ids.Packet, error) {
	if e.cfg.Blobs == nil {
		return ids.Packet{}, ErrNoFiles
	}
	p, ok := e.pipeOf(id)
	if !ok {
		return ids.Packet{}, fmt.Errorf("%w %x", ErrUnknown, id[:4])
	}
	if p.def.Opts.Realtime {
		return ids.Packet{}, errors.New("pipeline: a realtime pipeline carries no files")
	}
	var transform func(int, []byte) []byte
	overhead := 0
	if p.def.Opts.Encrypted {
		k := p.key.Load()
		if k == nil {
			return ids.Packet{}, fmt.Errorf("%w (%q)", ErrNoSecret, p.def.Name)
		}
		overhead = SealOverhead
		transform = func(i int, chunk []byte) []byte {
			out := make([]byte, 24, SealOverhead+len(chunk))
			rand.Read(out)
			return k.packet.Seal(out, out, chunk, fileAD(id, e.self, i))
		}
	}
	if st, err := os.Stat(path); err != nil {
		return ids.Packet{}, fmt.Errorf("pipeline: file: %w", err)
	} else if st.Size() > MaxFileSize-int64(blob.MaxChunks*overhead) {
		return ids.Packet{}, fmt.Errorf("%w: %s", ErrFileTooLarge, path)
	}
	m, err := e.cfg.Blobs.ImportFile(ctx, path, overhead, transform)
	if err != nil {
		return ids.Packet{}, fmt.Errorf("pipeline: file %s: %w", path, err)
	}
	e.setOwner(m.Root(), id)
	pid, err := e.put(ctx, id, m.Marshal(), typ, ids.Node{}, true)
	if err != nil {
		e.dropFile(m.Root())
		return ids.Packet{}, err
	}
	return pid, nil
}

// setOwner records (and stores) that a packet of pipeline pipe carries
// the file root: askers that name one of its pipelines get its chunks,
// and the file is deleted when the last of them is.
func (e *Engine) setOwner(root ids.Content, pipe ids.Pipeline) {
	f := e.files
	f.mu.Lock()
	set := f.owners[root]
	if set[pipe] {
		f.mu.Unlock()
		return
	}
	if set == nil {
		set = map[ids.Pipeline]bool{}
		f.owners[root] = set
	}
	set[pipe] = true
	rec := ownerRecord(set)
	f.mu.Unlock()
	e.saveOwners(root, rec)
}

// mayServe reports whether asker may have the chunks of file root: a
// packet of a pipeline this node knows carries it, and the pipeline is a
// broadcast one (its data is every member's) or a point-to-point one
// whose other node is asker. It is the file service's authorizer.
func (e *Engine) mayServe(root ids.Content, asker ids.Node) bool {
	e.files.mu.Lock()
	pipes := make([]ids.Pipeline, 0, len(e.files.owners[root]))
	for id := range e.files.owners[root] {
		pipes = append(pipes, id)
	}
	e.files.mu.Unlock()
	for _, id := range pipes {
		p, ok := e.pipeOf(id)
		if ok && (!p.def.IsPointToPoint() || p.def.Opts.ToNode == asker) {
			return true
		}
	}
	return false
}

// ownedBy reports whether a packet of pipeline pipe carries the file root.
func (e *Engine) ownedBy(root ids.Content, pipe ids.Pipeline) bool {
	e.files.mu.Lock()
	defer e.files.mu.Unlock()
	return e.files.owners[root][pipe]
}

// ownerRecord encodes a set of pipelines, sorted.
func ownerRecord(set map[ids.Pipeline]bool) []byte {
	var pipes []ids.Pipeline
	for id := range set {
		pipes = append(pipes, id)
	}
	slices.SortFunc(pipes, func(a, b ids.Pipeline) int { return slices.Compare(a[:], b[:]) })
	rec := make([]byte, 0, 32*len(pipes))
	for _, id := range pipes {
		rec = append(rec, id[:]...)
	}
	return rec
}

func (e *Engine) saveOwners(root ids.Content, rec []byte) {
	if e.cfg.DB == nil {
		return
	}
	if err := history.SaveSealed(e.cfg.DB, history.KindOwner, e.self, root, e.defsKey(), rec); err != nil {
		e.log.Warn("cannot record a file's pipelines", "err", err)
	}
}

// loadOwners restores the owners of stored files.
func (e *Engine) loadOwners() {
	recs, err := history.LoadSealed[ids.Content](e.cfg.DB, history.KindOwner, e.self, e.defsKey())
	if err != nil {
		e.log.Warn("cannot load the files' pipelines", "err", err)
		return
	}
	e.files.mu.Lock()
	defer e.files.mu.Unlock()
	for root, v := range recs {
		if len(v) == 0 || len(v)%32 != 0 {
			continue
		}
		set := map[ids.Pipeline]bool{}
		for id := range slices.Chunk(v, 32) {
			set[ids.Pipeline(id)] = true
		}
		e.files.owners[root] = set
	}
}

// dropFile deletes a stored file and what is recorded of it.
func (e *Engine) dropFile(root ids.Content) {
	f := e.files
	f.mu.Lock()
	delete(f.owners, root)
	f.mu.Unlock()
	if err := e.cfg.Blobs.Remove(root); err != nil && !errors.Is(err, blob.ErrNotFound) {
		e.log.Warn("cannot delete a file", "err", err)
	}
	if e.cfg.DB != nil {
		history.DeleteSealed(e.cfg.DB, history.KindOwner, e.self, root)
		history.DeleteSealed(e.cfg.DB, history.KindFetch, e.self, root)
	}
}

// dropFilesOf deletes the files of a pipeline that was removed.
func (e *Engine) dropFilesOf(pipe ids.Pipeline) {
	if e.cfg.Blobs == nil {
		return
	}
	f := e.files
	var gone []ids.Content
	kept := map[ids.Content][]byte{}
	f.mu.Lock()
	for root, set := range f.owners {
		if !set[pipe] {
			continue
		}
		delete(set, pipe)
		if len(set) == 0 {
			gone = append(gone, root)
		} else {
			kept[root] = ownerRecord(set)
		}
	}
	f.mu.Unlock()
	for root, rec := range kept {
		e.saveOwners(root, rec)
	}
	for _, root := range gone {
		e.dropFile(root)
	}
}

// FileSize returns the size of a file packet's content as put (without
// what encryption adds).
func (e *Engine) FileSize(pk *Packet) (int64, error) {
	m, err := blob.ParseManifest(pk.Data)
	if err != nil {
		return 0, err
	}
	if p, ok := e.pipeOf(pk.Pipeline); ok && p.def.Opts.Encrypted {
		return m.Size - int64(len(m.Chunks)*SealOverhead), nil
	}
	return m.Size, nil
}

// OpenFile returns a reader of a file packet's content. It reads chunks
// as they arrive (starting the fetch if it is not under way), decrypting
// them on an encrypted pipeline, and holds one chunk at a time. It ends
// with ctx.
func (e *Engine) OpenFile(ctx context.Context, pk *Packet) (io.ReadCloser, error) {
	if e.cfg.Blobs == nil {
		return nil, ErrNoFiles
	}
	if !pk.File {
		return nil, errors.New("pipeline: not a file packet")
	}
	m, err := blob.ParseManifest(pk.Data)
	if err != nil {
		return nil, err
	}
	p, ok := e.pipeOf(pk.Pipeline)
	if !ok {
		return nil, fmt.Errorf("%w %x", ErrUnknown, pk.Pipeline[:4])
	}
	var k *pipeKey
	if p.def.Opts.Encrypted {
		if k = p.key.Load(); k == nil {
			return nil, fmt.Errorf("%w (%q)", ErrNoSecret, p.def.Name)
		}
	}
	if !e.cfg.Blobs.Complete(m.Root()) {
		if e.cfg.ReadOnly {
			return nil, ErrFileIncomplete
		}
		if err := e.cfg.Blobs.Add(m); err != nil {
			return nil, err
		}
		e.fileSeen(p, pk.Sender, m, false)
		e.hurryFetch(m.Root()) // a fetch waiting to be tried again is tried now
	}
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(e.ctx, cancel)
	return &fileReader{e: e, ctx: ctx, cancel: func() { stop(); cancel() }, m: m, root: m.Root(),
		key: k, pipe: pk.Pipeline, sender: pk.Sender}, nil
}

type fileReader struct {
	e      *Engine
	ctx    context.Context
	cancel func()
	m      *blob.Manifest
	root   ids.Content
	key    *pipeKey
	pipe   ids.Pipeline
	sender ids.Node
	next   int
	buf    []byte
}

func (r *fileReader) Read(b []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.next >= len(r.m.Chunks) {
			return 0, io.EOF
		}
		if err := r.e.cfg.Blobs.Wait(r.ctx, r.root, r.next); err != nil {
			return 0, fmt.Errorf("pipeline: file chunk %d: %w", r.next, err)
		}
		c, err := r.e.cfg.Blobs.ReadChunk(r.root, r.next)
		if err != nil {
			return 0, fmt.Errorf("pipeline: file chunk %d: %w", r.next, err)
		}
		if r.key != nil {
			if len(c) < SealOverhead {
				return 0, ErrCannotRead
			}
			if c, err = r.key.packet.Open(c[24:24], c[:24], c[24:], fileAD(r.pipe, r.sender, r.next)); err != nil {
				return 0, ErrCannotRead
			}
		}
		r.buf = c
		r.next++
	}
	n := copy(b, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func (r *fileReader) Close() error {
	r.cancel()
	return nil
}
