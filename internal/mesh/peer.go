package mesh

import (
	"sync/atomic"

	"github.com/pipesnet/pipes/internal/transport"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

// peerQueue is how many frames may wait for one peer's writer. Beyond it
// frames are dropped and counted: broadcasts are repaired by the lazy
// IHAVE/GRAFT path, and presence is re-sent every heartbeat.
const peerQueue = 1024

// peer is one verified connection in use by the mesh. Its reader and writer
// goroutines belong to the mesh and stop when the connection closes or the
// mesh shuts down.
type peer struct {
	id      [32]byte
	conn    *transport.Conn
	out     chan *pb.Frame
	stop    chan struct{} // closed by the loop to end the writer
	dropped atomic.Uint64
}

// send queues f for the writer without blocking the loop.
func (p *peer) send(f *pb.Frame) {
	select {
	case p.out <- f:
	default:
		p.dropped.Add(1)
	}
}

// reader forwards frames to the loop until the connection fails.
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
		select {
		case m.frameCh <- inFrame{p: p, f: f}:
		case <-m.ctx.Done():
			return
		}
	}
}

// writer writes queued frames in order. When stop closes it writes what is
// still queued (the goodbye at shutdown) and returns.
func (m *Mesh) writer(p *peer) {
	defer m.wg.Done()
	for {
		select {
		case f := <-p.out:
			if err := p.conn.WriteFrame(f); err != nil {
				p.conn.Close(transport.CodeProtocol, "write failed")
				return
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
