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
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/pipesnet/pipes/internal/identity"
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
	src    [32]byte
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

// realtime is the engine's datagram state.
type realtime struct {
	in    *worker.Pool[[]byte] // received datagrams, for the worker (nil on a read-only engine)
	mu    sync.Mutex
	send  map[[32]byte]*rtSend // by receiver
	recv  map[[8]byte]*rtRecv  // by key id
	early []rtEarly
}

func newRealtime() *realtime {
	return &realtime{send: map[[32]byte]*rtSend{}, recv: map[[8]byte]*rtRecv{}}
}

// session returns the sending session to dst, opening (or renewing) it:
// the key goes to dst sealed, before any datagram of the session.
func (e *Engine) rtSession(ctx context.Context, dst [32]byte) (*rtSend, uint64, error) {
	rt := e.rt
	rt.mu.Lock()
	s := rt.send[dst]
	if s != nil && s.counter < rtSessionMessages && time.Since(s.started) < rtSessionAge {
		s.counter++
		c := s.counter
		if !s.sending && time.Since(s.resent) >= rtResend {
			s.sending = true
			c := c
			e.spawn(func() {
				ctx, cancel := context.WithTimeout(e.ctx, rtResend)
				defer cancel()
				err := e.sendRealtimeKey(ctx, dst, s, c)
				rt.mu.Lock()
				s.sending = false
				if err == nil {
					s.resent = time.Now()
				}
				rt.mu.Unlock()
			})
		}
		rt.mu.Unlock()
		return s, c, nil
	}
	rt.mu.Unlock()
	s = &rtSend{started: time.Now(), resent: time.Now()}
	rand.Read(s.key[:])
	s.id = rtKeyID(e.self, s.key)
	s.aead, _ = chacha20poly1305.New(s.key[:])
	kctx, cancel := context.WithTimeout(ctx, rtKeyWait)
	err := e.sendRealtimeKey(kctx, dst, s, 0)
	cancel()
	if err != nil {
		return nil, 0, err
	}
	rt.mu.Lock()
	if cur := rt.send[dst]; cur != nil && cur.started.After(s.started) {
		s = cur // another Put renewed it meanwhile
	} else {
		rt.send[dst] = s
	}
	s.counter++
	c := s.counter
	rt.mu.Unlock()
	return s, c, nil
}

// rtKeyID names a session: the first 8 bytes of SHA-256(sender || key),
// so that no other node can claim a session's id with a key of its own.
func rtKeyID(sender, key [32]byte) [8]byte {
	h := sha256.Sum256(append(sender[:], key[:]...))
	return [8]byte(h[:8])
}

// rtKeyMessage is what a RealtimeKey's signature covers.
func rtKeyMessage(id [8]byte, key []byte, receiver [32]byte, timeMs int64, counter uint64) []byte {
	msg := append(append(append([]byte{}, id[:]...), key...), receiver[:]...)
	msg = binary.BigEndian.AppendUint64(msg, uint64(timeMs))
	return binary.BigEndian.AppendUint64(msg, counter)
}

// sendRealtimeKey sends session s's key to dst, signed and sealed, with
// the time and the last counter used (the receiver refuses older copies
// and counters below it).
func (e *Engine) sendRealtimeKey(ctx context.Context, dst [32]byte, s *rtSend, counter uint64) error {
	now := time.Now().UnixMilli()
	msg := rtKeyMessage(s.id, s.key[:], dst, now, counter)
	body, err := marshal(&pb.SealedBody{Body: &pb.SealedBody_RealtimeKey{RealtimeKey: &pb.RealtimeKey{
		KeyId: s.id[:], Key: s.key[:], NodeCert: e.cfg.Cert.Signed, TimeMs: now, Counter: counter,
		Signature: identity.Sign(e.cfg.Key, rtKeyContext, msg)}}})
	if err != nil {
		return err
	}
	return e.sendSealed(ctx, dst, body)
}

// PutDatagram puts data on realtime pipeline id as Put does, without
// computing the packet id (for UDP port maps, which do not use it).
func (e *Engine) PutDatagram(ctx context.Context, id [32]byte, data []byte) error {
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
	_, err := e.putRealtime(ctx, p, data, 0, [32]byte{}, false)
	return err
}

// putRealtime sends one realtime packet as a datagram to dest, or to
// every online node (zero dest; the other node of a point-to-point
// pipeline). It waits while a link's datagram queue is full, until ctx
// ends. It returns the packet id if wantID.
func (e *Engine) putRealtime(ctx context.Context, p *pipe, data []byte, typ int64, dest [32]byte, wantID bool) ([32]byte, error) {
	dests := [][32]byte{dest}
	if p.def.IsPointToPoint() {
		dests[0] = p.def.Opts.ToNode
	} else if dest == ([32]byte{}) {
		dests = e.cfg.Host.Online()
	}
	hlc := e.clock.now()
	seq := p.seq.Add(1)
	var id [32]byte
	if wantID {
		id = packetID(p.def.ID, e.self, seq, hlc, typ, [32]byte{}, false, data)
	}
	inner := make([]byte, 0, rtInner+len(data))
	inner = append(inner, p.def.ID[:8]...)
	inner = binary.BigEndian.AppendUint64(inner, seq)
	inner = binary.BigEndian.AppendUint64(inner, uint64(hlc))
	inner = binary.AppendVarint(inner, typ)
	inner = append(inner, data...)
	var firstErr error
	failed := 0
	for _, dst := range dests {
		if dst == e.self {
			continue
		}
		s, counter, err := e.rtSession(ctx, dst)
		if err != nil {
			failed++
			firstErr = cmpErr(firstErr, err)
			continue
		}
		out := make([]byte, rtHeader, rtHeader+len(inner)+chacha20poly1305.Overhead)
		copy(out, s.id[:])
		binary.BigEndian.PutUint64(out[8:], counter)
		out = s.aead.Seal(out, rtNonce(counter), inner, s.id[:])
		err = e.cfg.Host.SendDatagramWait(ctx, dst, out)
		var tooLarge *mesh.DatagramTooLargeError
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return [32]byte{}, ctx.Err()
		case errors.As(err, &tooLarge):
			over := rtOverhead
			if p.def.Opts.Encrypted {
				over += SealOverhead
			}
			// The mesh's limit is for a datagram; the caller's is for
			// the packet data it carries.
			return [32]byte{}, &mesh.DatagramTooLargeError{Max: max(tooLarge.Max-over, 0)}
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

// acceptRealtimeKey records a session key sent by src.
func (e *Engine) acceptRealtimeKey(src [32]byte, k *pb.RealtimeKey) error {
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
	cert, err := e.certs.Parse(k.NodeCert)
	if err != nil || cert.NetworkID != e.cfg.Network || cert.NodeID() != src {
		return errors.New("pipeline: realtime key from an unknown or other sender")
	}
	if !identity.Verify(cert.NodeKey, rtKeyContext, rtKeyMessage(id, k.Key, e.self, k.TimeMs, k.Counter), k.Signature) {
		return errors.New("pipeline: realtime key signature does not verify")
	}
	a, _ := chacha20poly1305.New(k.Key)
	rt := e.rt
	rt.mu.Lock()
	if rt.recv[id] != nil {
		rt.mu.Unlock()
		return nil // a resend of a session this node has
	}
	if len(rt.recv) >= rtMaxSessions {
		var oldest [8]byte
		var t time.Time
		for kid, s := range rt.recv {
			if t.IsZero() || s.added.Before(t) {
				oldest, t = kid, s.added
			}
		}
		delete(rt.recv, oldest)
	}
	// Counters up to the one the sender had used are not accepted: a
	// replayed key cannot reopen a window for recorded datagrams.
	r := &rtRecv{src: src, aead: a, added: time.Now(), max: k.Counter}
	for i := range r.window {
		r.window[i] = ^uint64(0)
	}
	rt.recv[id] = r
	var early [][]byte
	kept := rt.early[:0]
	for _, d := range rt.early {
		if d.id == id {
			early = append(early, d.raw)
		} else {
			kept = append(kept, d)
		}
	}
	rt.early = kept
	rt.mu.Unlock()
	for _, raw := range early {
		e.openDatagram(raw)
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

// openDatagram checks, opens and delivers one datagram.
func (e *Engine) openDatagram(raw []byte) {
	if len(raw) < rtHeader+chacha20poly1305.Overhead {
		e.stats.rejected.Add(1)
		return
	}
	id := [8]byte(raw[:8])
	counter := binary.BigEndian.Uint64(raw[8:16])
	rt := e.rt
	rt.mu.Lock()
	s := rt.recv[id]
	if s == nil {
		now := time.Now()
		if len(rt.early) > 0 && now.Sub(rt.early[0].at) > rtEarlyAge {
			rt.early = slices.DeleteFunc(rt.early, func(d rtEarly) bool { return now.Sub(d.at) > rtEarlyAge })
		}
		if len(rt.early) < rtMaxEarly {
			rt.early = append(rt.early, rtEarly{id: id, raw: raw, at: now})
		} else {
			e.stats.rejected.Add(1)
		}
		rt.mu.Unlock()
		return
	}
	rt.mu.Unlock()
	inner, err := s.aead.Open(nil, rtNonce(counter), raw[rtHeader:], id[:])
	if err != nil || len(inner) < 25 {
		e.stats.rejected.Add(1)
		return
	}
	rt.mu.Lock()
	fresh := s.accept(counter)
	rt.mu.Unlock()
	if !fresh {
		e.stats.rejected.Add(1)
		return
	}
	seq := binary.BigEndian.Uint64(inner[8:16])
	hlc := int64(binary.BigEndian.Uint64(inner[16:24]))
	typ, n := binary.Varint(inner[24:])
	if n <= 0 {
		e.stats.rejected.Add(1)
		return
	}
	data := inner[24+n:]
	// The packet id (a hash of the whole packet) is computed only if
	// asked for (Packet.ComputeID): realtime traffic rarely needs it.
	pk := &Packet{Sender: s.src, Seq: seq, HLC: hlc, Type: typ, Data: data}
	e.mu.Lock()
	p := e.mu.realtime[[8]byte(inner[:8])]
	if p == nil || p.removed || p.def.IsPointToPoint() && p.def.Opts.ToNode != s.src {
		e.mu.Unlock()
		e.stats.rejected.Add(1)
		return
	}
	p.stats.received.Add(1)
	pk.Pipeline = p.def.ID
	e.deliverLocked(p, pk)
	e.mu.Unlock()
}

// ComputeID returns the packet's id, computing it if it was left out (a
// realtime packet's).
func (p *Packet) ComputeID() [32]byte {
	if p.ID != ([32]byte{}) {
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
