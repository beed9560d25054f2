package files

import (
	"context"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/hpke"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/pipesnet/pipes/internal/dispatch"
	"github.com/pipesnet/pipes/internal/identity"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/kinds"
	"github.com/pipesnet/pipes/internal/service"
)

// Reader keys (docs/protocol.md, "Reader keys and restricted files").
//
// Every node of an identity derives the same HPKE key pair (KEM
// ML-KEM-768+X25519) from the identity's Ed25519 seed, so a file sealed to
// the identity opens on each of its nodes, present and future, and none of
// them keeps another secret. The public half travels in a record the
// identity signs:
//
//	version (1) = 1 | identity public key (32) | KEM id (2) |
//	HPKE public key length (2) | HPKE public key | Ed25519 signature (64)
//
// signed under readKeyContext over every byte before the signature. The
// identity id is SHA-256 of the identity public key, so a record speaks
// for exactly one identity and no node can publish a key for another.
// The record is a function of the identity's key alone: replaying it is
// harmless.
const (
	readKeyVersion = 1
	readKeyDerive  = "pipes/v1 identity read key"   // HKDF info of the key pair's seed
	readKeyContext = "pipes/v1 reader key record"   // signature context of the record
	maxReadKey     = 1 + 32 + 2 + 2 + 2048 + 64     // longest record accepted
	keyBookSize    = 4096                           // identities kept in the key book
	keyBookRefresh = time.Hour                      // a stored entry's time is rewritten at most this often
	readKeyPrefix  = "k"                            // store prefix of the key book
	sealKeyInfo    = "pipes/v1 restricted file key" // HPKE info prefix of a sealed content key
)

var (
	readKEM  = hpke.MLKEM768X25519()
	readKDF  = hpke.HKDFSHA256()
	readAEAD = hpke.ChaCha20Poly1305()
)

// ErrBadReadKey: a reader-key record that does not decode or verify.
var ErrBadReadKey = errors.New("files: bad reader key record")

// ReadKey is an identity's read key: the HPKE private key its nodes open
// restricted files with, and the signed record that publishes its public
// half. It is derived from the identity key (DeriveReadKey), so the file
// service never holds the identity key itself.
type ReadKey struct {
	id     ids.Identity
	priv   hpke.PrivateKey
	record []byte
}

// DeriveReadKey derives the read key of identity key k:
// HKDF-SHA256(seed, info readKeyDerive) gives the input of the KEM's
// DeriveKeyPair, and k signs the record.
func DeriveReadKey(k *identity.KeyPair) (*ReadKey, error) {
	if k == nil || len(k.Private) != ed25519.PrivateKeySize || len(k.Public) != ed25519.PublicKeySize {
		return nil, errors.New("files: read key: not an Ed25519 key pair")
	}
	ikm, err := hkdf.Key(sha256.New, k.Private.Seed(), nil, readKeyDerive, 32)
	if err != nil {
		return nil, fmt.Errorf("files: read key: %w", err)
	}
	priv, err := readKEM.DeriveKeyPair(ikm)
	if err != nil {
		return nil, fmt.Errorf("files: read key: %w", err)
	}
	pub := priv.PublicKey().Bytes()
	b := make([]byte, 0, 1+32+4+len(pub)+ed25519.SignatureSize)
	b = append(b, readKeyVersion)
	b = append(b, k.Public...)
	b = binary.BigEndian.AppendUint16(b, readKEM.ID())
	b = binary.BigEndian.AppendUint16(b, uint16(len(pub)))
	b = append(b, pub...)
	b = append(b, identity.Sign(k, readKeyContext, b)...)
	return &ReadKey{id: ids.Identity(k.ID()), priv: priv, record: b}, nil
}

// Identity is the id of the key's identity.
func (k *ReadKey) Identity() ids.Identity { return k.id }

// readKeyRecord is a decoded, verified record.
type readKeyRecord struct {
	id  ids.Identity
	pub hpke.PublicKey
	raw []byte
}

// decodeReadKey decodes and verifies a record from the network.
func decodeReadKey(b []byte) (*readKeyRecord, error) {
	if len(b) > maxReadKey || len(b) < 1+32+4+ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrBadReadKey, len(b))
	}
	if b[0] != readKeyVersion {
		return nil, fmt.Errorf("%w: version %d", ErrBadReadKey, b[0])
	}
	idKey := ed25519.PublicKey(b[1:33])
	if kem := binary.BigEndian.Uint16(b[33:]); kem != readKEM.ID() {
		return nil, fmt.Errorf("%w: KEM %#x", ErrBadReadKey, kem)
	}
	n := int(binary.BigEndian.Uint16(b[35:]))
	if len(b) != 37+n+ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: length", ErrBadReadKey)
	}
	body, sig := b[:37+n], b[37+n:]
	if !identity.Verify(idKey, readKeyContext, body, sig) {
		return nil, fmt.Errorf("%w: %w", ErrBadReadKey, identity.ErrBadSignature)
	}
	pub, err := readKEM.NewPublicKey(b[37 : 37+n])
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadReadKey, err)
	}
	return &readKeyRecord{id: ids.Identity(sha256.Sum256(idKey)), pub: pub, raw: append([]byte(nil), b...)}, nil
}

// keyBook keeps the reader keys learnt, so that a writer can seal to an
// identity whose nodes are offline. It is bounded: past keyBookSize
// identities the one seen longest ago is dropped. Stored under "k" |
// identity id: last seen (8, Unix seconds) | record.
type keyBook struct {
	mu  sync.Mutex
	max int
	m   map[ids.Identity]*bookEntry
}

type bookEntry struct {
	pub  hpke.PublicKey
	seen time.Time
}

func bookKey(id ids.Identity) []byte { return append([]byte(readKeyPrefix), id[:]...) }

// load reads the stored entries; one that does not decode is deleted.
func (kb *keyBook) load(ns service.Namespace) error {
	var bad [][]byte
	err := ns.Scan([]byte(readKeyPrefix), func(k, v []byte) error {
		if len(k) != 33 || len(v) < 8 {
			bad = append(bad, append([]byte(nil), k...))
			return nil
		}
		r, err := decodeReadKey(v[8:])
		if err != nil || ids.Identity(k[1:]) != r.id {
			bad = append(bad, append([]byte(nil), k...))
			return nil
		}
		kb.m[r.id] = &bookEntry{pub: r.pub, seen: time.Unix(int64(binary.BigEndian.Uint64(v)), 0)}
		return nil
	})
	if err != nil {
		return fmt.Errorf("files: reading the key book: %w", err)
	}
	for _, k := range bad {
		ns.Delete(k)
	}
	for len(kb.m) > kb.max {
		kb.dropOldest(ns)
	}
	return nil
}

// put keeps record r, seen at now, and stores it when it is new or its
// stored time is older than keyBookRefresh.
func (kb *keyBook) put(ns service.Namespace, r *readKeyRecord, now time.Time) error {
	kb.mu.Lock()
	defer kb.mu.Unlock()
	e := kb.m[r.id]
	if e != nil && now.Sub(e.seen) < keyBookRefresh {
		return nil
	}
	if e == nil && len(kb.m) >= kb.max {
		kb.dropOldest(ns)
	}
	v := binary.BigEndian.AppendUint64(nil, uint64(now.Unix()))
	if err := ns.Set(bookKey(r.id), append(v, r.raw...)); err != nil {
		return fmt.Errorf("files: storing a reader key: %w", err)
	}
	kb.m[r.id] = &bookEntry{pub: r.pub, seen: now}
	return nil
}

// dropOldest drops the entry seen longest ago (kb.mu held, or not shared
// yet).
func (kb *keyBook) dropOldest(ns service.Namespace) {
	var old ids.Identity
	var at time.Time
	first := true
	for id, e := range kb.m {
		if first || e.seen.Before(at) {
			old, at, first = id, e.seen, false
		}
	}
	if !first {
		delete(kb.m, old)
		ns.Delete(bookKey(old))
	}
}

func (kb *keyBook) get(id ids.Identity) (hpke.PublicKey, bool) {
	kb.mu.Lock()
	defer kb.mu.Unlock()
	if e := kb.m[id]; e != nil {
		return e.pub, true
	}
	return nil, false
}

// readerKey returns the public read key of identity id: this node's own,
// or one of the key book; ErrNotFound if none is known.
func (s *Service) readerKey(id ids.Identity) (hpke.PublicKey, error) {
	if k := s.readKey(); k != nil && k.id == id {
		return k.priv.PublicKey(), nil
	}
	if pub, ok := s.acc.book.get(id); ok {
		return pub, nil
	}
	return nil, fmt.Errorf("%w: no reader key known for identity %x", ErrNotFound, id[:4])
}

// KnowsReader reports whether a reader key of identity id is known here
// (a file can be added for that reader).
func (s *Service) KnowsReader(id ids.Identity) bool {
	_, err := s.readerKey(id)
	return err == nil
}

func (s *Service) validateReadKey(payload []byte, _ ids.Node) (any, error) {
	return decodeReadKey(payload)
}

func (s *Service) handleReadKey(m dispatch.Msg) error {
	r, ok := m.Body.(*readKeyRecord)
	if !ok { // routed: not validated yet
		var err error
		if r, err = decodeReadKey(m.Payload); err != nil {
			return err
		}
	}
	if !s.acc.ready.Load() {
		return ErrClosed // not started: the key book is not loaded
	}
	if k := s.readKey(); k != nil && k.id == r.id {
		return nil
	}
	return s.acc.book.put(s.ns, r, time.Now())
}

// registerReadKeys registers the reader keys' kind on group g.
func (s *Service) registerReadKeys(g *dispatch.Group) error {
	return g.Handle(kinds.ReadKeys, dispatch.Route{Paths: kinds.Broadcast | kinds.Routed,
		Validate: s.validateReadKey, Handle: s.handleReadKey})
}

// startAccess loads the key book and, when this node has its identity's
// read key, starts publishing it: a goroutine of the service's that
// broadcasts the record at once and every ReadKeyEvery, and sends it to
// each node that comes online. It ends with the service.
func (s *Service) startAccess(h service.Host) error {
	if err := s.acc.book.load(s.ns); err != nil {
		return err
	}
	k := s.cfg.ReadKey
	if k != nil && ids.Identity(h.Keys().Cert.IdentityID()) != k.id {
		s.log.Warn("the read key given is not of the node's identity: not used")
		k = nil
	}
	s.acc.key = k
	s.acc.ready.Store(true)
	if k == nil {
		return nil
	}
	online := make(chan ids.Node, 64)
	s.acc.stopP = h.Presence(func(e service.PresenceEvent) {
		if e.Online {
			select {
			case online <- e.Node:
			default: // the periodic broadcast reaches it
			}
		}
	})
	s.wg.Add(1)
	go func() { defer s.wg.Done(); s.publishReadKey(k.record, online) }()
	return nil
}

// readKey is the node's read key: nil if it has none (or before Start).
func (s *Service) readKey() *ReadKey {
	if !s.acc.ready.Load() {
		return nil
	}
	return s.acc.key
}

// stopAccess stops the presence subscription of startAccess.
func (s *Service) stopAccess() {
	if s.acc.stopP != nil {
		s.acc.stopP()
	}
}

func (s *Service) publishReadKey(rec []byte, online <-chan ids.Node) {
	every := time.NewTicker(s.cfg.ReadKeyEvery)
	defer every.Stop()
	send := func() {
		if err := s.host.Broadcast(s.ctx, kinds.ReadKeys, rec); err != nil {
			s.log.Debug("publishing the reader key", "err", err)
		}
	}
	send()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-every.C:
			send()
		case n := <-online:
			ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
			err := s.host.Send(ctx, n, kinds.ReadKeys, rec)
			cancel()
			if err != nil {
				s.log.Debug("sending the reader key", "to", n.Short(), "err", err)
			}
		}
	}
}
