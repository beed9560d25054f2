package conns

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/pipesnet/pipes/internal/mesh"
	"github.com/pipesnet/pipes/internal/transport"
)

// HandleStream takes a stream a direct peer opened (mesh.Config.OnStream).
// It does not block: the stream is read on a goroutine of the manager.
func (m *Manager) HandleStream(peer [32]byte, st *quic.Stream) {
	if !m.spawn(func() { m.serve(peer, st) }) {
		reset(st)
	}
}

// serve reads a stream's header and accepts, relays or refuses it.
func (m *Manager) serve(peer [32]byte, st *quic.Stream) {
	st.SetDeadline(time.Now().Add(handshakeTime))
	stop := context.AfterFunc(m.ctx, func() { reset(st) })
	mode, dst, service, err := readHeader(st)
	if err != nil {
		stop()
		reset(st)
		return
	}
	switch {
	case mode == modeDirect && dst == m.cfg.Self:
		stop()
		m.acceptDirect(peer, st, service)
	case mode == modeDirect:
		stop()
		answer(st, statusNoRoute) // a direct stream must come from the dialer itself
	case dst != m.cfg.Self:
		m.relay(st, dst, stop)
	default:
		stop()
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
func (m *Manager) acceptDirect(peer [32]byte, st *quic.Stream, service string) {
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
	if !l.offer(&streamConn{Stream: st, local: m.cfg.Addr(m.cfg.Self, service), remote: m.cfg.Addr(peer, "")}) {
		reset(st) // filled up, or closed, since
	}
}

// acceptRelayed accepts a connection that came through relays: TLS with
// the dialer's node key, then the service inside.
func (m *Manager) acceptRelayed(st *quic.Stream) {
	if _, err := st.Write([]byte{statusOK}); err != nil {
		reset(st)
		return
	}
	tc := tls.Server(&streamConn{Stream: st}, m.cfg.TLS)
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
	if !l.offer(&tlsConn{Conn: tc, local: m.cfg.Addr(m.cfg.Self, service), remote: m.cfg.Addr(peer, "")}) {
		reset(st)
	}
}

// relay opens the next stream toward dst and splices the two until both
// directions end (or either fails, which ends both).
func (m *Manager) relay(in *quic.Stream, dst [32]byte, stop func() bool) {
	defer stop()
	m.mu.Lock()
	full := m.relayed >= maxRelayed
	if !full {
		m.relayed++
	}
	m.mu.Unlock()
	if full {
		answer(in, statusBusy)
		return
	}
	defer func() {
		m.mu.Lock()
		m.relayed--
		m.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(m.ctx, handshakeTime)
	hop, _, err := m.cfg.Mesh.Route(ctx, dst)
	var out *quic.Stream
	if err == nil {
		out, err = m.cfg.Mesh.OpenStream(ctx, hop)
	}
	cancel()
	if err != nil {
		if !errors.Is(err, mesh.ErrNoRoute) {
			m.log.Debug("cannot relay a connection", "err", err)
		}
		answer(in, statusNoRoute)
		return
	}
	if _, err := out.Write(header(modeRelay, dst, "")); err != nil {
		reset(out)
		answer(in, statusNoRoute)
		return
	}
	in.SetDeadline(time.Time{})
	stopOut := context.AfterFunc(m.ctx, func() { reset(out) })
	defer stopOut()
	done := make(chan struct{})
	go func() { // owned by this relay, which waits for it
		defer close(done)
		splice(out, in)
	}()
	splice(in, out)
	<-done
}

// splice copies from src to dst until src ends, then half-closes dst; on
// an error it resets both.
func splice(dst, src *quic.Stream) {
	if _, err := io.Copy(dst, src); err != nil {
		reset(src)
		reset(dst)
		return
	}
	dst.Close()
}
