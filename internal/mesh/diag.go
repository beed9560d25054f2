package mesh

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/kinds"
)

// Diagnostics: the path to a node (direct or through which peer, with the
// first hop's round-trip time and byte counts), and a ping that measures
// the round trip to any node along the path routed messages take.

// PathInfo describes how this node reaches another now.
type PathInfo struct {
	Direct bool     // the node is a direct peer
	Via    ids.Node // the first hop (the node itself when Direct)
	// Of the connection to the first hop:
	RTT           time.Duration // smoothed round-trip time
	BytesSent     uint64        // QUIC bytes sent on it
	BytesReceived uint64        // QUIC bytes received on it
	Remote        string        // the first hop's UDP address as seen here
}

// Path reports the path to dst (ErrNoRoute if there is none now).
func (m *Mesh) Path(ctx context.Context, dst ids.Node) (PathInfo, error) {
	type res struct {
		info PathInfo
		ok   bool
	}
	ch := make(chan res, 1)
	select {
	case m.queryCh <- func() {
		hop, ok := m.nextHop(dst)
		p := m.peers[hop]
		if !ok || p == nil {
			ch <- res{}
			return
		}
		s := p.conn.QUIC().ConnectionStats()
		ch <- res{PathInfo{Direct: hop == dst, Via: hop, RTT: s.SmoothedRTT, BytesSent: s.BytesSent,
			BytesReceived: s.BytesReceived, Remote: p.conn.RemoteAddr().String()}, true}
	}:
	case <-ctx.Done():
		return PathInfo{}, ctx.Err()
	case <-m.loopDone:
		return PathInfo{}, ErrClosed
	}
	r := <-ch
	if !r.ok {
		return PathInfo{}, fmt.Errorf("%w %x", ErrNoRoute, dst[:4])
	}
	return r.info, nil
}

// Ping sends a ping to dst along the routed path and returns the time
// until its answer came back (ctx bounds the wait).
func (m *Mesh) Ping(ctx context.Context, dst ids.Node) (time.Duration, error) {
	var b [8]byte
	rand.Read(b[:])
	nonce := binary.BigEndian.Uint64(b[:])
	done, stop := m.pings.add(nonce)
	defer stop()
	start := time.Now()
	if err := m.Send(ctx, dst, kinds.Ping, b[:]); err != nil {
		return 0, err
	}
	select {
	case <-done:
		return time.Since(start), nil
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-m.loopDone:
		return 0, ErrClosed
	}
}

// handlePing answers a ping or completes one; it runs on the loop and
// reports whether the message was one.
func (m *Mesh) handlePing(src ids.Node, kind uint32, payload []byte) bool {
	switch kind {
	case kinds.Ping:
		if len(payload) == 8 {
			m.send(sendReq{dst: src, kind: kinds.Pong, payload: payload}) // best effort
		}
		return true
	case kinds.Pong:
		if len(payload) == 8 {
			m.pings.done(binary.BigEndian.Uint64(payload))
		}
		return true
	}
	return false
}
