package pipeline

import (
	"context"
	"errors"

	"google.golang.org/protobuf/proto"

	"github.com/pipesnet/pipes/internal/blob"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

type chunkReq struct {
	src    [32]byte
	sealed bool
	get    *pb.FileGet
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
