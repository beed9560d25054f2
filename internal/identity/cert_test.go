package identity

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/pipesnet/pipes/internal/wire/pb"
)

func TestCertRoundTripAndTamper(t *testing.T) {
	ident, node := mustKey(t), mustKey(t)
	net := [32]byte{1, 2, 3}
	c, err := IssueCert(ident, "alice", node.Public, net, "laptop", time.Unix(1700000000, 0))
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseCert(c.Signed)
	if err != nil {
		t.Fatal(err)
	}
	if got.NodeID() != node.ID() || got.IdentityID() != ident.ID() || got.IdentityName != "alice" ||
		got.Location != "laptop" || got.NetworkID != net || got.Created.Unix() != 1700000000 ||
		!bytes.Equal(got.NodeKey, node.Public) || !bytes.Equal(got.IdentityKey, ident.Public) {
		t.Fatalf("round trip changed the certificate: %+v", got)
	}
	wire := proto.Clone(c.Signed).(*pb.Signed)
	got, _ = ParseCert(wire)
	wire.Body[0] ^= 1
	if _, err := ParseCert(got.Signed); err != nil {
		t.Fatal("the parsed certificate shares the caller's bytes")
	}
	for i := range c.Signed.Body {
		s := proto.Clone(c.Signed).(*pb.Signed)
		s.Body[i] ^= 0x01
		if _, err := ParseCert(s); !errors.Is(err, ErrBadCert) {
			t.Fatalf("body byte %d flipped: %v", i, err)
		}
	}
	for i := range c.Signed.Signature {
		s := proto.Clone(c.Signed).(*pb.Signed)
		s.Signature[i] ^= 0x10
		if _, err := ParseCert(s); !errors.Is(err, ErrBadCert) || !errors.Is(err, ErrBadSignature) {
			t.Fatalf("signature byte %d flipped: %v", i, err)
		}
	}
	for _, n := range []int{0, 1, 63, 65} {
		s := proto.Clone(c.Signed).(*pb.Signed)
		s.Signature = append(s.Signature, 0)[:n]
		if _, err := ParseCert(s); !errors.Is(err, ErrBadCert) {
			t.Fatalf("signature of %d bytes: %v", n, err)
		}
	}
	if _, err := ParseCert(nil); !errors.Is(err, ErrBadCert) {
		t.Fatalf("nil certificate: %v", err)
	}
	if _, err := ParseCert(&pb.Signed{}); !errors.Is(err, ErrBadCert) {
		t.Fatalf("empty certificate: %v", err)
	}
}

func TestIssueCertChecks(t *testing.T) {
	ident, node := mustKey(t), mustKey(t)
	net := [32]byte{9}
	for name, f := range map[string]func() (*Cert, error){
		"empty name": func() (*Cert, error) { return IssueCert(ident, "", node.Public, net, "x", time.Now()) },
		"long name": func() (*Cert, error) {
			return IssueCert(ident, strings.Repeat("a", MaxNameLen+1), node.Public, net, "x", time.Now())
		},
		"bad UTF-8": func() (*Cert, error) { return IssueCert(ident, "a\xff", node.Public, net, "x", time.Now()) },
		"long location": func() (*Cert, error) {
			return IssueCert(ident, "a", node.Public, net, strings.Repeat("l", MaxLocationLen+1), time.Now())
		},
		"short node":   func() (*Cert, error) { return IssueCert(ident, "a", node.Public[:31], net, "x", time.Now()) },
		"nil identity": func() (*Cert, error) { return IssueCert(nil, "a", node.Public, net, "x", time.Now()) },
	} {
		if _, err := f(); !errors.Is(err, ErrBadCert) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := IssueCert(ident, strings.Repeat("é", MaxNameLen/2), node.Public, net, strings.Repeat("l", MaxLocationLen), time.Now()); err != nil {
		t.Fatalf("names at the limits: %v", err)
	}
}

// A certificate signed correctly but with bad fields is still refused.
func TestParseCertFieldChecks(t *testing.T) {
	ident, node := mustKey(t), mustKey(t)
	good := func() *pb.NodeCertificate {
		return &pb.NodeCertificate{Version: 1, NodeKey: node.Public, IdentityKey: ident.Public,
			IdentityName: "alice", NetworkId: make([]byte, 32), Location: "here"}
	}
	for name, edit := range map[string]func(*pb.NodeCertificate){
		"version 0":        func(b *pb.NodeCertificate) { b.Version = 0 },
		"version 2":        func(b *pb.NodeCertificate) { b.Version = 2 },
		"short node key":   func(b *pb.NodeCertificate) { b.NodeKey = b.NodeKey[:31] },
		"long node key":    func(b *pb.NodeCertificate) { b.NodeKey = append(bytes.Clone(b.NodeKey), 0) },
		"short network id": func(b *pb.NodeCertificate) { b.NetworkId = b.NetworkId[:31] },
		"no network id":    func(b *pb.NodeCertificate) { b.NetworkId = nil },
		"empty name":       func(b *pb.NodeCertificate) { b.IdentityName = "" },
		"long name":        func(b *pb.NodeCertificate) { b.IdentityName = strings.Repeat("n", MaxNameLen+1) },
		"long location":    func(b *pb.NodeCertificate) { b.Location = strings.Repeat("l", MaxLocationLen+1) },
	} {
		b := good()
		edit(b)
		s, err := SignProto(ident, CertContext, b)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseCert(s); !errors.Is(err, ErrBadCert) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// proto3 will not encode invalid UTF-8, so append a bad string field to
	// a good body by hand (the last value of a field wins when decoding).
	for _, field := range []protowire.Number{4, 6} {
		body, _ := proto.Marshal(good())
		body = protowire.AppendTag(body, field, protowire.BytesType)
		body = protowire.AppendBytes(body, []byte("a\xff"))
		s := &pb.Signed{Body: body, Signature: Sign(ident, CertContext, body)}
		if _, err := ParseCert(s); !errors.Is(err, ErrBadCert) {
			t.Errorf("field %d not UTF-8: %v", field, err)
		}
	}
	// Signed by another key than the identity key it names.
	s, _ := SignProto(node, CertContext, good())
	if _, err := ParseCert(s); !errors.Is(err, ErrBadSignature) {
		t.Errorf("signed by another key: %v", err)
	}
	// Signed under another context.
	s, _ = SignProto(ident, "pipes/v1 netfile", good())
	if _, err := ParseCert(s); !errors.Is(err, ErrBadSignature) {
		t.Errorf("signed under another context: %v", err)
	}
	s, _ = SignProto(ident, CertContext, good())
	if _, err := ParseCert(s); err != nil {
		t.Fatalf("the unedited body: %v", err)
	}
}

// FuzzParseCert: arbitrary bytes as a signed certificate never panic, and
// nothing is accepted unless its signature verifies and its fields are in
// bounds.
func FuzzParseCert(f *testing.F) {
	ident, node := mustKey(f), mustKey(f)
	c, err := IssueCert(ident, "alice", node.Public, [32]byte{1}, "laptop", time.Now())
	if err != nil {
		f.Fatal(err)
	}
	b, err := proto.Marshal(c.Signed)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var s pb.Signed
		if proto.Unmarshal(data, &s) != nil {
			return
		}
		cert, err := ParseCert(&s)
		if err != nil {
			return
		}
		if !Verify(cert.IdentityKey, CertContext, s.Body, s.Signature) {
			t.Fatal("accepted a certificate whose signature does not verify")
		}
		if len(cert.NodeKey) != 32 || cert.IdentityName == "" || len(cert.IdentityName) > MaxNameLen || len(cert.Location) > MaxLocationLen {
			t.Fatalf("accepted out-of-bounds fields: %+v", cert)
		}
	})
}
