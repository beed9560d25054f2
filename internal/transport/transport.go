// Package transport runs QUIC on one UDP socket per node and admits only
// members of the node's network.
//
// Every connection is TLS 1.3 with self-signed certificates bound to the
// nodes' Ed25519 device keys, then a membership handshake on the first
// stream (see handshake.go) in which each side proves knowledge of the
// network key with an HMAC over the TLS exporter and its node id. Only
// connections that pass are returned by Dial and Accept; the first stream
// stays open as the control stream that carries framed messages.
//
// Goroutines: one accept loop and one reader of packets that are not QUIC
// per Transport, one short-lived goroutine per inbound handshake, and one
// per connection dialled from a hard punch's socket (it closes the socket
// with the connection). All stop when Close returns. PunchHard runs one
// reader per extra socket, joined before it returns.
package transport

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/pipesnet/pipes/internal/identity"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/wire"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

// Config describes the local node to the transport. Zero durations take the
// defaults documented on each field.
type Config struct {
	Key         *identity.KeyPair // the node's device key
	Cert        *identity.Cert    // the node's certificate, issued by its identity
	NetworkID   ids.Network
	NetworkKey  [32]byte // from the network secret; never sent
	Incarnation uint64   // distinguishes restarts of the same node
	// ListenAddrs returns the addresses advertised in the handshake, given
	// the bound address.
	ListenAddrs func(bound netip.AddrPort) []string
	Logger      *slog.Logger

	// KeepAlive is how often an idle connection sends a PING (default 5s):
	// it keeps NAT bindings open and lets loss be noticed.
	KeepAlive time.Duration
	// IdleTimeout closes a connection that heard nothing for this long
	// (default 15s, three keep-alives): the upper bound on noticing a dead peer.
	IdleTimeout time.Duration
	// HandshakeTimeout bounds QUIC, TLS and the membership exchange (default 10s).
	HandshakeTimeout time.Duration
	// AcceptBacklog is how many verified inbound connections may wait for
	// Accept (default 64); further ones are refused as busy.
	AcceptBacklog int
	// ListenUDP opens the extra sockets of PunchHard (default
	// net.ListenUDP). Tests whose node sockets live in another network
	// namespace open them there.
	ListenUDP func(laddr *net.UDPAddr) (*net.UDPConn, error)
}

func (c *Config) fill() error {
	if c.Key == nil || c.Cert == nil {
		return errors.New("transport: Key and Cert are required")
	}
	if c.ListenAddrs == nil {
		c.ListenAddrs = func(b netip.AddrPort) []string { return []string{b.String()} }
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.KeepAlive <= 0 {
		c.KeepAlive = 5 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 15 * time.Second
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.AcceptBacklog <= 0 {
		c.AcceptBacklog = 64
	}
	if c.ListenUDP == nil {
		c.ListenUDP = func(a *net.UDPAddr) (*net.UDPConn, error) { return net.ListenUDP("udp", a) }
	}
	return nil
}

// Transport is a node's QUIC endpoint: one UDP socket for dialing and
// accepting.
type Transport struct {
	cfg     Config
	udp     *net.UDPConn
	qt      *quic.Transport
	ln      *quic.Listener
	tlsConf *tls.Config
	qconf   *quic.Config
	log     *slog.Logger

	accepted chan *Conn
	live     atomic.Int64  // verified connections not yet closed
	refused  atomic.Uint64 // handshakes refused by this side

	bytesMu    sync.Mutex
	conns      map[*quic.Conn]struct{} // verified connections not yet closed
	closedSent uint64                  // bytes of the closed ones
	closedRecv uint64
	ctx        context.Context
	cancel     context.CancelFunc
	wg         sync.WaitGroup
	closeMu    sync.Once

	extraMu sync.Mutex // guards closing against new PunchHard connections
	closing bool

	checkMu sync.Mutex
	checks  map[[16]byte]chan netip.AddrPort // ExpectCheck's waiters, by nonce
}

// Listen binds the UDP socket at addr ("host:port"; port 0 picks a free one)
// and starts accepting connections.
func Listen(addr string, cfg Config) (*Transport, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("transport: listen address %q: %w", addr, err)
	}
	udp, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, fmt.Errorf("transport: %w", err)
	}
	cert, err := selfSignedCert(cfg.Key.Private)
	if err != nil {
		udp.Close()
		return nil, fmt.Errorf("transport: certificate: %w", err)
	}
	t := &Transport{
		cfg:      cfg,
		udp:      udp,
		qt:       &quic.Transport{Conn: udp},
		tlsConf:  tlsConfig(cert),
		log:      cfg.Logger,
		accepted: make(chan *Conn, cfg.AcceptBacklog),
		conns:    map[*quic.Conn]struct{}{},
		qconf: &quic.Config{
			HandshakeIdleTimeout: cfg.HandshakeTimeout,
			MaxIdleTimeout:       cfg.IdleTimeout,
			KeepAlivePeriod:      cfg.KeepAlive,
			MaxIncomingStreams:   1024,
			EnableDatagrams:      true,
		},
	}
	t.ln, err = t.qt.Listen(t.tlsConf, t.qconf)
	if err != nil {
		udp.Close()
		return nil, fmt.Errorf("transport: %w", err)
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.wg.Add(2)
	go t.acceptLoop()
	go t.readNonQUIC()
	return t, nil
}

// Addr is the bound UDP address.
func (t *Transport) Addr() netip.AddrPort {
	return t.udp.LocalAddr().(*net.UDPAddr).AddrPort()
}

// Dial connects to addr and runs the membership handshake. The returned
// connection is verified.
func (t *Transport) Dial(ctx context.Context, addr string) (*Conn, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("transport: dial %q: %w", addr, err)
	}
	ctx, cancel := context.WithTimeout(ctx, t.cfg.HandshakeTimeout)
	defer cancel()
	qc, err := t.qt.Dial(ctx, ua, t.tlsConf, t.qconf)
	if err != nil {
		return nil, fmt.Errorf("transport: dial %s: %w", addr, err)
	}
	c, err := t.handshake(ctx, qc, true)
	if err != nil {
		if !errors.Is(err, ErrSelf) {
			t.log.Warn("outbound connection failed", "addr", addr, "err", err)
		}
		return nil, fmt.Errorf("transport: dial %s: %w", addr, err)
	}
	return c, nil
}

// Accept returns the next verified inbound connection.
func (t *Transport) Accept(ctx context.Context) (*Conn, error) {
	select {
	case c := <-t.accepted:
		return c, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-t.ctx.Done():
		return nil, net.ErrClosed
	}
}

func (t *Transport) acceptLoop() {
	defer t.wg.Done()
	for {
		qc, err := t.ln.Accept(t.ctx)
		if err != nil {
			return
		}
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			c, err := t.handshake(t.ctx, qc, false)
			if err != nil {
				if !errors.Is(err, ErrSelf) {
					t.log.Warn("inbound connection failed", "remote", qc.RemoteAddr(), "err", err)
				}
				return
			}
			select {
			case t.accepted <- c:
			default:
				c.Close(CodeFull, "too many pending connections")
			}
		}()
	}
}

// Stats are the transport's counters.
type Stats struct {
	Conns   int64  // verified connections open now
	Refused uint64 // peers this side refused during the handshake
	// QUIC bytes (headers, retransmissions and encryption included, UDP
	// and IP headers not) sent and received on verified connections,
	// since the transport started.
	BytesSent, BytesReceived uint64
}

// Stats returns the transport's counters.
func (t *Transport) Stats() Stats {
	s := Stats{Conns: t.live.Load(), Refused: t.refused.Load()}
	t.bytesMu.Lock()
	defer t.bytesMu.Unlock()
	s.BytesSent, s.BytesReceived = t.closedSent, t.closedRecv
	for qc := range t.conns {
		cs := qc.ConnectionStats()
		s.BytesSent += cs.BytesSent
		s.BytesReceived += cs.BytesReceived
	}
	return s
}

// Abort closes the socket first, so that not even a CONNECTION_CLOSE
// reaches the peers, then closes like Close. Peers notice only by the idle
// timeout: this is how a crash looks from outside, for tests and for a
// process that must stop at once.
func (t *Transport) Abort() error {
	t.udp.Close()
	return t.Close()
}

// Close stops accepting, closes every connection of this transport and the
// socket, and waits for the transport's goroutines.
func (t *Transport) Close() error {
	t.closeMu.Do(func() {
		t.extraMu.Lock()
		t.closing = true
		t.extraMu.Unlock()
		t.cancel()
		t.ln.Close()
		t.qt.Close() // does not close a socket it was given
		t.udp.Close()
		t.wg.Wait()
		for {
			select {
			case c := <-t.accepted:
				c.Close(CodeNormal, "shutting down")
				continue
			default:
			}
			break
		}
	})
	return nil
}

// Conn is a verified connection to a member of the network.
type Conn struct {
	qc  *quic.Conn
	ctl *quic.Stream
	r   *bufio.Reader

	// Peer is the peer's identity-signed node certificate.
	Peer *identity.Cert
	// PeerID is the peer's node id (SHA-256 of its device key).
	PeerID ids.Node
	// Incarnation changes each time the peer starts.
	Incarnation uint64
	// ListenAddrs are the addresses the peer says it listens on.
	ListenAddrs []string
	// Observed is the address the peer says this node's packets come
	// from (its view of this node's public address; not verified, and
	// invalid if the peer sent none).
	Observed netip.AddrPort
	// Outbound is true if the local node dialled.
	Outbound bool
	// Extra is true for a connection dialled from one of PunchHard's
	// sockets rather than the node's own: the peer's Observed address is
	// then that socket's, not the node's.
	Extra bool
}

// ReadFrame reads the next control frame. Only one goroutine may read.
func (c *Conn) ReadFrame() (*pb.Frame, error) { return wire.ReadFrame(c.r) }

// WriteFrame writes one control frame. Only one goroutine may write.
func (c *Conn) WriteFrame(f *pb.Frame) error { return wire.WriteMsg(c.ctl, f) }

// Close closes the connection with a code and a reason the peer will see.
func (c *Conn) Close(code quic.ApplicationErrorCode, reason string) {
	c.qc.CloseWithError(code, reason)
}

// Done is closed when the connection is closed, by either side.
func (c *Conn) Done() <-chan struct{} { return c.qc.Context().Done() }

// CloseReason describes why a closed connection ended.
func (c *Conn) CloseReason() error { return context.Cause(c.qc.Context()) }

// RemoteAddr is the peer's UDP address as seen locally.
func (c *Conn) RemoteAddr() net.Addr { return c.qc.RemoteAddr() }

// QUIC exposes the underlying connection to the layers that open their own
// streams or send datagrams.
func (c *Conn) QUIC() *quic.Conn { return c.qc }

// Unmap returns ap with an IPv4 address in its plain form: a dual-stack
// socket reports IPv4 peers as IPv4-in-IPv6, and one address must have
// one form to be compared.
func Unmap(ap netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()) }

// SendProbe sends a small packet that is not QUIC (its first byte has the
// QUIC fixed bit clear, so QUIC endpoints drop it) from the node's socket
// to addr: it opens the local NAT's mapping toward addr, so that a QUIC
// connection dialled from there gets in (hole punching).
func (t *Transport) SendProbe(addr netip.AddrPort) error {
	_, err := t.qt.WriteTo(probe, net.UDPAddrFromAddrPort(addr))
	return err
}

// probe is the payload of punching probes.
var probe = []byte("\x00pipes punch")
