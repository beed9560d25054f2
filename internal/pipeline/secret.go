package pipeline

import (
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"

	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/keys"
)

// Encrypted pipelines. The pipeline secret never leaves a node. From it
// (and the salt, below) Argon2id derives a 32-byte pipeline key; from that
// key HKDF derives
//   - the packet key: each packet's data is sealed with
//     XChaCha20-Poly1305 under it (random 24-byte nonce first; the
//     associated data binds pipeline and sender, so that no other member
//     can pass the sealed data off as its own),
//     and the sealed bytes are what is signed, sent, relayed and stored,
//     so nodes without the secret verify, forward and replicate packets
//     they cannot read;
//   - an Ed25519 key pair, the secret key: its public half is part of the
//     pipeline's definition and id, so a wrong secret is recognised at
//     once (SetSecret returns false), and its private half signs each
//     holder's proof of possession (SecretProof), which any node can check
//     without the secret.
//
// The salt of the Argon2id derivation:
//   - by default, the pipeline's id computed without the secret key: the
//     same secret gives unrelated keys on every pipeline and network, and a
//     dictionary attack must be run per pipeline;
//   - Salt: the application's salt, alone: pipelines created with the same
//     secret and salt share one key, whatever their names (use it to give
//     several pipelines one key, or to change a pipeline's key without
//     changing its secret);
//   - Unsalted: a fixed salt: the key depends on the secret only, the same
//     on every pipeline of every network, so one precomputed dictionary
//     serves against all of them. Use it only with a random secret of 16
//     bytes or more that several pipelines must share.

// Argon2id cost of the pipeline key: 64 MiB, one pass, four lanes.
const (
	secretTime    = 1
	secretMemory  = 64 * 1024
	secretThreads = 4
)

// Errors of encrypted pipelines.
var (
	ErrNoSecret    = errors.New("pipeline: the pipeline secret is not set on this node")
	ErrWrongSecret = errors.New("pipeline: wrong pipeline secret")
	ErrCannotRead  = errors.New("pipeline: packet does not decrypt with the pipeline secret")
)

// pipeKey is what a node holding a pipeline's secret keeps.
type pipeKey struct {
	raw    [32]byte // the Argon2id output; stored sealed at rest
	packet cipher.AEAD
	proof  ed25519.PrivateKey
}

// pipelineSalt is the Argon2id salt for a pipeline (see above); base is
// the id without the secret key.
func pipelineSalt(base ids.Pipeline, o Options) []byte {
	h := sha256.New()
	switch {
	case o.Unsalted:
		h.Write([]byte("pipes/v1 unsalted pipeline"))
	case len(o.Salt) > 0:
		h.Write([]byte("pipes/v1 pipeline salt"))
		h.Write(o.Salt)
	default:
		h.Write([]byte("pipes/v1 pipeline id salt"))
		h.Write(base[:])
	}
	return h.Sum(nil)
}

// deriveSecret runs the (slow) Argon2id derivation.
func deriveSecret(secret, salt []byte) *pipeKey {
	var raw [32]byte
	copy(raw[:], argon2.IDKey(secret, salt, secretTime, secretMemory, secretThreads, 32))
	return keyFromRaw(raw)
}

// keyFromRaw expands a stored pipeline key.
func keyFromRaw(raw [32]byte) *pipeKey {
	pk := keys.Derive(raw[:], nil, keys.PipelinePacketKey, nil, 32)
	seed := keys.Derive(raw[:], nil, keys.PipelineSecretKey, nil, ed25519.SeedSize)
	a, _ := chacha20poly1305.NewX(pk)
	return &pipeKey{raw: raw, packet: a, proof: ed25519.NewKeyFromSeed(seed)}
}

// public returns the secret key's public half.
func (k *pipeKey) public() []byte { return k.proof.Public().(ed25519.PublicKey) }

// packetAD binds a sealed packet's data to its pipeline and sender (the
// batch signature covers the rest of the packet).
func packetAD(pipe ids.Pipeline, sender ids.Node) []byte {
	ad := make([]byte, 0, 20+32+32)
	ad = append(ad, "pipes/v1 packet data"...)
	ad = append(ad, pipe[:]...)
	return append(ad, sender[:]...)
}

// SealOverhead is what encryption adds to a packet's data.
const SealOverhead = chacha20poly1305.NonceSizeX + chacha20poly1305.Overhead

// seal encrypts data for the pipeline.
func (k *pipeKey) seal(pipe ids.Pipeline, sender ids.Node, data []byte) []byte {
	out := make([]byte, chacha20poly1305.NonceSizeX, SealOverhead+len(data))
	if _, err := rand.Read(out); err != nil {
		panic(err) // crypto/rand does not fail
	}
	return k.packet.Seal(out, out, data, packetAD(pipe, sender))
}

// open decrypts a packet's data.
func (k *pipeKey) open(pipe ids.Pipeline, sender ids.Node, sealed []byte) ([]byte, error) {
	if len(sealed) < SealOverhead {
		return nil, ErrCannotRead
	}
	n := chacha20poly1305.NonceSizeX
	pt, err := k.packet.Open(nil, sealed[:n], sealed[n:], packetAD(pipe, sender))
	if err != nil {
		return nil, ErrCannotRead
	}
	return pt, nil
}

// proofMessage is what a SecretProof signs.
func proofMessage(pipe ids.Pipeline, node ids.Node) []byte {
	m := append([]byte("pipes/v1 secret proof\x00"), pipe[:]...)
	return append(m, node[:]...)
}

// proveFor signs node's proof of possession.
func (k *pipeKey) proveFor(pipe ids.Pipeline, node ids.Node) []byte {
	return ed25519.Sign(k.proof, proofMessage(pipe, node))
}

// checkProof verifies a proof against the definition's secret key.
func checkProof(d *Def, node ids.Node, sig []byte) bool {
	return len(d.SecretKey) == ed25519.PublicKeySize && len(sig) == ed25519.SignatureSize &&
		ed25519.Verify(ed25519.PublicKey(d.SecretKey), proofMessage(d.ID, node), sig)
}

// SetSecret gives this node the secret of encrypted pipeline id. It
// reports false if the secret is not the pipeline's.
func (e *Engine) SetSecret(id ids.Pipeline, secret []byte) (bool, error) {
	p, ok := e.pipeOf(id)
	if !ok {
		return false, fmt.Errorf("%w %x", ErrUnknown, id[:4])
	}
	if !p.def.Opts.Encrypted {
		return false, fmt.Errorf("pipeline: %q is not encrypted", p.def.Name)
	}
	k, ok := p.def.keyFor(e.cfg.Network, secret)
	if !ok {
		return false, nil
	}
	e.notes.setKey(p, k, true)
	return true, nil
}

// HasSecret reports whether this node holds the secret of pipeline id.
func (e *Engine) HasSecret(id ids.Pipeline) bool {
	p, ok := e.pipeOf(id)
	return ok && p.key.Load() != nil
}

// SecretHolders returns the nodes that proved they hold the secret of
// pipeline id (this node included if it does), sorted.
func (e *Engine) SecretHolders(id ids.Pipeline) []ids.Node {
	p, ok := e.pipeOf(id)
	if !ok {
		return nil
	}
	return e.notes.holdersOf(p)
}

// ReadData returns pk's data: decrypted on an encrypted pipeline
// (ErrNoSecret without the key, ErrCannotRead if it does not decrypt).
func (e *Engine) ReadData(pk *Packet) ([]byte, error) {
	p, ok := e.pipeOf(pk.Pipeline)
	if !ok {
		return nil, fmt.Errorf("%w %x", ErrUnknown, pk.Pipeline[:4])
	}
	if !p.def.Opts.Encrypted {
		return pk.Data, nil
	}
	k := p.key.Load()
	if k == nil {
		return nil, fmt.Errorf("%w (%q)", ErrNoSecret, p.def.Name)
	}
	return k.open(pk.Pipeline, pk.Sender, pk.Data)
}
