package identity

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

// CertContext is the signature context of node certificates: the identity
// key signs CertContext || 0x00 || the encoded pb.NodeCertificate.
const CertContext = "pipes/v1 node certificate"

// Limits on certificate strings. The identity name must also be non-empty.
const (
	MaxNameLen     = 256 // identity name, bytes of UTF-8
	MaxLocationLen = 256 // node location, bytes of UTF-8
)

// ErrBadCert is wrapped by every certificate parse or verification failure.
// A signature that does not verify also wraps ErrBadSignature.
var ErrBadCert = errors.New("identity: bad node certificate")

// Cert is a verified node certificate: the identity's statement that a node
// key belongs to it, in one network, at one location.
type Cert struct {
	NodeKey      ed25519.PublicKey
	IdentityKey  ed25519.PublicKey
	IdentityName string
	NetworkID    ids.Network
	Location     string
	Created      time.Time
	// Signed is the certificate as carried on the wire.
	Signed *pb.Signed
}

// NodeID is SHA-256 of the node key.
func (c *Cert) NodeID() ids.Node { return sha256.Sum256(c.NodeKey) }

// IdentityID is SHA-256 of the identity key.
func (c *Cert) IdentityID() [32]byte { return sha256.Sum256(c.IdentityKey) }

// IssueCert has identity ident certify nodeKey for network at location,
// created at now (kept to the second). It checks the fields as ParseCert
// does.
func IssueCert(ident *KeyPair, identityName string, nodeKey ed25519.PublicKey, network [32]byte, location string, now time.Time) (*Cert, error) {
	if err := ident.check(); err != nil {
		return nil, fmt.Errorf("%w: identity key: %w", ErrBadCert, err)
	}
	body := &pb.NodeCertificate{
		Version:      1,
		NodeKey:      nodeKey,
		IdentityKey:  ident.Public,
		IdentityName: identityName,
		NetworkId:    network[:],
		Location:     location,
		CreatedUnix:  now.Unix(),
	}
	if err := checkCert(body); err != nil {
		return nil, err
	}
	s, err := SignProto(ident, CertContext, body)
	if err != nil {
		return nil, err
	}
	return ParseCert(s)
}

// ParseCert decodes and verifies a certificate: its identity signature over
// the body as carried, version 1, 32-byte keys and network id, a non-empty
// identity name and a location of valid UTF-8 within MaxNameLen and
// MaxLocationLen. The returned Cert holds its own copy of s's bytes.
func ParseCert(s *pb.Signed) (*Cert, error) {
	if s == nil {
		return nil, fmt.Errorf("%w: missing", ErrBadCert)
	}
	var body pb.NodeCertificate
	if err := proto.Unmarshal(s.Body, &body); err != nil {
		return nil, fmt.Errorf("%w: decode: %w", ErrBadCert, err)
	}
	if err := checkCert(&body); err != nil {
		return nil, err
	}
	if !Verify(body.IdentityKey, CertContext, s.Body, s.Signature) {
		return nil, fmt.Errorf("%w: by the identity key: %w", ErrBadCert, ErrBadSignature)
	}
	return &Cert{
		NodeKey:      ed25519.PublicKey(body.NodeKey),
		IdentityKey:  ed25519.PublicKey(body.IdentityKey),
		IdentityName: body.IdentityName,
		NetworkID:    [32]byte(body.NetworkId),
		Location:     body.Location,
		Created:      time.Unix(body.CreatedUnix, 0).UTC(),
		Signed:       &pb.Signed{Body: bytes.Clone(s.Body), Signature: bytes.Clone(s.Signature)},
	}, nil
}

func checkCert(b *pb.NodeCertificate) error {
	switch {
	case b.Version != 1:
		return fmt.Errorf("%w: version %d, want 1", ErrBadCert, b.Version)
	case len(b.NodeKey) != ed25519.PublicKeySize:
		return fmt.Errorf("%w: node key of %d bytes", ErrBadCert, len(b.NodeKey))
	case len(b.IdentityKey) != ed25519.PublicKeySize:
		return fmt.Errorf("%w: identity key of %d bytes", ErrBadCert, len(b.IdentityKey))
	case len(b.NetworkId) != 32:
		return fmt.Errorf("%w: network id of %d bytes", ErrBadCert, len(b.NetworkId))
	case b.IdentityName == "" || len(b.IdentityName) > MaxNameLen || !utf8.ValidString(b.IdentityName):
		return fmt.Errorf("%w: identity name must be 1 to %d bytes of UTF-8", ErrBadCert, MaxNameLen)
	case len(b.Location) > MaxLocationLen || !utf8.ValidString(b.Location):
		return fmt.Errorf("%w: location must be at most %d bytes of UTF-8", ErrBadCert, MaxLocationLen)
	}
	return nil
}
