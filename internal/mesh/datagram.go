package mesh

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/pipesnet/pipes/internal/ids"
)

// Datagrams: unreliable delivery for realtime traffic. A mesh datagram is
// one QUIC datagram (RFC 9221): never retransmitted, never behind another
// message. It goes to the destination directly if it is a peer, otherwise
// to the first hop of the route routed messages take (nextHop), and each
// relay forwards it as a datagram, never on a stream.
//
// Wire format, dgHeaderLen bytes then the payload:
//
//	byte 0      version (dgVersion); anything else is dropped
//	byte 1      TTL: hops left, set to maxTTL by the sender; a relay
//	            decrements it and drops the datagram when it reaches 0
//	bytes 2-33  destination node id
//	bytes 34-   payload
//
// There is no source address: the connection a datagram arrives on is a
// verified member of the network, and upper layers authenticate their
// datagrams end to end. Malformed datagrams are dropped and counted.
//
// Sending does not go through the mesh loop. The loop publishes, whenever
// peers or routes change, an immutable table from each reachable
// destination to the peer of its first hop (publishDatagramRoutes), and
// SendDatagram reads it with one atomic load. Each peer has a datagram
// queue of dgQueue datagrams emptied by its own writer goroutine, because
// quic-go's SendDatagram blocks while its internal queue (32 datagrams) is
// full, for as long as congestion control holds packets back; the mesh
// never waits for it: a full queue drops the datagram and counts it.

const (
	// dgVersion is the first byte of a mesh datagram.
	dgVersion = 1
	// dgHeaderLen is the size of the mesh datagram header.
	dgHeaderLen = 1 + 1 + 32
	// dgQueue is how many datagrams may wait for one peer's datagram writer.
	dgQueue = 256
)

// ErrDatagramTooLarge is returned (as a *DatagramTooLargeError, which tells
// the largest payload that fits) by SendDatagram when the payload does not
// fit in one QUIC datagram on the first hop.
var ErrDatagramTooLarge = errors.New("mesh: datagram too large")

// DatagramTooLargeError is the error of SendDatagram for a payload too
// large for the first hop. errors.Is(err, ErrDatagramTooLarge) holds.
// The pipeline engine turns Max into the packet data that fits, and the
// root package's error mapping (mapErr) into its public
// DatagramTooLargeError: that is the only place the two meet.
type DatagramTooLargeError struct {
	Max int // the largest payload that fits now
}

// Error describes the limit.
func (e *DatagramTooLargeError) Error() string {
	return fmt.Sprintf("%v: the largest payload is %d bytes", ErrDatagramTooLarge, e.Max)
}

// Unwrap returns ErrDatagramTooLarge.
func (e *DatagramTooLargeError) Unwrap() error { return ErrDatagramTooLarge }

// DatagramStats are the datagram counters of a mesh. A datagram is dropped
// for one reason, so Dropped is the sum of the reasons.
type DatagramStats struct {
	Sent      uint64 // datagrams of this node queued for their first hop
	Received  uint64 // datagrams addressed to this node (handed to DeliverDatagram)
	Forwarded uint64 // datagrams relayed for others
	Dropped   uint64 // all datagrams dropped, for the reasons below
	NoRoute   uint64 // relayed with no route, or the connection closed before it was sent
	TooLarge  uint64 // too large for the next hop (a relay's, or a path that shrank)
	Malformed uint64 // short, unknown version or zero TTL
	Expired   uint64 // TTL ran out at a relay
	QueueFull uint64 // the next hop's datagram queue was full (ErrBusy for the sender)
}

type dgCounters struct {
	sent, received, forwarded, noRoute, tooLarge, malformed, expired, queueFull atomic.Uint64
}

func (c *dgCounters) load() DatagramStats {
	s := DatagramStats{
		Sent: c.sent.Load(), Received: c.received.Load(), Forwarded: c.forwarded.Load(),
		NoRoute: c.noRoute.Load(), TooLarge: c.tooLarge.Load(), Malformed: c.malformed.Load(),
		Expired: c.expired.Load(), QueueFull: c.queueFull.Load(),
	}
	s.Dropped = s.NoRoute + s.TooLarge + s.Malformed + s.Expired + s.QueueFull
	return s
}

// dgTable is the published view SendDatagram and relays read: the peer of
// the first hop to each reachable node.
type dgTable struct {
	hops   map[ids.Node]*peer
	closed bool
}

// errMalformed is what parseDatagram returns for any bad datagram.
var errMalformed = errors.New("mesh: malformed datagram")

// parseDatagram splits a mesh datagram into its TTL, destination and
// payload. The payload aliases b.
func parseDatagram(b []byte) (ttl uint8, dst ids.Node, payload []byte, err error) {
	if len(b) < dgHeaderLen || b[0] != dgVersion || b[1] == 0 {
		return 0, dst, nil, errMalformed
	}
	return b[1], ids.Node(b[2:34]), b[dgHeaderLen:], nil
}

// appendDatagram appends a mesh datagram to b.
func appendDatagram(b []byte, ttl uint8, dst ids.Node, payload []byte) []byte {
	b = append(b, dgVersion, ttl)
	b = append(b, dst[:]...)
	return append(b, payload...)
}

// dgProbe is larger than any QUIC datagram, so quic-go's SendDatagram
// refuses it at once with the current limit and sends nothing. Its first
// byte is not dgVersion: were it ever sent, the receiver would drop it.
var dgProbe [1 << 16]byte

// maxDatagram returns the largest QUIC datagram payload (mesh header
// included) that the connection to p takes now.
func maxDatagram(p *peer) (int, error) {
	// Probing costs a call into quic-go and an error value: do it at most
	// every dgProbeEvery per connection (the limit changes only as QUIC
	// discovers the path MTU, and the writer counts what no longer fits).
	if at := p.dgAt.Load(); at != 0 && time.Now().UnixNano()-at < int64(dgProbeEvery) {
		return int(p.dgLimit.Load()), nil
	}
	limit, err := probeDatagram(p)
	if err == nil {
		p.dgLimit.Store(int64(limit))
		p.dgAt.Store(time.Now().UnixNano())
	}
	return limit, err
}

// dgProbeEvery is how long a probed datagram limit is trusted.
const dgProbeEvery = 250 * time.Millisecond

func probeDatagram(p *peer) (int, error) {
	err := p.conn.QUIC().SendDatagram(dgProbe[:])
	var tl *quic.DatagramTooLargeError
	if errors.As(err, &tl) {
		return int(tl.MaxDatagramPayloadSize), nil
	}
	if err == nil {
		return len(dgProbe), nil // cannot happen: larger than a UDP datagram
	}
	return 0, fmt.Errorf("mesh: datagram to %s: %w", p.id.Short(), err)
}

// payloadLimit is the largest mesh payload of a QUIC datagram limit.
func payloadLimit(limit int) int { return max(limit-dgHeaderLen, 0) }

// hop looks up the first hop to dst in the published table: nil if there
// is none.
func (m *Mesh) hop(dst ids.Node) *peer {
	return m.dgTable.Load().hops[dst]
}

// hopOrErr is hop for SendDatagram and MaxDatagramPayload, with the error
// they return.
func (m *Mesh) hopOrErr(dst ids.Node) (*peer, error) {
	t := m.dgTable.Load()
	if t.closed {
		return nil, ErrClosed
	}
	p := t.hops[dst]
	if p == nil {
		return nil, fmt.Errorf("%w %x", ErrNoRoute, dst[:4])
	}
	return p, nil
}

// SendDatagram sends payload to node dst in one unreliable QUIC datagram:
// directly if dst is a peer, otherwise through the relays of the route
// routed messages take, each forwarding it as a datagram. It does not wait:
// the datagram is queued for the first hop's connection and may be lost
// anywhere on the way. payload is copied; the caller may reuse it.
//
// It returns ErrNoRoute if dst (this node included) cannot be reached now,
// a *DatagramTooLargeError (ErrDatagramTooLarge) if the payload does not
// fit the first hop (see MaxDatagramPayload), ErrBusy if the first hop's
// datagram queue is full (the datagram is dropped and counted), and
// ErrClosed after Close. It is safe for concurrent use and never goes
// through the mesh loop.
func (m *Mesh) SendDatagram(dst ids.Node, payload []byte) error {
	return m.sendDatagram(dst, payload, false, context.Background())
}

// SendDatagramWait is SendDatagram that, instead of ErrBusy, waits while
// the first hop's datagram queue is full, until ctx ends (with ctx's
// error). A source that can wait (a local socket, whose kernel buffer then
// drops the excess for free) uses it, so that an overload is not paid for
// in work done on datagrams that are then dropped.
func (m *Mesh) SendDatagramWait(ctx context.Context, dst ids.Node, payload []byte) error {
	return m.sendDatagram(dst, payload, true, ctx)
}

func (m *Mesh) sendDatagram(dst ids.Node, payload []byte, wait bool, ctx context.Context) error {
	p, err := m.hopOrErr(dst)
	if err != nil {
		return err
	}
	limit, err := maxDatagram(p)
	if err != nil {
		return err
	}
	if dgHeaderLen+len(payload) > limit {
		return &DatagramTooLargeError{Max: payloadLimit(limit)}
	}
	b := appendDatagram(make([]byte, 0, dgHeaderLen+len(payload)), maxTTL, dst, payload)
	if wait {
		select {
		case p.dgOut <- b:
			m.stats.dg.sent.Add(1)
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-p.stop:
			return ErrClosed
		case <-p.conn.Done():
			return fmt.Errorf("%w %x", ErrNoRoute, dst[:4])
		}
	}
	if !p.sendDatagram(b) {
		m.stats.dg.queueFull.Add(1)
		return ErrBusy
	}
	m.stats.dg.sent.Add(1)
	return nil
}

// MaxDatagramPayload returns the largest payload SendDatagram takes for
// dst now: the first hop's QUIC datagram limit less the mesh header. The
// limit may grow as QUIC discovers the path MTU; relays further on may
// have a smaller one (they drop what does not fit and count it).
// ErrNoRoute if dst cannot be reached now.
func (m *Mesh) MaxDatagramPayload(dst ids.Node) (int, error) {
	p, err := m.hopOrErr(dst)
	if err != nil {
		return 0, err
	}
	limit, err := maxDatagram(p)
	if err != nil {
		return 0, err
	}
	return payloadLimit(limit), nil
}

// sendDatagram queues a whole mesh datagram for p's datagram writer, or
// reports that the queue is full. It never blocks.
func (p *peer) sendDatagram(b []byte) bool {
	select {
	case p.dgOut <- b:
		return true
	default:
		return false
	}
}

// publishDatagramRoutes publishes the first hop to every reachable node
// for SendDatagram and relays. The loop calls it after any change of peers
// or routes.
func (m *Mesh) publishDatagramRoutes() {
	if m.routes == nil {
		m.routes = m.computeRoutes()
	}
	hops := make(map[ids.Node]*peer, len(m.routes))
	for dst, hop := range m.routes {
		if p := m.peers[hop]; p != nil {
			hops[dst] = p
		}
	}
	m.dgTable.Store(&dgTable{hops: hops})
	m.dgStale = false
}

// datagramReader takes p's incoming datagrams until the connection closes
// or the mesh stops: it delivers those addressed to this node and forwards
// the others.
func (m *Mesh) datagramReader(p *peer) {
	defer m.wg.Done()
	qc := p.conn.QUIC()
	for {
		b, err := qc.ReceiveDatagram(m.ctx)
		if err != nil {
			return
		}
		m.handleDatagram(p, b)
	}
}

// handleDatagram delivers or forwards one datagram received from peer
// from. b is ours: quic-go hands over a fresh copy of each datagram.
func (m *Mesh) handleDatagram(from *peer, b []byte) {
	ttl, dst, payload, err := parseDatagram(b)
	if err != nil {
		m.stats.dg.malformed.Add(1)
		return
	}
	if dst == m.self {
		m.stats.dg.received.Add(1)
		if m.cfg.DeliverDatagram != nil {
			m.cfg.DeliverDatagram(payload)
		}
		return
	}
	if ttl <= 1 {
		m.stats.dg.expired.Add(1)
		return
	}
	if !m.mayRelay(from, len(b)) {
		return
	}
	b[1] = ttl - 1
	p := m.hop(dst)
	if p == nil {
		m.stats.dg.noRoute.Add(1)
		return
	}
	limit, err := maxDatagram(p)
	if err != nil {
		m.stats.dg.noRoute.Add(1)
		return
	}
	if len(b) > limit {
		m.stats.dg.tooLarge.Add(1)
		return
	}
	if !p.sendDatagram(b) {
		m.stats.dg.queueFull.Add(1)
		return
	}
	m.stats.dg.forwarded.Add(1)
}

// datagramWriter hands p's queued datagrams to QUIC, which may block while
// its own queue is full. It stops when the connection closes or the loop
// closes p.stop; datagrams still queued are dropped.
func (m *Mesh) datagramWriter(p *peer) {
	defer m.wg.Done()
	qc := p.conn.QUIC()
	for {
		select {
		case b := <-p.dgOut:
			err := qc.SendDatagram(b)
			var tl *quic.DatagramTooLargeError
			switch {
			case err == nil:
			case errors.As(err, &tl):
				m.stats.dg.tooLarge.Add(1) // the path's limit shrank since the check
				p.dgAt.Store(0)            // probe again
			default:
				m.stats.dg.noRoute.Add(1) // the connection closed
				return
			}
		case <-p.stop:
			return
		case <-p.conn.Done():
			return
		}
	}
}
