// Package conns implements data connections between nodes: Listen for a
// named service, Dial a service on any node of the network, and get a
// net.Conn.
//
// Between direct peers a connection is one QUIC stream of their
// connection, which is already end to end (TLS 1.3 between the two node
// keys): nothing is added, so it moves data as fast as QUIC does. When the
// two nodes are not peers, the connection is a chain of QUIC streams
// through the relays on the mesh's route, spliced by each relay, and the
// two ends run TLS 1.3 over the chain with their node keys, so relays
// carry only ciphertext and neither end can be impersonated. A relayed
// connection that loses a relay fails with an error (it does not move to
// another path).
//
// Protocol on a new stream (dialer -> first hop), after the stream
// protocol bytes the node's dispatcher reads (kinds.StreamConns, "pc"):
//
//	version 1 | mode | destination node id (32) |
//	    mode 1 (direct): u8 length | service name
//	    mode 2 (relayed): u8 hops left (a relay refuses at 1, and passes
//	    on one less)
//
// Mode 1 is for a stream to the destination itself: the destination
// answers with one status byte and the stream is the connection. Mode 2
// goes through relays: each relay that is not the destination opens a
// stream to its next hop with the same header and splices the two; the
// destination answers status 0 and runs a TLS server; inside TLS the
// dialer sends u8 length | service name and the destination answers one
// status byte. A relay that cannot go on answers a non-zero status and
// closes. Status: 0 accepted, 1 no such service, 2 not allowed, 3 the
// service is too busy, 4 no route.
package conns

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/pipesnet/pipes/internal/backoff"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/kinds"
	"github.com/pipesnet/pipes/internal/service"
)

// Host is what the connections need of the node: the part of
// service.Host they use (the manager is a service, started with the
// node's host).
type Host interface {
	// Punch tries to make dst a direct peer (hole punching through NATs).
	Punch(ctx context.Context, dst ids.Node) error
	// OpenStream opens a stream of protocol proto to a direct peer.
	OpenStream(ctx context.Context, peer ids.Node, proto uint16) (*quic.Stream, error)
	Route(ctx context.Context, dst ids.Node) (hop ids.Node, direct bool, err error)
	// Member reports whether node is a member and its identity's id.
	Member(node ids.Node) (identity [32]byte, ok bool)
}

// Config configures a Manager.
type Config struct {
	Self   ids.Node
	TLS    *tls.Config // transport.StreamTLS of the node key
	Logger *slog.Logger
	// Addr makes the address of one end of a connection.
	Addr func(node ids.Node, service string) net.Addr
	// NoPunch: a relayed connection does not make the two nodes try a
	// direct one (tests of relayed connections).
	NoPunch bool
}

// Errors.
var (
	ErrNoService  = errors.New("conns: no such service on that node")
	ErrNotAllowed = errors.New("conns: the service does not accept connections from this node")
	ErrBusy       = errors.New("conns: the service is not accepting connections fast enough")
	ErrNoRoute    = errors.New("conns: no route to the node")
	ErrClosed     = errors.New("conns: closed")
	ErrInUse      = errors.New("conns: a listener for that service exists")
	ErrProtocol   = errors.New("conns: protocol error")
)

const (
	version               = 1
	modeDirect, modeRelay = 1, 2
	maxService            = 255
	handshakeTime         = 10 * time.Second
	acceptQueue           = 128
	maxRelayed            = 1024 // streams this node relays at once
	maxRelayedPerPeer     = 256  // of which coming from one peer
	maxHops               = 8    // relays a connection may cross
)

// Status bytes.
const (
	statusOK = iota
	statusNoService
	statusNotAllowed
	statusBusy
	statusNoRoute
)

var statusErr = map[byte]error{statusNoService: ErrNoService, statusNotAllowed: ErrNotAllowed,
	statusBusy: ErrBusy, statusNoRoute: ErrNoRoute}

// streamCode is the QUIC error code of streams the manager resets.
const streamCode quic.StreamErrorCode = 0x51

// Manager holds the node's listeners and relays connections for others.
type Manager struct {
	cfg    Config
	log    *slog.Logger
	h      atomic.Pointer[Host] // set by Start
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	closed    bool
	listeners map[string]*Listener
	relayed   int
	relayedBy map[ids.Node]int              // by the peer the stream came from
	punched   map[ids.Node]*backoff.Backoff // punches toward nodes: when the next may start
}

// New makes a Manager.
func New(cfg Config) *Manager {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Manager{cfg: cfg, log: cfg.Logger, listeners: map[string]*Listener{}, relayedBy: map[ids.Node]int{},
		punched: map[ids.Node]*backoff.Backoff{}}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	return m
}

// The manager is a service of the node (package service): it registers
// its stream protocol, is started with the node's host and closed with
// the node.

// Name names the service.
func (m *Manager) Name() string { return "conns" }

// Register registers the handler of the data connections' streams.
func (m *Manager) Register(r service.Registrar) error {
	return r.HandleStream(kinds.StreamConns, m.HandleStream)
}

// Start gives the manager the node's host. Until then Dial fails with
// ErrNoRoute and streams that come are refused.
func (m *Manager) Start(_ context.Context, h service.Host) error {
	var host Host = h
	m.h.Store(&host)
	return nil
}

// host returns the node's host, or one that reaches nothing before Start.
func (m *Manager) host() Host {
	if h := m.h.Load(); h != nil {
		return *h
	}
	return noHost{}
}

// noHost is the host of a manager not started.
type noHost struct{}

var errNotStarted = fmt.Errorf("%w: the data connections are not started", ErrNoRoute)

func (noHost) Punch(context.Context, ids.Node) error { return errNotStarted }
func (noHost) OpenStream(context.Context, ids.Node, uint16) (*quic.Stream, error) {
	return nil, errNotStarted
}
func (noHost) Route(context.Context, ids.Node) (ids.Node, bool, error) {
	return ids.Node{}, false, errNotStarted
}
func (noHost) Member(ids.Node) ([32]byte, bool) { return [32]byte{}, false }

// Close closes every listener, ends the relayed connections and waits for
// the manager's goroutines. Connections already handed out stay open
// until their streams close (the mesh closing closes them). It returns
// nil (it is the service's Close).
func (m *Manager) Close() error {
	m.mu.Lock()
	m.closed = true
	ls := m.listeners
	m.listeners = map[string]*Listener{}
	m.mu.Unlock()
	for _, l := range ls {
		l.close()
	}
	m.cancel()
	m.wg.Wait()
	return nil
}

// spawn runs f on a goroutine of the manager unless it is closed.
func (m *Manager) spawn(f func()) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		f()
	}()
	return true
}

// Allow decides whether a node (of an identity) may connect to a service.
type Allow func(node ids.Node, identity [32]byte) bool

// Listener accepts the connections to one service.
type Listener struct {
	m       *Manager
	service string
	allow   Allow
	ch      chan net.Conn
	done    chan struct{}

	mu     sync.Mutex // orders offer and close
	closed bool
}

// Listen starts accepting connections to service; allow, if not nil,
// decides who may connect (others are refused before any data flows).
func (m *Manager) Listen(service string, allow Allow) (*Listener, error) {
	if service == "" || len(service) > maxService {
		return nil, fmt.Errorf("conns: a service name has 1 to %d bytes", maxService)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	if m.listeners[service] != nil {
		return nil, fmt.Errorf("%w: %q", ErrInUse, service)
	}
	l := &Listener{m: m, service: service, allow: allow, ch: make(chan net.Conn, acceptQueue), done: make(chan struct{})}
	m.listeners[service] = l
	return l, nil
}

// Accept waits for the next connection.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops accepting; connections waiting to be accepted are closed.
func (l *Listener) Close() error {
	l.m.mu.Lock()
	if l.m.listeners[l.service] == l {
		delete(l.m.listeners, l.service)
	}
	l.m.mu.Unlock()
	l.close()
	return nil
}

func (l *Listener) close() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	close(l.done)
	l.mu.Unlock()
	for {
		select {
		case c := <-l.ch:
			c.Close()
		default:
			return
		}
	}
}

// Addr is the listener's address: this node and the service.
func (l *Listener) Addr() net.Addr { return l.m.cfg.Addr(l.m.cfg.Self, l.service) }

// hasRoom reports whether the accept queue has room now.
func (l *Listener) hasRoom() bool { return len(l.ch) < cap(l.ch) }

// offer hands a new connection to the listener, or reports that its queue
// is full.
func (l *Listener) offer(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	select {
	case l.ch <- c:
		return true
	default:
		return false
	}
}

// listener returns the listener of service and whether node may connect.
func (m *Manager) listener(service string, node ids.Node) (*Listener, byte) {
	m.mu.Lock()
	l := m.listeners[service]
	m.mu.Unlock()
	if l == nil {
		return nil, statusNoService
	}
	if l.allow != nil {
		identity, _ := m.host().Member(node)
		if !l.allow(node, identity) {
			return nil, statusNotAllowed
		}
	}
	return l, statusOK
}

// header encodes the opening of a stream: service for mode direct, hops
// for mode relayed.
func header(mode byte, dst ids.Node, service string, hops byte) []byte {
	b := append([]byte{version, mode}, dst[:]...)
	if mode == modeDirect {
		b = append(b, byte(len(service)))
		return append(b, service...)
	}
	return append(b, hops)
}

// readHeader decodes the opening of a stream.
func readHeader(r io.Reader) (mode byte, dst ids.Node, service string, hops byte, err error) {
	var h [2 + 32]byte
	if _, err = io.ReadFull(r, h[:]); err != nil {
		return
	}
	if h[0] != version || (h[1] != modeDirect && h[1] != modeRelay) {
		err = fmt.Errorf("%w: bad stream header", ErrProtocol)
		return
	}
	mode, dst = h[1], ids.Node(h[2:])
	if mode == modeDirect {
		service, err = readService(r)
		return
	}
	var n [1]byte
	if _, err = io.ReadFull(r, n[:]); err == nil {
		hops = n[0]
	}
	return
}

// readService reads u8 length | name.
func readService(r io.Reader) (string, error) {
	var n [1]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return "", err
	}
	if n[0] == 0 {
		return "", fmt.Errorf("%w: empty service name", ErrProtocol)
	}
	b := make([]byte, n[0])
	if _, err := io.ReadFull(r, b); err != nil {
		return "", err
	}
	return string(b), nil
}

// readStatus reads one status byte and maps it to an error.
func readStatus(r io.Reader) error {
	var s [1]byte
	if _, err := io.ReadFull(r, s[:]); err != nil {
		return fmt.Errorf("conns: no answer: %w", err)
	}
	if s[0] == statusOK {
		return nil
	}
	if err, ok := statusErr[s[0]]; ok {
		return err
	}
	return fmt.Errorf("%w: status %d", ErrProtocol, s[0])
}

// reset abandons a stream in both directions.
func reset(st *quic.Stream) {
	st.CancelRead(streamCode)
	st.CancelWrite(streamCode)
}
