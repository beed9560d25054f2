package pipeline

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/pipesnet/pipes/internal/identity"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

// MaxPacketSize is the largest packet Put accepts (1 MiB); larger data goes
// through files (PutFile) in a later version.
const MaxPacketSize = 1 << 20

// maxWireData bounds a packet's data as sent: MaxPacketSize plus what the
// encryption of an encrypted pipeline adds.
const maxWireData = MaxPacketSize + SealOverhead

// maxBatchBytes bounds the data of one batch so that it fits a frame
// (wire.MaxFrameSize) with its envelopes.
const maxBatchBytes = 2 << 20

// maxBatchPackets bounds the packets of one batch.
const maxBatchPackets = 1024

// batchContext is the signature context of packet batches.
const batchContext = "pipes/v1 packet batch"

// Packet is a verified packet.
type Packet struct {
	ID          ids.Packet
	Pipeline    ids.Pipeline
	Sender      ids.Node
	Seq         uint64
	HLC         int64
	Type        int64
	Data        []byte
	Destination ids.Node // zero: every node of the pipeline
	File        bool     // Data is a file manifest (the content travels in chunks)
	LogID       int64    // position in the local log, if Logged
	Logged      bool     // read from a persistent pipeline's log
}

// Time returns the packet's hybrid-logical-clock time.
func (p *Packet) Time() time.Time { return time.Unix(0, p.HLC) }

// packetID is SHA-256 of the header in a fixed layout, then the data:
// "pipes/v1 packet" || pipeline || sender || seq (8, big endian) ||
// hlc (8) || type (8) || size (8) || destination (32) || ["F" for a file
// packet] || data.
func packetID(pipeline ids.Pipeline, sender ids.Node, seq uint64, hlc, typ int64, dest ids.Node, file bool, data []byte) ids.Packet {
	h := sha256.New()
	var hdr [15 + 32 + 32 + 8*4 + 32 + 1]byte
	b := append(hdr[:0], "pipes/v1 packet"...)
	b = append(b, pipeline[:]...)
	b = append(b, sender[:]...)
	b = binary.BigEndian.AppendUint64(b, seq)
	b = binary.BigEndian.AppendUint64(b, uint64(hlc))
	b = binary.BigEndian.AppendUint64(b, uint64(typ))
	b = binary.BigEndian.AppendUint64(b, uint64(len(data)))
	b = append(b, dest[:]...)
	if file {
		b = append(b, 'F')
	}
	h.Write(b)
	h.Write(data)
	var id ids.Packet
	h.Sum(id[:0])
	return id
}

// signBatch fills in the batch signature over the ids of its packets.
func signBatch(key *identity.KeyPair, packets []ids.Packet) []byte {
	msg := make([]byte, 0, 32*len(packets))
	for _, id := range packets {
		msg = append(msg, id[:]...)
	}
	return identity.Sign(key, batchContext, msg)
}

// Errors of batch verification.
var (
	ErrBadBatch = errors.New("pipeline: bad packet batch")
	ErrTooLarge = fmt.Errorf("pipeline: packet larger than %d bytes", MaxPacketSize)
)

// openBatch verifies a batch: the sender's certificate for network, the
// packets' sizes, and the one signature over all packet ids. It returns the
// packets.
func openBatch(b *pb.PacketBatch, network ids.Network, certs *identity.CertCache) ([]*Packet, error) {
	if b == nil || len(b.Pipeline) != 32 || len(b.Packets) == 0 || len(b.Packets) > maxBatchPackets {
		return nil, fmt.Errorf("%w: malformed", ErrBadBatch)
	}
	cert, err := certs.Parse(b.NodeCert)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadBatch, err)
	}
	if ids.Network(cert.NetworkID) != network {
		return nil, fmt.Errorf("%w: sender of another network", ErrBadBatch)
	}
	sender, pipe := ids.Node(cert.NodeID()), ids.Pipeline(b.Pipeline)
	out := make([]*Packet, 0, len(b.Packets))
	msg := make([]byte, 0, 32*len(b.Packets))
	for _, p := range b.Packets {
		if len(p.Data) > maxWireData {
			return nil, fmt.Errorf("%w: %w", ErrBadBatch, ErrTooLarge)
		}
		var dest ids.Node
		if len(p.Destination) != 0 {
			if len(p.Destination) != 32 {
				return nil, fmt.Errorf("%w: destination of %d bytes", ErrBadBatch, len(p.Destination))
			}
			dest = ids.Node(p.Destination)
		}
		id := packetID(pipe, sender, p.Seq, p.Hlc, p.Type, dest, p.File, p.Data)
		msg = append(msg, id[:]...)
		out = append(out, &Packet{ID: id, Pipeline: pipe, Sender: sender, Seq: p.Seq, HLC: p.Hlc,
			Type: p.Type, Data: p.Data, Destination: dest, File: p.File})
	}
	if !identity.Verify(cert.NodeKey, batchContext, msg, b.Signature) {
		return nil, fmt.Errorf("%w: signature does not verify", ErrBadBatch)
	}
	return out, nil
}

// hlcClock is a hybrid logical clock: physical time in nanoseconds, bumped
// to stay strictly increasing and ahead of every time seen from others
// (within maxSkew of the local clock, so a peer with a clock far ahead
// cannot drag everyone's time).
type hlcClock struct {
	mu   sync.Mutex
	last int64
}

const maxSkew = int64(time.Minute)

func (c *hlcClock) now() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := time.Now().UnixNano()
	if t <= c.last {
		t = c.last + 1
	}
	c.last = t
	return t
}

func (c *hlcClock) observe(t int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t > c.last && t < time.Now().UnixNano()+maxSkew {
		c.last = t
	}
}
