package conns

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/pipesnet/pipes/internal/backoff"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/kinds"
	"github.com/pipesnet/pipes/internal/mesh"
	"github.com/pipesnet/pipes/internal/transport"
)

// Dial opens a connection to service on node dst: a stream of their
// connection if dst is a direct peer, else through the relays of the
// mesh's route, end-to-end encrypted. It fails fast with ErrNoRoute if dst
// cannot be reached, ErrNoService if nothing listens on service there,
// ErrNotAllowed if the listener refuses this node.
func (m *Manager) Dial(ctx context.Context, dst ids.Node, service string) (net.Conn, error) {
	if service == "" || len(service) > maxService {
		return nil, fmt.Errorf("conns: a service name has 1 to %d bytes", maxService)
	}
	if dst == m.cfg.Self {
		return nil, errors.New("conns: dial the local node's services directly")
	}
	// The whole set-up is bounded, whatever ctx says: a hop that grants
	// no stream must not hold the dialer for ever.
	ctx, cancel := context.WithTimeout(ctx, handshakeTime)
	defer cancel()
	hop, direct, err := m.host().Route(ctx, dst)
	if errors.Is(err, mesh.ErrNoRoute) {
		return nil, fmt.Errorf("%w %x", ErrNoRoute, dst[:4])
	}
	if err != nil {
		return nil, err
	}
	st, err := m.host().OpenStream(ctx, hop, kinds.StreamConns)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoRoute, err)
	}
	ok := false
	defer func() {
		if !ok {
			reset(st)
		}
	}()
	deadline := time.Now().Add(handshakeTime)
	if d, has := ctx.Deadline(); has && d.Before(deadline) {
		deadline = d
	}
	st.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { st.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	local, remote := m.cfg.Addr(m.cfg.Self, ""), m.cfg.Addr(dst, service)
	mode := byte(modeRelay)
	if direct {
		mode = modeDirect
	}
	if _, err := st.Write(header(mode, dst, service, maxHops)); err != nil {
		return nil, m.dialErr(ctx, err)
	}
	err = readStatus(st)
	if !direct && (errors.Is(err, ErrNoService) || errors.Is(err, ErrNotAllowed)) {
		// Only the destination can say that, and on a relayed connection
		// it says it inside TLS: this came from a relay.
		err = fmt.Errorf("%w: a relay answered for the destination", ErrProtocol)
	}
	if err != nil {
		return nil, m.dialErr(ctx, err)
	}
	sc := newStreamConn(st, local, remote)
	sc.peer = dst
	if direct {
		if !stop() {
			return nil, ctx.Err() // ctx ended just now
		}
		st.SetDeadline(time.Time{})
		ok = true
		return sc, nil
	}
	// Relayed: TLS end to end with dst's node key, then the service.
	tc := tls.Client(tlsUnder{sc}, m.cfg.TLS)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, m.dialErr(ctx, fmt.Errorf("conns: end-to-end handshake: %w", err))
	}
	if peer, err := transport.PeerNode(tc.ConnectionState()); err != nil || peer != dst {
		return nil, fmt.Errorf("%w: the end of the connection is not the node dialled", ErrProtocol)
	}
	if _, err := tc.Write(append([]byte{byte(len(service))}, service...)); err != nil {
		return nil, m.dialErr(ctx, err)
	}
	if err := readStatus(tc); err != nil {
		return nil, m.dialErr(ctx, err)
	}
	if !stop() {
		return nil, ctx.Err()
	}
	st.SetDeadline(time.Time{})
	ok = true
	m.punchLater(dst)
	return &tlsConn{Conn: tc, local: local, remote: remote, peer: dst}, nil
}

// A failed punch toward a node is tried again after punchRetry, then
// after twice as long each time, up to punchRetryMax (the node's one
// backoff schedule, with its jitter); a punch that worked resets the wait (the two may need one again after a NAT change).
const (
	punchRetry    = time.Minute
	punchRetryMax = 30 * time.Minute
	punchTimeout  = 15 * time.Second // ordinary and hard-NAT phases (see mesh/punch.go)
	maxPunchState = 1024             // nodes remembered before old ones are forgotten
)

// punchLater tries, in the background, to make dst a direct peer, so that
// the next connections to it go direct (this one stays relayed).
func (m *Manager) punchLater(dst ids.Node) {
	if m.cfg.NoPunch {
		return
	}
	m.mu.Lock()
	now := time.Now()
	p := m.punched[dst]
	if p == nil {
		p = &backoff.Backoff{Min: punchRetry, Max: punchRetryMax}
	}
	if !p.Ready(now) {
		m.mu.Unlock()
		return
	}
	p.Delay(now.Add(punchTimeout)) // one at a time
	m.punched[dst] = p
	if len(m.punched) > maxPunchState {
		for id, q := range m.punched { // forget nodes whose wait is long over
			if now.Sub(q.Next()) > punchRetryMax {
				delete(m.punched, id)
			}
		}
	}
	m.mu.Unlock()
	m.spawn(func() {
		ctx, cancel := context.WithTimeout(m.ctx, punchTimeout)
		defer cancel()
		err := m.host().Punch(ctx, dst)
		var wait time.Duration
		m.mu.Lock()
		if err == nil {
			delete(m.punched, dst)
		} else if p := m.punched[dst]; p != nil {
			wait = p.Failed(time.Now())
		}
		m.mu.Unlock()
		if err != nil {
			m.log.Debug("no direct connection", "node", fmt.Sprintf("%x", dst[:4]), "err", err, "retry in", wait)
		}
	})
}

// dialErr prefers the context's error when it ended.
func (m *Manager) dialErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}
