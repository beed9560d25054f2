package mesh

import (
	"context"
	"fmt"

	"github.com/quic-go/quic-go"

	"github.com/pipesnet/pipes/internal/ids"
)

// Streams: besides the control stream that carries frames, a peer
// connection carries streams that upper layers open for their own data
// (data connections): OpenStream opens one to a direct peer, and the
// streams a peer opens are handed to Config.OnStream. The mesh reads and
// writes nothing on them.

// StreamCode is the QUIC error code with which the mesh refuses a stream
// when no OnStream is set.
const StreamCode quic.StreamErrorCode = 0x50

// OpenStream opens a new QUIC stream to peer, which must be a direct peer
// now (ErrNotPeer otherwise). It waits while the peer's limit of open
// streams is reached, until ctx ends.
func (m *Mesh) OpenStream(ctx context.Context, peer ids.Node) (*quic.Stream, error) {
	t := m.dgTable.Load()
	if t.closed {
		return nil, ErrClosed
	}
	p := t.hops[peer]
	if p == nil || p.id != peer {
		return nil, fmt.Errorf("%w: %x", ErrNotPeer, peer[:4])
	}
	st, err := p.conn.QUIC().OpenStreamSync(ctx)
	if err != nil {
		return nil, fmt.Errorf("mesh: open a stream to %s: %w", peer.Short(), err)
	}
	return st, nil
}

// streamAcceptor hands the streams peer p opens to Config.OnStream until
// the connection closes or the mesh stops.
func (m *Mesh) streamAcceptor(p *peer) {
	defer m.wg.Done()
	qc := p.conn.QUIC()
	for {
		st, err := qc.AcceptStream(m.ctx)
		if err != nil {
			return
		}
		if m.cfg.OnStream == nil {
			st.CancelRead(StreamCode)
			st.CancelWrite(StreamCode)
			continue
		}
		m.cfg.OnStream(p.id, st)
	}
}
