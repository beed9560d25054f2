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

	"google.golang.org/protobuf/proto"

	"github.com/pipesnet/pipes/internal/blob"
	"github.com/pipesnet/pipes/internal/history"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

// File packets. PutFile stores the file in the node's blob store (chunks
// of 256 KiB or more, sealed at rest) and puts a packet whose data is the
// file's manifest: its size and the BLAKE3 hash of each chunk. Every node
// that gets the packet fetches the chunks in the background from the
// sender, or from other nodes of the pipeline that have them, checks each
// against the manifest and stores it; a transfer that stops (a node
// leaves, the process restarts) resumes from the chunks already stored.
// Readers stream the content chunk by chunk as it arrives.
//
// On an encrypted pipeline each chunk is sealed with the pipeline key
// before it is hashed, so nodes without the secret fetch, check, store and
// serve chunks they cannot read; the manifest itself (sizes and hashes of
// sealed chunks) is not encrypted.
//
// Chunks travel as routed messages: FileGet (kind 21) asks for one chunk,
// FileData (kind 22) answers; both inside Sealed on a point-to-point
// pipeline. A fetch keeps fileWindow requests in flight per file.

// Message kinds of file transfer.
const (
	KindFileGet  uint32 = 21
	KindFileData uint32 = 22
)

const (
	fileWindow   = 12               // chunk requests in flight per file
	fileStall    = 15 * time.Second // no answer for this long: ask the next node
	fileRetry    = 10 * time.Second // all sources failed: try again after, doubling
	fileRetryMax = 10 * time.Minute
	fileServers  = 2 // goroutines serving chunks
	fileFetchers = 2 // files fetched at once
)

// ErrNoFiles: the engine has no blob store.
var ErrNoFiles = errors.New("pipeline: this node keeps no files (no blob store)")

// Limits of file packets: a chunk travels in one message, which must fit a
// frame, so chunks are at most 2 MiB and files (16384 chunks) 32 GiB.
const (
	maxFileChunk = 2 << 20
	MaxFileSize  = blob.MaxChunks * maxFileChunk
)

// ErrFileTooLarge: a file larger than MaxFileSize.
var ErrFileTooLarge = fmt.Errorf("pipeline: file larger than %d GiB", MaxFileSize>>30)

// fetchJob is a file this node should have.
type fetchJob struct {
	pipe   [32]byte
	sender [32]byte
	m      *blob.Manifest
	tries  int // fetches that ended incomplete
}

// files is the engine's file-transfer state.
type files struct {
	mu      sync.Mutex
	active  map[[32]byte]*fetch // by root
	queue   []fetchJob
	kick    chan struct{}
	serveQ  chan chunkReq
	seenQ   chan seen
	waiting map[[32]byte]bool              // roots queued or active
	owners  map[[32]byte]map[[32]byte]bool // root -> the pipelines with a packet of the file
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

type chunkReq struct {
	src    [32]byte
	sealed bool
	get    *pb.FileGet
}

// fetch is one file being fetched.
type fetch struct {
	job    fetchJob
	root   [32]byte
	arrive chan fileAnswer
	mu     sync.Mutex
	src    [32]byte // the node asked now
}

// fileAnswer is a FileData and where it came from.
type fileAnswer struct {
	src    [32]byte
	sealed bool
	d      *pb.FileData
}

func newFiles() *files {
	return &files{active: map[[32]byte]*fetch{}, kick: make(chan struct{}, 1),
		serveQ: make(chan chunkReq, 256), seenQ: make(chan seen, 1024), waiting: map[[32]byte]bool{},
		owners: map[[32]byte]map[[32]byte]bool{}}
}

// fileAD binds a sealed chunk to its pipeline, sender and place.
func fileAD(pipe, sender [32]byte, index int) []byte {
	ad := append([]byte("pipes/v1 file chunk"), pipe[:]...)
	ad = append(ad, sender[:]...)
	return binary.BigEndian.AppendUint64(ad, uint64(index))
}

// PutFile puts the file at path on pipeline id as a file packet and
// returns its id. The file is read once, in chunks, into the blob store.
func (e *Engine) PutFile(ctx context.Context, id [32]byte, path string, typ int64) ([32]byte, error) {
	if e.cfg.Blobs == nil {
		return [32]byte{}, ErrNoFiles
	}
	p, ok := e.pipeOf(id)
	if !ok {
		return [32]byte{}, fmt.Errorf("%w %x", ErrUnknown, id[:4])
	}
	if p.def.Opts.Realtime {
		return [32]byte{}, errors.New("pipeline: a realtime pipeline carries no files")
	}
	var transform func(int, []byte) []byte
	overhead := 0
	if p.def.Opts.Encrypted {
		k := p.key.Load()
		if k == nil {
			return [32]byte{}, fmt.Errorf("%w (%q)", ErrNoSecret, p.def.Name)
		}
		overhead = SealOverhead
		transform = func(i int, chunk []byte) []byte {
			out := make([]byte, 24, SealOverhead+len(chunk))
			rand.Read(out)
			return k.packet.Seal(out, out, chunk, fileAD(id, e.self, i))
		}
	}
	if st, err := os.Stat(path); err != nil {
		return [32]byte{}, fmt.Errorf("pipeline: file: %w", err)
	} else if st.Size() > MaxFileSize-int64(blob.MaxChunks*overhead) {
		return [32]byte{}, fmt.Errorf("%w: %s", ErrFileTooLarge, path)
	}
	m, err := e.cfg.Blobs.ImportFile(ctx, path, overhead, transform)
	if err != nil {
		return [32]byte{}, fmt.Errorf("pipeline: file %s: %w", path, err)
	}
	e.setOwner(m.Root(), id)
	pid, err := e.put(ctx, id, m.Marshal(), typ, [32]byte{}, true)
	if err != nil {
		e.dropFile(m.Root())
		return [32]byte{}, err
	}
	return pid, nil
}

// setOwner records (and stores) that a packet of pipeline pipe carries
// the file root: askers that name one of its pipelines get its chunks,
// and the file is deleted when the last of them is.
func (e *Engine) setOwner(root, pipe [32]byte) {
	f := e.files
	f.mu.Lock()
	set := f.owners[root]
	if set[pipe] {
		f.mu.Unlock()
		return
	}
	if set == nil {
		set = map[[32]byte]bool{}
		f.owners[root] = set
	}
	set[pipe] = true
	rec := ownerRecord(set)
	f.mu.Unlock()
	e.saveOwners(root, rec)
}

// ownedBy reports whether a packet of pipeline pipe carries the file root.
func (e *Engine) ownedBy(root, pipe [32]byte) bool {
	e.files.mu.Lock()
	defer e.files.mu.Unlock()
	return e.files.owners[root][pipe]
}

// ownerRecord encodes a set of pipelines, sorted.
func ownerRecord(set map[[32]byte]bool) []byte {
	var ids [][32]byte
	for id := range set {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b [32]byte) int { return slices.Compare(a[:], b[:]) })
	rec := make([]byte, 0, 32*len(ids))
	for _, id := range ids {
		rec = append(rec, id[:]...)
	}
	return rec
}

func (e *Engine) saveOwners(root [32]byte, rec []byte) {
	if e.cfg.DB == nil {
		return
	}
	if err := history.SaveSealed(e.cfg.DB, history.KindOwner, e.self, root, e.defsKey(), rec); err != nil {
		e.log.Warn("cannot record a file's pipelines", "err", err)
	}
}

// loadOwners restores the owners of stored files.
func (e *Engine) loadOwners() {
	recs, err := history.LoadSealed(e.cfg.DB, history.KindOwner, e.self, e.defsKey())
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
		set := map[[32]byte]bool{}
		for id := range slices.Chunk(v, 32) {
			set[[32]byte(id)] = true
		}
		e.files.owners[root] = set
	}
}

// dropFile deletes a stored file and what is recorded of it.
func (e *Engine) dropFile(root [32]byte) {
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
func (e *Engine) dropFilesOf(pipe [32]byte) {
	if e.cfg.Blobs == nil {
		return
	}
	f := e.files
	var gone [][32]byte
	kept := map[[32]byte][]byte{}
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
		if err := e.cfg.Blobs.Add(m); err != nil {
			return nil, err
		}
		e.fileSeen(p, pk.Sender, m, false)
	}
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(e.ctx, cancel)
	return &fileReader{e: e, ctx: ctx, cancel: func() { stop(); cancel() }, m: m, root: m.Root(),
		key: k, pipe: pk.Pipeline, sender: pk.Sender}, nil
}

type fileReader struct {
	e            *Engine
	ctx          context.Context
	cancel       func()
	m            *blob.Manifest
	root         [32]byte
	key          *pipeKey
	pipe, sender [32]byte
	next         int
	buf          []byte
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

// fileSeen notes a file packet this node received (or must read): its
// content is fetched unless it is here. recorded: the fetch is in the
// store already (resumed at start), so it is not written again.
func (e *Engine) fileSeen(p *pipe, sender [32]byte, m *blob.Manifest, recorded bool) {
	if e.cfg.Blobs == nil || sender == e.self {
		return
	}
	if m.ChunkSize > maxFileChunk {
		e.stats.rejected.Add(1)
		return
	}
	root := m.Root()
	e.setOwner(root, p.def.ID)
	if e.cfg.Blobs.Complete(root) {
		return
	}
	f := e.files
	f.mu.Lock()
	if f.waiting[root] {
		f.mu.Unlock()
		return
	}
	f.waiting[root] = true
	f.queue = append(f.queue, fetchJob{pipe: p.def.ID, sender: sender, m: m})
	f.mu.Unlock()
	if e.cfg.DB != nil && !recorded {
		rec := append(append(append([]byte{}, p.def.ID[:]...), sender[:]...), m.Marshal()...)
		if err := history.SaveSealed(e.cfg.DB, history.KindFetch, e.self, root, e.defsKey(), rec); err != nil {
			e.log.Warn("cannot record a file to fetch", "err", err)
		}
	}
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// resumeFetches queues the fetches an earlier run left unfinished.
func (e *Engine) resumeFetches() {
	if e.cfg.DB == nil || e.cfg.Blobs == nil {
		return
	}
	recs, err := history.LoadSealed(e.cfg.DB, history.KindFetch, e.self, e.defsKey())
	if err != nil {
		e.log.Warn("cannot load the files to fetch", "err", err)
		return
	}
	for root, rec := range recs {
		m, err := blob.ParseManifest(rec[min(64, len(rec)):])
		if len(rec) < 64 || err != nil || m.Root() != root {
			continue
		}
		if p, ok := e.pipeOf([32]byte(rec[:32])); ok {
			e.fileSeen(p, [32]byte(rec[32:64]), m, true)
		} else {
			e.fetchDone(root)
		}
	}
}

// fetchDone forgets a finished (or abandoned) fetch.
func (e *Engine) fetchDone(root [32]byte) {
	f := e.files
	f.mu.Lock()
	delete(f.waiting, root)
	delete(f.active, root)
	f.mu.Unlock()
	if e.cfg.DB != nil {
		if err := history.DeleteSealed(e.cfg.DB, history.KindFetch, e.self, root); err != nil {
			e.log.Warn("cannot forget a fetched file", "err", err)
		}
	}
}

// fileFetcher runs fetch jobs, fileFetchers at a time.
func (e *Engine) fileFetcher() {
	defer e.wg.Done()
	f := e.files
	slots := make(chan struct{}, fileFetchers)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		f.mu.Lock()
		var job *fetchJob
		if len(f.queue) > 0 {
			job = &f.queue[0]
			f.queue = f.queue[1:]
		}
		f.mu.Unlock()
		if job == nil {
			select {
			case <-f.kick:
			case s := <-f.seenQ:
				if m, err := blob.ParseManifest(s.pk.Data); err == nil {
					e.fileSeen(s.p, s.pk.Sender, m, false)
				} else {
					e.stats.rejected.Add(1)
				}
			case <-e.ctx.Done():
				return
			}
			continue
		}
		select {
		case slots <- struct{}{}:
		case <-e.ctx.Done():
			return
		}
		wg.Add(1)
		go func(j fetchJob) {
			defer wg.Done()
			defer func() { <-slots }()
			e.runFetch(j)
		}(*job)
	}
}

// runFetch asks each source of a file in turn for its missing chunks. If
// the file is still incomplete after that (no node that has it is
// reachable now), the job goes back to the queue after fileRetry, so that
// it does not hold a fetch slot.
func (e *Engine) runFetch(j fetchJob) {
	root := j.m.Root()
	p, ok := e.pipeOf(j.pipe)
	if !ok || !e.ownedBy(root, j.pipe) {
		e.fetchDone(root) // its pipeline is gone
		return
	}
	if err := e.cfg.Blobs.Add(j.m); err != nil {
		e.log.Warn("cannot store a file; trying again later", "err", err)
		e.retryFetch(j)
		return
	}
	ft := &fetch{job: j, root: root, arrive: make(chan fileAnswer, fileWindow*2)}
	f := e.files
	f.mu.Lock()
	f.active[root] = ft
	f.mu.Unlock()
	for _, src := range e.fileSources(p, j.sender) {
		missing, err := e.cfg.Blobs.Missing(root)
		if err != nil || len(missing) == 0 || e.ctx.Err() != nil {
			break
		}
		e.fetchFrom(ft, p, src, missing)
	}
	f.mu.Lock()
	delete(f.active, root)
	f.mu.Unlock()
	if missing, err := e.cfg.Blobs.Missing(root); err == nil && len(missing) == 0 {
		e.fetchDone(root)
		return
	}
	e.retryFetch(j)
}

// retryFetch queues j again after a delay that doubles with each try
// (fileRetry up to fileRetryMax), so that a file no reachable node has
// costs little while it waits.
func (e *Engine) retryFetch(j fetchJob) {
	j.tries++
	delay := fileRetry << min(j.tries-1, 6)
	delay = min(delay, fileRetryMax)
	f := e.files
	e.spawn(func() {
		select {
		case <-time.After(delay):
		case <-e.ctx.Done():
			return
		}
		f.mu.Lock()
		f.queue = append(f.queue, j)
		f.mu.Unlock()
		select {
		case f.kick <- struct{}{}:
		default:
		}
	})
}

// fileSources lists the nodes to ask for a file of p: its sender first,
// then the other online nodes of the pipeline.
func (e *Engine) fileSources(p *pipe, sender [32]byte) [][32]byte {
	if p.def.IsPointToPoint() {
		return [][32]byte{p.def.Opts.ToNode}
	}
	out := [][32]byte{sender}
	for _, n := range e.cfg.Host.Online() {
		if n != sender && n != e.self {
			out = append(out, n)
		}
	}
	return out
}

// fetchFrom asks src for the missing chunks, fileWindow at a time, and
// returns those still missing when src has no more to give.
func (e *Engine) fetchFrom(ft *fetch, p *pipe, src [32]byte, missing []int) {
	ft.mu.Lock()
	ft.src = src
	ft.mu.Unlock()
	next, inflight := 0, map[int]bool{}
	stall := time.NewTimer(fileStall)
	defer stall.Stop()
	for {
		for len(inflight) < fileWindow && next < len(missing) {
			i := missing[next]
			g := &pb.FileGet{Root: ft.root[:], Pipeline: p.def.ID[:], Index: uint32(i)}
			if err := e.sendFile(p, src, KindFileGet, g, &pb.SealedBody{Body: &pb.SealedBody_FileGet{FileGet: g}}); err != nil {
				return // unreachable now: the caller tries the next source
			}
			inflight[i] = true
			next++
		}
		if len(inflight) == 0 {
			return
		}
		select {
		case a := <-ft.arrive:
			i := int(a.d.Index)
			if a.src != src || a.sealed != p.def.IsPointToPoint() || !inflight[i] {
				continue // not an answer to this fetch's requests
			}
			delete(inflight, i)
			if a.d.Missing {
				return // src does not have it all: the next source gets the rest
			}
			if err := e.cfg.Blobs.WriteChunk(ft.root, i, a.d.Data); err != nil {
				e.stats.rejected.Add(1)
				return
			}
			// Only progress puts the stall off.
			stall.Reset(fileStall)
		case <-stall.C:
			return
		case <-e.ctx.Done():
			return
		}
	}
}

// sendFile sends a file message to dst: sealed on a point-to-point
// pipeline, else routed as is (the pipeline's data is every member's).
func (e *Engine) sendFile(p *pipe, dst [32]byte, kind uint32, m proto.Message, sealed *pb.SealedBody) error {
	ctx, cancel := context.WithTimeout(e.ctx, fileStall)
	defer cancel()
	if p.def.IsPointToPoint() {
		body, err := marshal(sealed)
		if err != nil {
			return err
		}
		return e.retryBusy(fileStall, func() error { return e.sendSealed(ctx, dst, body) })
	}
	raw, err := marshal(m)
	if err != nil {
		return err
	}
	return e.retryBusy(fileStall, func() error { return e.cfg.Host.Send(ctx, dst, kind, raw) })
}

// handleFileGet queues a chunk request for the servers (dropped if they
// are behind: the asker asks again).
func (e *Engine) handleFileGet(src [32]byte, g *pb.FileGet, sealed bool) error {
	if len(g.Root) != 32 || len(g.Pipeline) != 32 {
		return errors.New("pipeline: malformed file request")
	}
	select {
	case e.files.serveQ <- chunkReq{src: src, sealed: sealed, get: g}:
	default:
	}
	return nil
}

// handleFileData hands an answer to the fetch waiting for it, if it comes
// from the node that fetch asks.
func (e *Engine) handleFileData(src [32]byte, d *pb.FileData, sealed bool) error {
	if len(d.Root) != 32 {
		return errors.New("pipeline: malformed file data")
	}
	e.files.mu.Lock()
	ft := e.files.active[[32]byte(d.Root)]
	e.files.mu.Unlock()
	if ft == nil {
		return nil
	}
	ft.mu.Lock()
	asked := ft.src == src
	ft.mu.Unlock()
	if !asked {
		return nil
	}
	select {
	case ft.arrive <- fileAnswer{src: src, sealed: sealed, d: d}:
	default:
	}
	return nil
}

// fileServer answers chunk requests from the blob store.
func (e *Engine) fileServer() {
	defer e.wg.Done()
	for {
		select {
		case r := <-e.files.serveQ:
			e.serveChunk(r)
		case <-e.ctx.Done():
			return
		}
	}
}

func (e *Engine) serveChunk(r chunkReq) {
	p, ok := e.pipeOf([32]byte(r.get.Pipeline))
	if !ok || p.def.IsPointToPoint() && (!r.sealed || p.def.Opts.ToNode != r.src) {
		return // not a pipeline the asker shares with this node
	}
	root := [32]byte(r.get.Root)
	d := &pb.FileData{Root: r.get.Root, Index: r.get.Index}
	var c []byte
	err := blob.ErrNotFound
	if e.ownedBy(root, p.def.ID) {
		c, err = e.cfg.Blobs.ReadChunk(root, int(r.get.Index))
	}
	if err != nil {
		d.Missing = true
	} else {
		d.Data = c
	}
	if err := e.sendFile(p, r.src, KindFileData, d, &pb.SealedBody{Body: &pb.SealedBody_FileData{FileData: d}}); err != nil {
		e.log.Debug("cannot send a file chunk", "err", err)
	}
}

// FileProgress reports how many chunks of a file packet's content this
// node has, of how many.
func (e *Engine) FileProgress(pk *Packet) (have, total int, err error) {
	if e.cfg.Blobs == nil {
		return 0, 0, ErrNoFiles
	}
	m, err := blob.ParseManifest(pk.Data)
	if err != nil {
		return 0, 0, err
	}
	total = len(m.Chunks)
	if !e.cfg.Blobs.Has(m.Root()) {
		return 0, total, nil
	}
	missing, err := e.cfg.Blobs.Missing(m.Root())
	if err != nil {
		return 0, total, err
	}
	return total - len(missing), total, nil
}
