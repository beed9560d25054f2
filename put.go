package pipes

import (
	"context"
	"errors"
	"fmt"

	"github.com/pipesnet/pipes/internal/ids"
)

// PutOption modifies one Put.
type PutOption func(*putOptions)

type putOptions struct {
	packetType  int
	destination NodeID
}

// WithPacketType sets the application's integer type of the packet.
func WithPacketType(t int) PutOption { return func(o *putOptions) { o.packetType = t } }

// WithDestination delivers the packet to one node only: it is encrypted end
// to end for that node and routed to it, so other nodes, relays included,
// see neither its content nor, beyond the relays on its path, that it was
// sent.
func WithDestination(id NodeID) PutOption { return func(o *putOptions) { o.destination = id } }

// Put sends data as one packet and returns its id. On a live pipeline it
// returns once the packet is queued, blocking while the pipeline's send
// queue is full; on a persistent pipeline, once the packet is on disk (it
// is then sent, or synchronised later); on a realtime pipeline, once the
// datagram is queued for the link, blocking while the link's datagram
// queue is full, and a packet larger than one datagram on the path gives
// a *DatagramTooLargeError. Packets larger than MaxPacketSize
// give ErrTooLarge; a stopped node gives ErrNotActive; a full disk
// ErrDiskFull. Put is PutContext without a deadline.
func (p *Pipeline) Put(data []byte, opts ...PutOption) (PacketID, error) {
	return p.PutContext(context.Background(), data, opts...)
}

// PutContext is Put that gives up when ctx ends, with ctx's error. A
// packet of a persistent pipeline whose PutContext gave up may still be
// logged (and then sent): it was handed to the log before ctx ended.
func (p *Pipeline) PutContext(ctx context.Context, data []byte, opts ...PutOption) (PacketID, error) {
	var o putOptions
	for _, f := range opts {
		f(&o)
	}
	e := p.n.engineOrNil()
	if e == nil {
		return PacketID{}, ErrNotActive
	}
	id, err := e.Put(ctx, p.def.ID, data, int64(o.packetType), ids.Node(o.destination))
	switch {
	case err == nil:
		return PacketID(id), nil
	case ctx.Err() != nil && errors.Is(err, ctx.Err()):
		return PacketID{}, err
	}
	// A Pipeline the engine no longer knows was shut down
	// (ErrClosedPipeline).
	return PacketID{}, mapErr(err, fmt.Sprintf("pipeline %q", p.def.Name))
}

// PutFile puts the file at path on the pipeline as one file packet and
// returns its id (the spec's putFilePacket). The file is read once, in
// chunks, into the node's file store (sealed at rest, and sealed with the
// pipeline key on an encrypted pipeline), so it may change or go away
// afterwards; the packet carries its manifest (size and a hash per
// chunk). Every node that gets the packet fetches the content in the
// background, from the sender or any other node of the pipeline that has
// it, checks each chunk as it arrives and resumes after an interruption.
// Read it with Packet.Open or Packet.WriteDataToPath. Files of any size up
// to 32 GiB; memory use does not grow with the size. Realtime pipelines
// carry no files. A node keeps the files of a pipeline (live ones
// included) until the pipeline is shut down: there is no quota or
// expiry yet. PutFile is PutFileContext without a deadline.
func (p *Pipeline) PutFile(path string) (PacketID, error) {
	return p.PutFileContext(context.Background(), path)
}

// PutFileContext is PutFile that gives up when ctx ends.
func (p *Pipeline) PutFileContext(ctx context.Context, path string) (PacketID, error) {
	e := p.n.engineOrNil()
	if e == nil {
		return PacketID{}, ErrNotActive
	}
	id, err := e.PutFile(ctx, p.def.ID, path, 0)
	switch {
	case err == nil:
		return PacketID(id), nil
	case ctx.Err() != nil && errors.Is(err, ctx.Err()):
		return PacketID{}, err
	}
	return PacketID{}, mapErr(err, fmt.Sprintf("file %s on pipeline %q", path, p.def.Name))
}
