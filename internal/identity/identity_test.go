package identity

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
	if Verify(k.Public[:10], "a", []byte("body"), sig) || Verify(k.Public, "a", []byte("body"), sig[:10]) {
		t.Fatal("short key or signature accepted")
	}
}

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
		got.Location != "laptop" || got.NetworkID != net || got.Created.Unix() != 1700000000 {
		t.Fatalf("round trip changed the certificate: %+v", got)
	}
	for i := range c.Signed.Body {
		s := proto.Clone(c.Signed).(*pb.Signed)
		s.Body[i] ^= 0x01
		if _, err := ParseCert(s); err == nil {
			t.Fatalf("body byte %d flipped: accepted", i)
		}
	}
	s := proto.Clone(c.Signed).(*pb.Signed)
	s.Signature[0] ^= 1
	if _, err := ParseCert(s); !errors.Is(err, ErrBadCert) {
		t.Fatalf("bad signature: %v", err)
	}
	if _, err := ParseCert(nil); err == nil {
		t.Fatal("nil certificate accepted")
	}
	if _, err := IssueCert(ident, "", node.Public, net, "x", time.Now()); err == nil {
		t.Fatal("empty name accepted")
	}
	if _, err := IssueCert(ident, strings.Repeat("a", MaxNameLen+1), node.Public, net, "x", time.Now()); err == nil {
		t.Fatal("long name accepted")
	}
}

func TestKeyFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	path := filepath.Join(dir, "k.key")
	k := mustKey(t)
	if err := SaveKey(path, k); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", st.Mode().Perm())
	}
	if dst, _ := os.Stat(dir); dst.Mode().Perm() != 0o700 {
		t.Fatalf("key dir mode %v, want 0700", dst.Mode().Perm())
	}
	got, err := LoadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Private, k.Private) {
		t.Fatal("loaded a different key")
	}
	os.Chmod(path, 0o644)
	if _, err := LoadKey(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable key file: %v", err)
	}
	os.Chmod(path, 0o600)
	b, _ := os.ReadFile(path)
	os.WriteFile(path, b[:len(b)/2], 0o600)
	if _, err := LoadKey(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("truncated key file: %v", err)
	}
}

// FuzzParseCert: arbitrary bytes as a signed certificate never panic, and
// nothing is accepted unless its signature verifies.
func FuzzParseCert(f *testing.F) {
	ident, node := mustKey(f), mustKey(f)
	c, err := IssueCert(ident, "alice", node.Public, [32]byte{1}, "laptop", time.Now())
	if err != nil {
		f.Fatal(err)
	}
	b, _ := proto.Marshal(c.Signed)
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		var s pb.Signed
		if proto.Unmarshal(data, &s) != nil {
			return
		}
		cert, err := ParseCert(&s)
		if err == nil && !Verify(cert.IdentityKey, CertContext, s.Body, s.Signature) {
			t.Fatal("accepted a certificate whose signature does not verify")
		}
	})
}
