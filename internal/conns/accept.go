package conns

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/kinds"
	"github.com/pipesnet/pipes/internal/mesh"
	"github.com/pipesnet/pipes/internal/transport"
)

// HandleStream takes a stream of protocol kinds.StreamConns a direct peer
// opened (a dispatch.StreamHandler). It does not block: the stream is
// read on a goroutine of the manager.
func (m *Manager) HandleStream(peer ids.Node, st *quic.Stream) {
	if !m.spawn(func() { m.serve(peer, st) }) {
		reset(st)
	}
}

// serve reads a stream's header and accepts, relays or refuses it. Until
// the stream is handed over, closing the manager resets it.
func (m *Manager) serve(peer ids.Node, st *quic.Stream) {
	st.SetDeadline(time.Now().Add(handshakeTime))
	stop := context.AfterFunc(m.ctx, func() { reset(st) })
	defer stop()
	mode, dst, service, hops, err := readHeader(st)
	if err != nil {
		reset(st)
		return
	}
	switch {
	case mode == modeDirect && dst == m.cfg.Self:
		m.acceptDirect(peer, st, service)
	case mode == modeDirect:
		answer(st, statusNoRoute) // a direct stream must come from the dialer itself
	case dst != m.cfg.Self:
		m.relay(peer, st, dst, hops)
	default:
		m.acceptRelayed(st)
	}
}

// answer writes a refusal and ends the stream.
func answer(st *quic.Stream, status byte) {
	st.Write([]byte{status})
	st.Close()
	st.CancelRead(streamCode)
}

// acceptDirect accepts a connection from a direct peer: the QUIC
// connection already authenticated it.
func (m *Manager) acceptDirect(peer ids.Node, st *quic.Stream, service string) {
	l, status := m.listener(service, peer)
	if status != statusOK {
		answer(st, status)
		return
	}
	if !l.hasRoom() {
		answer(st, statusBusy)
		return
	}
	// The status goes out before the listener can write anything.
	if _, err := st.Write([]byte{statusOK}); err != nil {
		reset(st)
		return
	}
	st.SetDeadline(time.Time{})
	sc := newStreamConn(st, m.cfg.Addr(m.cfg.Self, service), m.cfg.Addr(peer, ""))
	sc.peer = peer
	if !l.offer(sc) {
		reset(st) // filled up, or closed, since
	}
}

// acceptRelayed accepts a connection that came through relays: TLS with
// the dialer's node key, then the service inside. The dialer must be a
// member the mesh knows (its signed presence).
func (m *Manager) acceptRelayed(st *quic.Stream) {
	if _, err := st.Write([]byte{statusOK}); err != nil {
		reset(st)
		return
	}
	sc := newStreamConn(st, nil, nil)
	tc := tls.Server(tlsUnder{sc}, m.cfg.TLS)
	ctx, cancel := context.WithTimeout(m.ctx, handshakeTime)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		reset(st)
		return
	}
	peer, err := transport.PeerNode(tc.ConnectionState())
	if err != nil {
		reset(st)
		return
	}
	service, err := readService(tc)
	if err != nil {
		reset(st)
		return
	}
	l, status := m.listener(service, peer)
	if _, member := m.host().Member(peer); status == statusOK && !member {
		status = statusNotAllowed // a key no member of the network announced
	}
	if status == statusOK && !l.hasRoom() {
		status = statusBusy
	}
	if status != statusOK {
		tc.Write([]byte{status})
		tc.Close()
		return
	}
	if _, err := tc.Write([]byte{statusOK}); err != nil {
		reset(st)
		return
	}
	st.SetDeadline(time.Time{})
	if !l.offer(&tlsConn{Conn: tc, local: m.cfg.Addr(m.cfg.Self, service), remote: m.cfg.Addr(peer, ""), peer: peer}) {
		reset(st)
	}
}

// relay opens the next stream toward dst for a stream that peer opened
// and splices the two until both directions end. It refuses a stream that
// would go back to peer, one with no hops left, and beyond its limits
// (maxRelayed, and maxRelayedPerPeer per peer). The deadlines stay until
// the destination's status has come back, so a chain that never answers
// frees its slots.
func (m *Manager) relay(peer ids.Node, in *quic.Stream, dst ids.Node, hops byte) {
	if hops <= 1 || dst == peer {
		answer(in, statusNoRoute)
		return
	}
	m.mu.Lock()
	full := m.relayed >= maxRelayed || m.relayedBy[peer] >= maxRelayedPerPeer
	if !full {
		m.relayed++
		m.relayedBy[peer]++
	}
	m.mu.Unlock()
	if full {
		answer(in, statusBusy)
		return
	}
	defer func() {
		m.mu.Lock()
		m.relayed--
		if m.relayedBy[peer]--; m.relayedBy[peer] == 0 {
			delete(m.relayedBy, peer)
		}
		m.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(m.ctx, handshakeTime)
	hop, _, err := m.host().Route(ctx, dst)
	if err == nil && hop == peer {
		err = mesh.ErrNoRoute // a loop: the route goes back where the stream came from
	}
	var out *quic.Stream
	if err == nil {
		out, err = m.host().OpenStream(ctx, hop, kinds.StreamConns)
	}
	cancel()
	if err != nil {
		if !errors.Is(err, mesh.ErrNoRoute) {
			m.log.Debug("cannot relay a connection", "err", err)
		}
		answer(in, statusNoRoute)
		return
	}
	stopOut := context.AfterFunc(m.ctx, func() { reset(out) })
	defer stopOut()
	out.SetDeadline(time.Now().Add(handshakeTime))
	var status [1]byte
	if _, err := out.Write(header(modeRelay, dst, "", hops-1)); err != nil {
		reset(out)
		answer(in, statusNoRoute)
		return
	}
	if _, err := io.ReadFull(out, status[:]); err != nil {
		reset(out)
		answer(in, statusNoRoute)
		return
	}
	if _, err := in.Write(status[:]); err != nil {
		reset(out)
		reset(in)
		return
	}
	in.SetDeadline(time.Time{})
	out.SetDeadline(time.Time{})
	done := make(chan struct{})
	go func() { // owned by this relay, which waits for it
		defer close(done)
		splice(out, in)
	}()
	splice(in, out)
	<-done
}

// splice copies src to dst until src ends, then closes dst's write side.
// Each direction fails on its own, as on a direct stream: a reset of src
// resets dst's write side, and a dst that stops reading stops src.
func splice(dst, src *quic.Stream) {
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				src.CancelRead(streamCode)
				return
			}
		}
		if errors.Is(err, io.EOF) {
			dst.Close()
			return
		}
		if err != nil {
			dst.CancelWrite(streamCode)
			return
		}
	}
}
