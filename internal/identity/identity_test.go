package identity

import (
	"bytes"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/pipesnet/pipes/internal/wire/pb"
)

func mustKey(t testing.TB) *KeyPair {
	t.Helper()
	k, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestKeyPairIDAndSeed(t *testing.T) {
	k := mustKey(t)
	if k.ID() == mustKey(t).ID() {
		t.Fatal("two keys share an id")
	}
	again, err := FromSeed(k.Private.Seed())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.Public, k.Public) || again.ID() != k.ID() {
		t.Fatal("FromSeed made another key")
	}
	if _, err := FromSeed(make([]byte, 31)); err == nil {
		t.Fatal("31-byte seed accepted")
	}
}

func TestSignVerifyDomainSeparation(t *testing.T) {
	k := mustKey(t)
	sig := Sign(k, "a", []byte("body"))
	if !Verify(k.Public, "a", []byte("body"), sig) {
		t.Fatal("valid signature rejected")
	}
	if Verify(k.Public, "b", []byte("body"), sig) {
		t.Fatal("signature valid under another context")
	}
	if Verify(k.Public, "a", []byte("bodz"), sig) {
		t.Fatal("signature valid for another body")
	}
	// The zero byte keeps context and body apart: ("ab", "c") is not ("a", "bc").
	if Verify(k.Public, "ab", []byte("c"), Sign(k, "a", []byte("bc"))) {
		t.Fatal("context and body boundary is ambiguous")
	}
	if Verify(mustKey(t).Public, "a", []byte("body"), sig) {
		t.Fatal("signature valid under another key")
	}
	for _, c := range []struct {
		pub, sig []byte
	}{
		{k.Public[:10], sig}, {k.Public, sig[:10]}, {nil, sig}, {k.Public, nil},
		{append(bytes.Clone(k.Public), 0), sig}, {k.Public, append(bytes.Clone(sig), 0)},
		{make([]byte, 32), make([]byte, 64)},
	} {
		if Verify(c.pub, "a", []byte("body"), c.sig) {
			t.Fatalf("key of %d bytes, signature of %d bytes accepted", len(c.pub), len(c.sig))
		}
	}
}

func TestSignProtoOpenSigned(t *testing.T) {
	k := mustKey(t)
	msg := &pb.Goodbye{Reason: "bye"}
	s, err := SignProto(k, "ctx", msg)
	if err != nil {
		t.Fatal(err)
	}
	var got pb.Goodbye
	if err := OpenSigned(k.Public, "ctx", s, &got); err != nil || got.Reason != "bye" {
		t.Fatalf("round trip: %v %v", err, &got)
	}
	if err := OpenSigned(k.Public, "other", s, &got); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("other context: %v", err)
	}
	if err := OpenSigned(mustKey(t).Public, "ctx", s, &got); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("other key: %v", err)
	}
	for i := range s.Body {
		b := proto.Clone(s).(*pb.Signed)
		b.Body[i] ^= 0x01
		if err := OpenSigned(k.Public, "ctx", b, &got); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("body byte %d flipped: %v", i, err)
		}
	}
	b := proto.Clone(s).(*pb.Signed)
	b.Signature[63] ^= 0x80
	if err := OpenSigned(k.Public, "ctx", b, &got); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("signature flipped: %v", err)
	}
	if err := OpenSigned(k.Public, "ctx", nil, &got); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("nil signed: %v", err)
	}
	if err := OpenSigned(k.Public, "ctx", s, nil); err == nil {
		t.Fatal("nil target accepted")
	}
	// A verified body that does not decode is an error, not a panic.
	junk := &pb.Signed{Body: []byte{0xff}, Signature: Sign(k, "ctx", []byte{0xff})}
	if err := OpenSigned(k.Public, "ctx", junk, &got); err == nil || errors.Is(err, ErrBadSignature) {
		t.Fatalf("undecodable body: %v", err)
	}
	for _, bad := range []*KeyPair{nil, {}, {Public: k.Public, Private: k.Private[:32]}} {
		if _, err := SignProto(bad, "ctx", msg); err == nil {
			t.Fatalf("SignProto with key pair %v: no error", bad)
		}
	}
}
