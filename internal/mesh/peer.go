package mesh

import (
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/kinds"
	"github.com/pipesnet/pipes/internal/transport"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

// peerQueue is how many frames may wait for one peer's writer. Beyond it
// frames are dropped and counted: broadcasts are repaired by the lazy
// IHAVE/GRAFT path, and presence is re-sent every heartbeat.
const peerQueue = 1024

// peerQueueBytes bounds the payload bytes waiting for one peer, whatever
// the number of frames (frames may be up to wire.MaxFrameSize).
const peerQueueBytes = 32 << 20

// peer is one verified connection in use by the mesh. Its goroutines (the
// reader and writer of the control stream, the datagram reader and writer)
// belong to the mesh and stop when the connection closes or the mesh shuts
// down.
type peer struct {
	id      ids.Node
	conn    *transport.Conn
	out     chan *pb.Frame
	dgOut   chan []byte    // whole mesh datagrams for the datagram writer
	dgLimit atomic.Int64   // the connection's datagram limit, as last probed
	dgAt    atomic.Int64   // when it was probed (unix nanoseconds; 0: never)
	stop    chan struct{}  // closed by the loop to end the writers
	dropped *atomic.Uint64 // the mesh's counter
	queued  atomic.Int64   // payload bytes waiting in out
	relay   relayBudget    // for what it sends through this node
	told    netip.AddrPort // the address it was last told it has (loop)
	checked time.Time      // when checkPeer last pinged it (loop)
}

// weight is the payload size of a frame, for the byte bound of a queue.
func weight(f *pb.Frame) int64 {
	switch b := f.Body.(type) {
	case *pb.Frame_Gossip:
		return int64(len(b.Gossip.Payload))
	case *pb.Frame_Routed:
		return int64(len(b.Routed.Payload))
	}
	return 64
}

// send queues f for the writer without blocking the loop; a full queue
// (in frames or bytes) drops it and counts it.
func (p *peer) send(f *pb.Frame) {
	w := weight(f)
	if p.queued.Load()+w > peerQueueBytes {
		p.dropped.Add(1)
		return
	}
	select {
	case p.out <- f:
		p.queued.Add(w)
	default:
		p.dropped.Add(1)
	}
}

// busy reports whether the queue is three-quarters full.
func (p *peer) busy() bool {
	return len(p.out) >= peerQueue*3/4 || p.queued.Load() >= peerQueueBytes*3/4
}

// reader forwards frames to the loop until the connection fails. It checks
// broadcast messages (ids, signatures) before the loop sees them, so that
// the costly part runs in parallel across peers and the loop stays free.
func (m *Mesh) reader(p *peer) {
	defer m.wg.Done()
	for {
		f, err := p.conn.ReadFrame()
		if err != nil {
			select {
			case m.closedCh <- closed{p: p, err: err}:
			case <-m.ctx.Done():
			}
			return
		}
		in := inFrame{p: p, f: f}
		if g := f.GetGossip(); g != nil {
			if why := m.check(g, &in); why != "" {
				m.bad(p, why)
				continue
			}
		}
		select {
		case m.frameCh <- in:
		case <-m.ctx.Done():
			return
		}
	}
}

// check verifies a gossip frame: its id, its origin and, for presence, the
// signed status; other kinds go to Config.Validate. It returns why the
// frame is bad, or "".
func (m *Mesh) check(g *pb.Gossip, in *inFrame) string {
	if len(g.Id) != 32 || len(g.Origin) != 32 || MessageID(g.Kind, g.Payload) != [32]byte(g.Id) {
		return "gossip id or origin does not match its content"
	}
	if g.Kind == kinds.Status {
		st, err := parseStatus(g.Payload, m.cfg.Cert.NetworkID, m.cfg.Certs)
		if err != nil {
			return err.Error()
		}
		if id := st.cert.NodeID(); string(g.Origin) != string(id[:]) {
			return "status relayed with another origin"
		}
		in.st = st
		return ""
	}
	if m.cfg.Validate != nil {
		v, err := m.cfg.Validate(g.Kind, g.Payload, ids.Node(g.Origin))
		if err != nil {
			return err.Error()
		}
		in.v = v
	}
	return ""
}

// writer writes queued frames in order. When stop closes it writes what is
// still queued (the goodbye at shutdown) and returns.
func (m *Mesh) writer(p *peer) {
	defer m.wg.Done()
	for {
		select {
		case f := <-p.out:
			p.queued.Add(-weight(f))
			if err := p.conn.WriteFrame(f); err != nil {
				p.conn.Close(transport.CodeProtocol, "write failed")
				return
			}
			if len(p.out) == 0 {
				select { // wake a loop that holds back broadcasts
				case m.drained <- struct{}{}:
				default:
				}
			}
		case <-p.stop:
			for {
				select {
				case f := <-p.out:
					if p.conn.WriteFrame(f) != nil {
						return
					}
				default:
					return
				}
			}
		case <-p.conn.Done():
			return
		}
	}
}
