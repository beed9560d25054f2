package pipeline

import (
	"context"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/pipesnet/pipes/internal/identity"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/mesh"
	"github.com/pipesnet/pipes/internal/wire/pb"
	"github.com/pipesnet/pipes/internal/worker"
)

// Realtime pipelines carry each packet as one datagram: no retransmission,
// no ordering, no head-of-line blocking; a datagram lost is lost. They are
// live only.
//
// Datagrams are sealed end to end between sender and receiver, so relays
// (which forward them as datagrams) see only ciphertext. A sender opens a
// session to each receiver: a random 32-byte key and 8-byte key id, sent
// once inside a Sealed message (RealtimeKey, signed by the sender's node
// key). A datagram is
//
//	key id (8) | counter (8) | ChaCha20-Poly1305(key, nonce = counter,
//	    ad = key id, pipeline id prefix (8) | seq (8) | hlc (8) | type (varint) | data)
//
// seq is the packet's sequence number on the pipeline (the receiver
// computes the same packet id as the sender); counter numbers the
// session's datagrams, across pipelines.
//
// The receiver drops counters it has seen (a 1024-wide sliding window),
// and keeps datagrams that arrive before their session's key for a moment.
// Sessions are renewed after rtSessionMessages datagrams or rtSessionAge.

const (
	rtHeader          = 8 + 8
	rtInner           = 8 + 8 + 8 + binary.MaxVarintLen64
	rtSessionMessages = 1 << 32
	rtSessionAge      = 30 * time.Minute
	rtWindow          = 1024
	rtMaxSessions     = 4096
	rtMaxEarly        = 256 // datagrams kept for sessions whose key has not arrived
	rtKeyContext      = "pipes/v1 realtime key"
	rtQueue           = 8192            // received datagrams waiting for the worker
	rtKeyWait         = 5 * time.Second // a Put waits at most this for its session's key to leave
	rtKeyAge          = time.Minute     // a RealtimeKey copy older (or newer) than this is refused
)

// rtOverhead is what a realtime packet adds to its data in a datagram.
const rtOverhead = rtHeader + rtInner + chacha20poly1305.Overhead

type rtSend struct {
	id      [8]byte
	key     [32]byte
	aead    cipher.AEAD
	counter uint64
	started time.Time
	resent  time.Time // the key was last sent then
	sending bool      // a resend is under way
}

type rtRecv struct {
	src    ids.Node
	aead   cipher.AEAD
	max    uint64
	window [rtWindow / 64]uint64
	added  time.Time
}

type rtEarly struct {
	id  [8]byte
	raw []byte
	at  time.Time
}

// rtResend: a session's key is sent again this often while it is used,
// so that a receiver that restarted (and lost its sessions) recovers.
const rtResend = 3 * time.Second

// rtEarlyAge: datagrams older than this that still wait for their key are
// dropped.
const rtEarlyAge = 2 * time.Second

// realtime is the engine's realtime part: the sending and receiving
// datagram sessions, the datagrams that wait for their session's key, and
// the realtime pipelines by id prefix (datagrams name them so), all under
// its own lock. It owns one goroutine, the datagram worker (in), which
// opens and delivers what DeliverDatagram queues, and starts, through its
// env, the goroutines that resend a session's key.
//
// Lock order: Engine.mu, then realtime.mu, never the other way. The
// part's lock is a leaf: the part calls its env only without it; the
// engine calls addPipe and dropPipe with its own lock held.
type realtime struct {
	in       *worker.Pool[[]byte] // received datagrams, for the worker (nil on a read-only engine)
	self     ids.Node
	network  ids.Network
	key      *identity.KeyPair // signs the session keys sent
	cert     *identity.Cert    // travels with them
	certs    *identity.CertCache
	ctx      context.Context // the engine's: ends on Close
	env      rtEnv
	rejected *atomic.Uint64

	mu struct {
		sync.Mutex
		send  map[ids.Node]*rtSend // by receiver
		recv  map[[8]byte]*rtRecv  // by key id
		early []rtEarly
		pipes map[[8]byte]*pipe // realtime pipelines by id prefix
	}
}

// rtEnv is what the realtime part needs from the engine. The part calls
// it only without its own lock.
type rtEnv interface {
	// sendSealed seals body end to end for dst and routes it there.
	sendSealed(ctx context.Context, dst ids.Node, body []byte) error
	// spawn runs f on a goroutine of the engine unless it is closed.
	spawn(f func()) bool
	// deliverDatagram hands a realtime packet of p to p's subscribers; it
	// reports false if p was removed.
	deliverDatagram(p *pipe, pk *Packet) bool
}

func newRealtime(e *Engine) *realtime {
	rt := &realtime{self: e.self, network: e.cfg.Network, key: e.cfg.Key, cert: e.cfg.Cert, certs: e.certs,
		ctx: e.ctx, env: e, rejected: &e.stats.rejected}
	return rt.init()
}

// init makes rt's maps.
func (rt *realtime) init() *realtime {
	rt.mu.send = map[ids.Node]*rtSend{}
	rt.mu.recv = map[[8]byte]*rtRecv{}
	rt.mu.pipes = map[[8]byte]*pipe{}
	return rt
}

// addPipe records realtime pipeline p (under the engine's lock).
func (rt *realtime) addPipe(p *pipe) {
	rt.mu.Lock()
	rt.mu.pipes[[8]byte(p.def.ID[:8])] = p
	rt.mu.Unlock()
}

// dropPipe forgets p if it is recorded (under the engine's lock).
func (rt *realtime) dropPipe(p *pipe) {
	rt.mu.Lock()
	if rt.mu.pipes[[8]byte(p.def.ID[:8])] == p {
		delete(rt.mu.pipes, [8]byte(p.def.ID[:8]))
	}
	rt.mu.Unlock()
}

// deliverDatagram hands a realtime packet of p to live delivery (rtEnv).
func (e *Engine) deliverDatagram(p *pipe, pk *Packet) bool { return e.live.deliverDatagram(p, pk) }

// session returns the sending session to dst, opening (or renewing) it:
// the key goes to dst sealed, before any datagram of the session.
func (rt *realtime) session(ctx context.Context, dst ids.Node) (*rtSend, uint64, error) {
	rt.mu.Lock()
	s := rt.mu.send[dst]
	if s != nil && s.counter < rtSessionMessages && time.Since(s.started) < rtSessionAge {
		s.counter++
		c := s.counter
		resend := !s.sending && time.Since(s.resent) >= rtResend
		if resend {
			s.sending = true
		}
		rt.mu.Unlock()
		if resend {
			rt.env.spawn(func() {
				ctx, cancel := context.WithTimeout(rt.ctx, rtResend)
				defer cancel()
				err := rt.sendKey(ctx, dst, s, c)
				rt.mu.Lock()
				s.sending = false
				if err == nil {
					s.resent = time.Now()
				}
				rt.mu.Unlock()
			})
		}
		return s, c, nil
	}
	rt.mu.Unlock()
	s = &rtSend{started: time.Now(), resent: time.Now()}
	rand.Read(s.key[:])
	s.id = rtKeyID(rt.self, s.key)
	s.aead, _ = chacha20poly1305.New(s.key[:])
	kctx, cancel := context.WithTimeout(ctx, rtKeyWait)
	err := rt.sendKey(kctx, dst, s, 0)
	cancel()
	if err != nil {
		return nil, 0, err
	}
	rt.mu.Lock()
	if cur := rt.mu.send[dst]; cur != nil && cur.started.After(s.started) {
		s = cur // another Put renewed it meanwhile
	} else {
		rt.mu.send[dst] = s
	}
	s.counter++
	c := s.counter
	rt.mu.Unlock()
	return s, c, nil
}

// rtKeyID names a session: the first 8 bytes of SHA-256(sender || key),
// so that no other node can claim a session's id with a key of its own.
func rtKeyID(sender ids.Node, key [32]byte) [8]byte {
	h := sha256.Sum256(append(sender[:], key[:]...))
	return [8]byte(h[:8])
}

// rtKeyMessage is what a RealtimeKey's signature covers.
func rtKeyMessage(id [8]byte, key []byte, receiver ids.Node, timeMs int64, counter uint64) []byte {
	msg := append(append(append([]byte{}, id[:]...), key...), receiver[:]...)
	msg = binary.BigEndian.AppendUint64(msg, uint64(timeMs))
	return binary.BigEndian.AppendUint64(msg, counter)
}

// sendKey sends session s's key to dst, signed and sealed, with the time
// and the last counter used (the receiver refuses older copies and
// counters below it).
func (rt *realtime) sendKey(ctx context.Context, dst ids.Node, s *rtSend, counter uint64) error {
	now := time.Now().UnixMilli()
	msg := rtKeyMessage(s.id, s.key[:], dst, now, counter)
	body, err := marshal(&pb.SealedBody{Body: &pb.SealedBody_RealtimeKey{RealtimeKey: &pb.RealtimeKey{
		KeyId: s.id[:], Key: s.key[:], NodeCert: rt.cert.Signed, TimeMs: now, Counter: counter,
		Signature: identity.Sign(rt.key, rtKeyContext, msg)}}})
	if err != nil {
		return err
	}
	return rt.env.sendSealed(ctx, dst, body)
}

// PutDatagram puts data on realtime pipeline id as Put does, without
// computing the packet id (for UDP port maps, which do not use it).
func (e *Engine) PutDatagram(ctx context.Context, id ids.Pipeline, data []byte) error {
	p, ok := e.pipeOf(id)
	if !ok {
		return fmt.Errorf("%w %x", ErrUnknown, id[:4])
	}
	if !p.def.Opts.Realtime {
		return errors.New("pipeline: not a realtime pipeline")
	}
	if len(data) > MaxPacketSize {
		return ErrTooLarge
	}
	if p.def.Opts.Encrypted {
		k := p.key.Load()
		if k == nil {
			return fmt.Errorf("%w (%q)", ErrNoSecret, p.def.Name)
		}
		data = k.seal(id, e.self, data)
	}
	_, err := e.putRealtime(ctx, p, data, 0, ids.Node{}, false)
	return err
}

// putRealtime sends one realtime packet as a datagram to dest, or to
// every online node (zero dest; the other node of a point-to-point
// pipeline). It waits while a link's datagram queue is full, until ctx
// ends. It returns the packet id if wantID.
func (e *Engine) putRealtime(ctx context.Context, p *pipe, data []byte, typ int64, dest ids.Node, wantID bool) (ids.Packet, error) {
	dests := []ids.Node{dest}
	if p.def.IsPointToPoint() {
		dests[0] = p.def.Opts.ToNode
	} else if dest.IsZero() {
		dests = e.cfg.Host.Online()
	}
	hlc := e.clock.now()
	seq := p.seq.Add(1)
	var id ids.Packet
	if wantID {
		id = packetID(p.def.ID, e.self, seq, hlc, typ, ids.Node{}, false, data)
	}
	inner := rtPlain(p.def.ID, seq, hlc, typ, data)
	var firstErr error
	failed := 0
	for _, dst := range dests {
		if dst == e.self {
			continue
		}
		s, counter, err := e.rt.session(ctx, dst)
		if err != nil {
			failed++
			firstErr = cmpErr(firstErr, err)
			continue
		}
		err = e.cfg.Host.SendDatagramWait(ctx, dst, s.seal(counter, inner))
		var tooLarge *mesh.DatagramTooLargeError
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return ids.Packet{}, ctx.Err()
		case errors.As(err, &tooLarge):
			over := rtOverhead
			if p.def.Opts.Encrypted {
				over += SealOverhead
			}
			// The mesh's limit is for a datagram; the caller's is for
			// the packet data it carries.
			return ids.Packet{}, &mesh.DatagramTooLargeError{Max: max(tooLarge.Max-over, 0)}
		default:
			failed++
			firstErr = cmpErr(firstErr, err)
		}
	}
	e.stats.sent.Add(1)
	if p.def.IsPointToPoint() || failed == len(dests) {
		return id, firstErr
	}
	// Broadcast: sent to the nodes that could be reached; the others
	// (going offline, key not announced yet) are counted.
	e.stats.dropped.Add(uint64(failed))
	p.stats.dropped.Add(uint64(failed))
	return id, nil
}

// rtPlain is what a datagram of pipeline pipe carries, before sealing.
func rtPlain(pipe ids.Pipeline, seq uint64, hlc, typ int64, data []byte) []byte {
	inner := make([]byte, 0, rtInner+len(data))
	inner = append(inner, pipe[:8]...)
	inner = binary.BigEndian.AppendUint64(inner, seq)
	inner = binary.BigEndian.AppendUint64(inner, uint64(hlc))
	inner = binary.AppendVarint(inner, typ)
	return append(inner, data...)
}

// seal makes the datagram of session s that carries inner as its
// counter'th.
func (s *rtSend) seal(counter uint64, inner []byte) []byte {
	out := make([]byte, rtHeader, rtHeader+len(inner)+chacha20poly1305.Overhead)
	copy(out, s.id[:])
	binary.BigEndian.PutUint64(out[8:], counter)
	return s.aead.Seal(out, rtNonce(counter), inner, s.id[:])
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

func rtNonce(counter uint64) []byte {
	var n [chacha20poly1305.NonceSize]byte
	binary.BigEndian.PutUint64(n[4:], counter)
	return n[:]
}

// acceptKey records a session key sent by src.
func (rt *realtime) acceptKey(src ids.Node, k *pb.RealtimeKey) error {
	if k == nil || len(k.KeyId) != 8 || len(k.Key) != 32 {
		return errors.New("pipeline: malformed realtime key")
	}
	id := [8]byte(k.KeyId)
	if rtKeyID(src, [32]byte(k.Key)) != id {
		return errors.New("pipeline: realtime key id does not match its sender and key")
	}
	if age := time.Since(time.UnixMilli(k.TimeMs)); age > rtKeyAge || age < -rtKeyAge {
		return errors.New("pipeline: realtime key too old (a replay?) or from the future")
	}
	cert, err := rt.certs.Parse(k.NodeCert)
	if err != nil || ids.Network(cert.NetworkID) != rt.network || ids.Node(cert.NodeID()) != src {
		return errors.New("pipeline: realtime key from an unknown or other sender")
	}
	if !identity.Verify(cert.NodeKey, rtKeyContext, rtKeyMessage(id, k.Key, rt.self, k.TimeMs, k.Counter), k.Signature) {
		return errors.New("pipeline: realtime key signature does not verify")
	}
	a, _ := chacha20poly1305.New(k.Key)
	rt.mu.Lock()
	if rt.mu.recv[id] != nil {
		rt.mu.Unlock()
		return nil // a resend of a session this node has
	}
	if len(rt.mu.recv) >= rtMaxSessions {
		var oldest [8]byte
		var t time.Time
		for kid, s := range rt.mu.recv {
			if t.IsZero() || s.added.Before(t) {
				oldest, t = kid, s.added
			}
		}
		delete(rt.mu.recv, oldest)
	}
	// Counters up to the one the sender had used are not accepted: a
	// replayed key cannot reopen a window for recorded datagrams.
	r := &rtRecv{src: src, aead: a, added: time.Now(), max: k.Counter}
	for i := range r.window {
		r.window[i] = ^uint64(0)
	}
	rt.mu.recv[id] = r
	var early [][]byte
	kept := rt.mu.early[:0]
	for _, d := range rt.mu.early {
		if d.id == id {
			early = append(early, d.raw)
		} else {
			kept = append(kept, d)
		}
	}
	rt.mu.early = kept
	rt.mu.Unlock()
	for _, raw := range early {
		rt.openDatagram(raw)
	}
	return nil
}

// DeliverDatagram takes a datagram addressed to this node (from the mesh,
// on a peer's datagram reader). It does not block: the datagram is queued
// for the engine's realtime worker, so that the reader drains QUIC's
// small datagram queue at once (QUIC drops silently what overflows it);
// a datagram the full queue refuses is dropped and counted.
func (e *Engine) DeliverDatagram(raw []byte) {
	if e.rt.in == nil || !e.rt.in.TryPut(raw) {
		e.stats.dropped.Add(1)
	}
}

// openDatagram checks, opens and delivers one datagram (on the datagram
// worker).
func (rt *realtime) openDatagram(raw []byte) {
	if len(raw) < rtHeader+chacha20poly1305.Overhead {
		rt.rejected.Add(1)
		return
	}
	id := [8]byte(raw[:8])
	counter := binary.BigEndian.Uint64(raw[8:16])
	rt.mu.Lock()
	s := rt.mu.recv[id]
	if s == nil {
		now := time.Now()
		if len(rt.mu.early) > 0 && now.Sub(rt.mu.early[0].at) > rtEarlyAge {
			rt.mu.early = slices.DeleteFunc(rt.mu.early, func(d rtEarly) bool { return now.Sub(d.at) > rtEarlyAge })
		}
		if len(rt.mu.early) < rtMaxEarly {
			rt.mu.early = append(rt.mu.early, rtEarly{id: id, raw: raw, at: now})
		} else {
			rt.rejected.Add(1)
		}
		rt.mu.Unlock()
		return
	}
	rt.mu.Unlock()
	inner, err := s.aead.Open(nil, rtNonce(counter), raw[rtHeader:], id[:])
	if err != nil || len(inner) < 25 {
		rt.rejected.Add(1)
		return
	}
	rt.mu.Lock()
	fresh := s.accept(counter)
	p := rt.mu.pipes[[8]byte(inner[:8])]
	rt.mu.Unlock()
	if !fresh {
		rt.rejected.Add(1)
		return
	}
	seq := binary.BigEndian.Uint64(inner[8:16])
	hlc := int64(binary.BigEndian.Uint64(inner[16:24]))
	typ, n := binary.Varint(inner[24:])
	if n <= 0 {
		rt.rejected.Add(1)
		return
	}
	data := inner[24+n:]
	// The packet id (a hash of the whole packet) is computed only if
	// asked for (Packet.ComputeID): realtime traffic rarely needs it.
	pk := &Packet{Sender: s.src, Seq: seq, HLC: hlc, Type: typ, Data: data}
	if p == nil || p.def.IsPointToPoint() && p.def.Opts.ToNode != s.src || !rt.env.deliverDatagram(p, pk) {
		rt.rejected.Add(1)
	}
}

// ComputeID returns the packet's id, computing it if it was left out (a
// realtime packet's).
func (p *Packet) ComputeID() ids.Packet {
	if p.ID != (ids.Packet{}) {
		return p.ID
	}
	return packetID(p.Pipeline, p.Sender, p.Seq, p.HLC, p.Type, p.Destination, p.File, p.Data)
}

// accept reports whether counter is new, and records it.
func (s *rtRecv) accept(c uint64) bool {
	switch {
	case c > s.max:
		shift := c - s.max
		if shift >= rtWindow {
			s.window = [rtWindow / 64]uint64{}
		} else {
			for range shift { // shift the bitmap left by one, shift times
				carry := uint64(0)
				for i := range s.window {
					next := s.window[i] >> 63
					s.window[i] = s.window[i]<<1 | carry
					carry = next
				}
			}
		}
		s.max = c
		s.window[0] |= 1
		return true
	case s.max-c >= rtWindow:
		return false
	default:
		bit := s.max - c
		w, b := bit/64, bit%64
		if s.window[w]&(1<<b) != 0 {
			return false
		}
		s.window[w] |= 1 << b
		return true
	}
}
