package pipeline

// The data side of sync: serving wants from the log, and verifying the
// segments that answer ours.

import (
	"bytes"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/pipesnet/pipes/internal/history"
	"github.com/pipesnet/pipes/internal/identity"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

// onData verifies the segments of a SyncData and hands their packets to
// the pipeline's held queue (this is the catch-up path, on the routed
// worker: it never waits for the writer; see enqueue).
func (s *syncer) onData(p *pipe, src ids.Node, d *pb.SyncData) error {
	var cert *identity.Cert
	if len(d.Segments) > 0 {
		c, err := s.certs.Parse(d.NodeCert)
		if err != nil || ids.Network(c.NetworkID) != s.network {
			s.rejected.Add(1)
			return fmt.Errorf("pipeline: sync data with a bad certificate: %v", err)
		}
		cert = c
	}
	// Check the segments on every core (hashing every packet and one
	// signature per batch is most of what a catch-up costs the receiver),
	// then hand them to the writer in order.
	type opened struct {
		pks   []*Packet
		proof *history.Proof
		err   error
	}
	out := make([]opened, len(d.Segments))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(d.Segments)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < len(d.Segments); i = int(next.Add(1) - 1) {
				pks, proof, err := openSegment(p.def.ID, cert, d.Segments[i])
				out[i] = opened{pks, proof, err}
			}
		}()
	}
	wg.Wait()
	for _, o := range out {
		if o.err != nil {
			s.rejected.Add(1)
			p.stats.rejected.Add(1)
			return o.err
		}
		s.env.enqueue(p, ingest{pks: o.pks, proof: o.proof, cert: d.NodeCert}, true)
	}
	req, last, head := d.Request, d.Last, d.Head
	s.do(func() {
		w := p.sync.wants[req]
		if w == nil || w.peer != src {
			return
		}
		w.progress = time.Now()
		if last {
			w.done = true
			if hs := p.sync.peers[src]; hs != nil && head < hs[w.sender] {
				hs[w.sender] = head // it has less than it offered
			}
		}
	})
	return nil
}

// openSegment verifies one segment: its packets number on from the ids
// before them, and the batch signature covers all of the ids.
func openSegment(pipe ids.Pipeline, cert *identity.Cert, s *pb.SyncSegment) ([]*Packet, *history.Proof, error) {
	n := len(s.PrefixIds) + len(s.Packets)
	if cert == nil || len(s.Packets) == 0 || n > maxBatchPackets || s.FirstSeq == 0 {
		return nil, nil, fmt.Errorf("%w: malformed sync segment", ErrBadBatch)
	}
	sender := ids.Node(cert.NodeID())
	msg := make([]byte, 0, 32*n)
	for _, id := range s.PrefixIds {
		if len(id) != 32 {
			return nil, nil, fmt.Errorf("%w: malformed sync segment", ErrBadBatch)
		}
		msg = append(msg, id...)
	}
	seq := s.FirstSeq + uint64(len(s.PrefixIds))
	pks := make([]*Packet, 0, len(s.Packets))
	for i, q := range s.Packets {
		if q.Seq != seq+uint64(i) || len(q.Data) > maxWireData {
			return nil, nil, fmt.Errorf("%w: sync segment out of sequence or oversized", ErrBadBatch)
		}
		var dest ids.Node
		if len(q.Destination) != 0 {
			if len(q.Destination) != 32 {
				return nil, nil, fmt.Errorf("%w: destination of %d bytes", ErrBadBatch, len(q.Destination))
			}
			dest = ids.Node(q.Destination)
		}
		id := packetID(pipe, sender, q.Seq, q.Hlc, q.Type, dest, q.File, q.Data)
		msg = append(msg, id[:]...)
		pks = append(pks, &Packet{ID: id, Pipeline: pipe, Sender: sender, Seq: q.Seq, HLC: q.Hlc, Type: q.Type,
			Data: q.Data, Destination: dest, File: q.File})
	}
	if !identity.Verify(cert.NodeKey, batchContext, msg, s.Signature) {
		return nil, nil, fmt.Errorf("%w: sync segment signature does not verify", ErrBadBatch)
	}
	proof := &history.Proof{Sender: sender, FirstSeq: s.FirstSeq, LastSeq: s.FirstSeq + uint64(n) - 1, Signature: s.Signature}
	return pks, proof, nil
}

// wantQueue bounds the wants waiting for a sync server (serveWorkers):
// beyond it they are dropped and their askers ask again.
const wantQueue = 64

// serveOne answers one SyncWant from the log, on a sync server.
func (s *syncer) serveOne(r serveReq) {
	if err := s.serveWant(r); err != nil && s.ctx.Err() == nil {
		s.log.Debug("sync request not served", "pipeline", r.p.def.Name, "err", err)
	}
}

func (s *syncer) serveWant(r serveReq) error {
	w := r.want
	sender := ids.Node(w.Sender)
	log := r.p.plog.log
	msg := &pb.SyncData{Pipeline: r.p.def.ID[:], Request: w.Request}
	if raw, err := log.Cert(sender); err == nil {
		var s pb.Signed
		if err := proto.Unmarshal(raw, &s); err == nil {
			msg.NodeCert = &s
		}
	}
	size := 0
	var sendErr error
	err := log.Segments(sender, w.From, w.To, 1<<62, func(seg *history.Segment) bool {
		ps := &pb.SyncSegment{FirstSeq: seg.FirstSeq, Signature: seg.Signature}
		segSize := 32*len(seg.PrefixIDs) + len(seg.Signature)
		for _, id := range seg.PrefixIDs {
			ps.PrefixIds = append(ps.PrefixIds, bytes.Clone(id[:]))
		}
		for _, rec := range seg.Records {
			q := &pb.Packet{Seq: rec.Seq, Hlc: rec.HLC, Type: rec.Type, Data: rec.Data, File: rec.File}
			if !rec.Dest.IsZero() {
				q.Destination = bytes.Clone(rec.Dest[:])
			}
			ps.Packets = append(ps.Packets, q)
			segSize += len(rec.Data) + 32
		}
		// A message stays near syncDataBytes: send what is pending before
		// a segment that would take it past (a segment alone is one batch,
		// at most maxBatchBytes of data, which fits a frame).
		if len(msg.Segments) > 0 && size+segSize > syncDataBytes {
			if sendErr = s.send(r.p, r.peer, &pb.Sync{Body: &pb.Sync_Data{Data: msg}}); sendErr != nil {
				return false
			}
			msg = &pb.SyncData{Pipeline: msg.Pipeline, Request: w.Request, NodeCert: msg.NodeCert}
			size = 0
		}
		msg.Segments = append(msg.Segments, ps)
		size += segSize
		return s.ctx.Err() == nil
	})
	if err != nil {
		return err
	}
	if sendErr != nil {
		return sendErr
	}
	msg.Last, msg.Head = true, log.Head(sender)
	return s.send(r.p, r.peer, &pb.Sync{Body: &pb.Sync_Data{Data: msg}})
}
