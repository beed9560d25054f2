// Package identity holds Ed25519 keys, the ids derived from them, signatures
// with domain separation, and node certificates.
//
// An identity is a long-term key with a name; a node is a device key that
// the identity certifies for one network and location. Ids are SHA-256 of
// public keys. Every signature covers a context string, a zero byte and the
// body, so a signature made for one purpose is never valid for another.
//
// # Key files
//
// SaveKey and LoadKey keep a private key in a text file of two lines:
//
//	PIPES ED25519 PRIVATE KEY v1
//	<the 32-byte Ed25519 seed in standard, padded base64 (44 characters)>
//
// each ended by a newline. The file has mode 0600; LoadKey refuses a file
// that its group or others may read.
package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/pipesnet/pipes/internal/wire/pb"
)

// KeyPair is an Ed25519 key pair.
type KeyPair struct {
	Public  ed25519.PublicKey
	Private ed25519.PrivateKey
}

// Generate makes a new key pair from crypto/rand.
func Generate() (*KeyPair, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("identity: generate key: %w", err)
	}
	return &KeyPair{Public: pub, Private: priv}, nil
}

// FromSeed rebuilds a key pair from its 32-byte seed.
func FromSeed(seed []byte) (*KeyPair, error) {
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("identity: seed of %d bytes, want %d", len(seed), ed25519.SeedSize)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	return &KeyPair{Public: priv.Public().(ed25519.PublicKey), Private: priv}, nil
}

// ID returns SHA-256 of the public key.
func (k *KeyPair) ID() [32]byte { return sha256.Sum256(k.Public) }

// check reports whether k can sign: both keys of the right length.
func (k *KeyPair) check() error {
	if k == nil || len(k.Public) != ed25519.PublicKeySize || len(k.Private) != ed25519.PrivateKeySize {
		return errors.New("identity: not a valid Ed25519 key pair")
	}
	return nil
}

// ErrBadSignature is returned (or wrapped) when a signature does not verify.
var ErrBadSignature = errors.New("identity: signature does not verify")

func signed(context string, body []byte) []byte {
	msg := make([]byte, 0, len(context)+1+len(body))
	msg = append(msg, context...)
	msg = append(msg, 0)
	return append(msg, body...)
}

// Sign signs context || 0x00 || body with k's private key. Like
// ed25519.Sign, it panics if k is nil or its private key is not 64 bytes
// (a programming error: keys come from Generate, FromSeed or LoadKey);
// SignProto returns an error instead.
func Sign(k *KeyPair, context string, body []byte) []byte {
	return ed25519.Sign(k.Private, signed(context, body))
}

// Verify checks a signature made by Sign. It returns false for keys or
// signatures of the wrong length and never panics.
func Verify(pub ed25519.PublicKey, context string, body, sig []byte) bool {
	if len(pub) != ed25519.PublicKeySize || len(sig) != ed25519.SignatureSize {
		return false
	}
	return ed25519.Verify(pub, signed(context, body), sig)
}

var deterministic = proto.MarshalOptions{Deterministic: true}

// SignProto encodes m deterministically and signs the encoding under
// context.
func SignProto(k *KeyPair, context string, m proto.Message) (*pb.Signed, error) {
	if err := k.check(); err != nil {
		return nil, err
	}
	body, err := deterministic.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("identity: encode: %w", err)
	}
	return &pb.Signed{Body: body, Signature: Sign(k, context, body)}, nil
}

// OpenSigned verifies s with pub over the body exactly as carried (never a
// re-encoding), then decodes the body into into. A signature that does not
// verify gives an error wrapping ErrBadSignature.
func OpenSigned(pub ed25519.PublicKey, context string, s *pb.Signed, into proto.Message) error {
	if s == nil {
		return fmt.Errorf("%w: nothing signed", ErrBadSignature)
	}
	if !Verify(pub, context, s.Body, s.Signature) {
		return ErrBadSignature
	}
	if into == nil {
		return errors.New("identity: open signed: no message to decode into")
	}
	if err := proto.Unmarshal(s.Body, into); err != nil {
		return fmt.Errorf("identity: decode signed body: %w", err)
	}
	return nil
}
