package pipeline

import (
	"context"
	"errors"

	"google.golang.org/protobuf/proto"

	"github.com/pipesnet/pipes/internal/blob"
	"github.com/pipesnet/pipes/internal/dispatch"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/kinds"
	"github.com/pipesnet/pipes/internal/service"
	"github.com/pipesnet/pipes/internal/wire/pb"
	"github.com/pipesnet/pipes/internal/worker"
)

// filesQueue bounds the file messages that wait for the files group's
// worker, serveQueue the chunk requests that wait for a server: beyond
// them messages are dropped (counted rejected) and askers ask again.
const (
	filesQueue = 1024
	serveQueue = 256
)

// Name names the files service.
func (f *files) Name() string { return "files" }

// Register makes the files handler group and registers the file kinds.
// Answers go to the fetch that waits for them, requests to the chunk
// servers: neither waits for the disk on the group's worker.
func (f *files) Register(r service.Registrar) error {
	g, err := r.Group("files", dispatch.GroupConfig{Queue: filesQueue, OnFull: func(dispatch.Msg) { f.e.stats.rejected.Add(1) }})
	if err != nil {
		return err
	}
	return errors.Join(
		g.Handle(kinds.FileGet, dispatch.Route{Paths: kinds.Routed | kinds.InSealed, Handle: dispatch.Proto(
			func(m dispatch.Msg, get *pb.FileGet) error {
				return f.e.handleFileGet(m.From, get, m.Via == kinds.InSealed)
			})}),
		g.Handle(kinds.FileData, dispatch.Route{Paths: kinds.Routed | kinds.InSealed, Handle: dispatch.Proto(
			func(m dispatch.Msg, d *pb.FileData) error {
				return f.e.handleFileData(m.From, d, m.Via == kinds.InSealed)
			})}),
	)
}

// Start starts the chunk servers and the fetcher, and resumes the fetches
// an earlier run left unfinished.
func (f *files) Start(ctx context.Context, h service.Host) error {
	e := f.e
	f.ctx, f.cancel = context.WithCancel(ctx)
	f.host = h
	f.serve.Store(worker.New(serveQueue, fileServers, e.serveChunk))
	if !f.spawn(e.fileFetcher) {
		f.Close()
		return ErrClosed
	}
	if e.cfg.DB != nil {
		e.loadOwners()
	}
	e.resumeFetches()
	return nil
}

// Close stops the servers, the fetcher and the fetches, and waits for
// them.
func (f *files) Close() error {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	if f.cancel != nil {
		f.cancel()
	}
	if s := f.serve.Load(); s != nil {
		s.Close()
	}
	f.wg.Wait()
	return nil
}

// spawn runs fn on a goroutine of the files service, unless it is closed.
func (f *files) spawn(fn func()) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		fn()
	}()
	return true
}

type chunkReq struct {
	src    ids.Node
	sealed bool
	get    *pb.FileGet
}

// sendFile sends a file message to dst: sealed on a point-to-point
// pipeline, else routed as is (the pipeline's data is every member's).
func (e *Engine) sendFile(p *pipe, dst ids.Node, kind uint32, m proto.Message, sealed *pb.SealedBody) error {
	f := e.files
	ctx, cancel := context.WithTimeout(f.ctx, fileStall)
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
	return e.retryBusy(fileStall, func() error { return f.host.Send(ctx, dst, kind, raw) })
}

// handleFileGet queues a chunk request for the servers (dropped if they
// are behind, or not started: the asker asks again).
func (e *Engine) handleFileGet(src ids.Node, g *pb.FileGet, sealed bool) error {
	if len(g.Root) != 32 || len(g.Pipeline) != 32 {
		return errors.New("pipeline: malformed file request")
	}
	if s := e.files.serve.Load(); s != nil {
		s.TryPut(chunkReq{src: src, sealed: sealed, get: g})
	}
	return nil
}

// serveChunk answers one chunk request from the blob store, on a chunk
// server.
func (e *Engine) serveChunk(r chunkReq) {
	p, ok := e.pipeOf(ids.Pipeline(r.get.Pipeline))
	if !ok || p.def.IsPointToPoint() && (!r.sealed || p.def.Opts.ToNode != r.src) {
		return // not a pipeline the asker shares with this node
	}
	root := ids.Content(r.get.Root)
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
	if err := e.sendFile(p, r.src, kinds.FileData, d, &pb.SealedBody{Body: &pb.SealedBody_FileData{FileData: d}}); err != nil {
		e.log.Debug("cannot send a file chunk", "err", err)
	}
}
