package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/kinds"
	"github.com/pipesnet/pipes/internal/mesh"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

type outPacket struct {
	pk   *pb.Packet
	id   ids.Packet // computed once, at Put
	dest ids.Node
}

func marshal(m proto.Message) ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(m)
}

// Put queues a packet on pipeline id and returns its id. dest, if not
// zero, limits delivery to that node: the packet is then sealed end to end
// and routed. A point-to-point pipeline always sends to its other node.
// Put blocks while the pipeline's queue is full (backpressure) until ctx
// ends.
func (e *Engine) Put(ctx context.Context, id ids.Pipeline, data []byte, typ int64, dest ids.Node) (ids.Packet, error) {
	return e.put(ctx, id, data, typ, dest, false)
}

// put is Put; file marks data as a file manifest (not encrypted: it holds
// only sizes and hashes of the sealed chunks).
func (e *Engine) put(ctx context.Context, id ids.Pipeline, data []byte, typ int64, dest ids.Node, file bool) (ids.Packet, error) {
	if len(data) > MaxPacketSize {
		return ids.Packet{}, ErrTooLarge
	}
	if err := ctx.Err(); err != nil {
		return ids.Packet{}, err
	}
	// The packet is sent after Put returns: keep a copy, so that the
	// caller may reuse its buffer.
	data = bytes.Clone(data)
	e.mu.Lock()
	p := e.mu.pipes[id]
	closed := e.mu.closed
	e.mu.Unlock()
	if closed {
		return ids.Packet{}, ErrClosed
	}
	if p == nil {
		return ids.Packet{}, fmt.Errorf("%w %x", ErrUnknown, id[:4])
	}
	if p.def.IsPointToPoint() {
		if !dest.IsZero() && dest != p.def.Opts.ToNode {
			return ids.Packet{}, fmt.Errorf("pipeline: point-to-point pipeline %q has no node %x", p.def.Name, dest[:4])
		}
		dest = p.def.Opts.ToNode
	}
	if dest == e.self {
		return ids.Packet{}, fmt.Errorf("pipeline: destination is the local node")
	}
	if p.def.Opts.Encrypted && !file {
		k := p.key.Load()
		if k == nil {
			return ids.Packet{}, fmt.Errorf("%w (%q)", ErrNoSecret, p.def.Name)
		}
		data = k.seal(id, e.self, data)
	}
	if p.def.Opts.Realtime {
		if file {
			return ids.Packet{}, errors.New("pipeline: a realtime pipeline carries no files")
		}
		return e.putRealtime(ctx, p, data, typ, dest, true)
	}
	if p.def.Opts.Persistent {
		if !dest.IsZero() && !p.def.IsPointToPoint() {
			return ids.Packet{}, ErrPersistentDestination
		}
		r, err := e.logs.putPersistent(ctx, p, data, typ, dest, file)
		return r.id, err
	}
	pk := &pb.Packet{Seq: p.seq.Add(1), Hlc: e.clock.now(), Type: typ, Data: data, File: file}
	if !dest.IsZero() {
		pk.Destination = dest[:]
	}
	pid := packetID(id, e.self, pk.Seq, pk.Hlc, typ, dest, file, data)
	p.outOnce.Do(func() {
		p.out = make(chan outPacket, e.cfg.OutQueue)
		e.spawnPipe(p, func() { e.sender(p) })
	})
	select {
	case p.out <- outPacket{pk: pk, id: pid, dest: dest}:
		e.stats.sent.Add(1)
		return pid, nil
	case <-ctx.Done():
		return ids.Packet{}, ctx.Err()
	case <-p.ctx.Done():
		return ids.Packet{}, e.pipeErr()
	}
}

// sender batches what Put queued on one pipeline: it takes every packet
// waiting (up to the batch limits), signs them with one signature, and
// broadcasts the batch or seals it to its destination. While the mesh
// holds a broadcast back, Puts accumulate and the next batch is larger.
func (e *Engine) sender(p *pipe) {
	for {
		var first outPacket
		select {
		case first = <-p.out:
		case <-p.ctx.Done():
			return
		}
		batch := []outPacket{first}
		size := len(first.pk.Data)
	fill:
		for len(batch) < maxBatchPackets && size < maxBatchBytes {
			select {
			case o := <-p.out:
				batch = append(batch, o)
				size += len(o.pk.Data)
			default:
				break fill
			}
		}
		// One batch per destination (the zero destination is broadcast).
		groups := map[ids.Node][]outPacket{}
		var order []ids.Node
		for _, o := range batch {
			if _, ok := groups[o.dest]; !ok {
				order = append(order, o.dest)
			}
			groups[o.dest] = append(groups[o.dest], o)
		}
		for _, dest := range order {
			if err := e.sendBatch(p, dest, groups[dest]); err != nil {
				if p.ctx.Err() != nil {
					return
				}
				e.log.Warn("packets not sent", "pipeline", p.def.Name, "packets", len(groups[dest]), "err", err)
			}
		}
	}
}

// ErrPersistentDestination: a persistent broadcast pipeline keeps every
// packet on every node, so a packet for one node goes on a persistent
// point-to-point pipeline instead.
var ErrPersistentDestination = errors.New("pipeline: a persistent broadcast pipeline has no per-packet destination; use a persistent point-to-point pipeline")

func (e *Engine) sendBatch(p *pipe, dest ids.Node, out []outPacket) error {
	pids := make([]ids.Packet, len(out))
	pks := make([]*pb.Packet, len(out))
	for i, o := range out {
		pids[i], pks[i] = o.id, o.pk
	}
	b := &pb.PacketBatch{NodeCert: e.cfg.Cert.Signed, Pipeline: p.def.ID[:], Packets: pks,
		Signature: signBatch(e.cfg.Key, pids)}
	return e.transmit(p, dest, b)
}

// transmit broadcasts a signed batch (zero dest) or sends it to dest: on
// their direct connection if dest is a peer, else sealed and routed.
func (e *Engine) transmit(p *pipe, dest ids.Node, b *pb.PacketBatch) error {
	if dest.IsZero() {
		raw, err := marshal(b)
		if err != nil {
			return err
		}
		return e.cfg.Host.Broadcast(e.ctx, kinds.Batch, raw)
	}
	// To a direct peer the QUIC connection already is end to end: send the
	// batch on it, marked never to be relayed. Otherwise seal it.
	raw, err := marshal(b)
	if err != nil {
		return err
	}
	err = e.retryBusy(10*time.Second, func() error { return e.cfg.Host.SendDirect(e.ctx, dest, kinds.Direct, raw) })
	if err == nil || errors.Is(err, mesh.ErrBusy) || errors.Is(err, ErrClosed) {
		return err
	}
	sealed, err := marshal(&pb.SealedBody{Body: &pb.SealedBody_Batch{Batch: b}})
	if err != nil {
		return err
	}
	return e.retryBusy(10*time.Second, func() error { return e.sendSealed(e.ctx, dest, sealed) })
}

// sendSealed encrypts body end to end for dst and routes it there.
func (e *Engine) sendSealed(ctx context.Context, dst ids.Node, body []byte) error {
	pub, ok := e.cfg.Host.HPKEKey(dst)
	if !ok {
		return fmt.Errorf("%w (%x)", ErrNoKey, dst[:4])
	}
	s, err := e.sealer.seal(dst, pub, body)
	if err != nil {
		return err
	}
	raw, err := marshal(s)
	if err != nil {
		return err
	}
	return e.cfg.Host.Send(ctx, dst, kinds.Sealed, raw)
}

// sealOrPlain prepares one message about a pipeline: for a point-to-point
// pipeline, sealed (which wraps the message) encrypted end to end for to,
// so that no relay reads it; else msg as it is, handed to plain (a
// broadcast or a direct send). It returns the send, for callers that
// retry it.
func (e *Engine) sealOrPlain(ctx context.Context, p2p bool, to ids.Node, sealed *pb.SealedBody, msg proto.Message,
	plain func(ctx context.Context, raw []byte) error) (func() error, error) {
	if p2p {
		body, err := marshal(sealed)
		if err != nil {
			return nil, err
		}
		return func() error { return e.sendSealed(ctx, to, body) }, nil
	}
	raw, err := marshal(msg)
	if err != nil {
		return nil, err
	}
	return func() error { return plain(ctx, raw) }, nil
}

// broadcastAs returns a plain send that broadcasts with kind.
func (e *Engine) broadcastAs(kind uint32) func(context.Context, []byte) error {
	return func(ctx context.Context, raw []byte) error { return e.cfg.Host.Broadcast(ctx, kind, raw) }
}

// retryBusy calls send until it does not fail with mesh.ErrBusy, waiting a
// little in between, for at most limit.
func (e *Engine) retryBusy(limit time.Duration, send func() error) error {
	deadline := time.Now().Add(limit)
	wait := time.Millisecond
	for {
		err := send()
		if !errors.Is(err, mesh.ErrBusy) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-time.After(wait):
		case <-e.ctx.Done():
			return ErrClosed
		}
		wait = min(2*wait, 20*time.Millisecond)
	}
}
