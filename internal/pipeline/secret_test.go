package pipeline

import (
	"bytes"
	"testing"
)

// TestSecretSalts: what the key of an encrypted pipeline depends on, for
// the default salt, an explicit Salt and Unsalted.
func TestSecretSalts(t *testing.T) {
	secret := []byte("s3cret")
	self, other := [32]byte{1}, [32]byte{2}
	key := func(network [32]byte, name string, o Options) []byte {
		t.Helper()
		o.Encrypted = true
		d, k, err := newDef(network, self, name, o, secret)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(d.SecretKey, k.public()) {
			t.Fatal("definition does not carry the key's public half")
		}
		return k.raw[:]
	}
	if bytes.Equal(key(testNet, "a", Options{}), key(testNet, "b", Options{})) {
		t.Fatal("default salt: two pipelines share a key")
	}
	if bytes.Equal(key(testNet, "a", Options{}), key(testNet, "a", Options{ToNode: other})) {
		t.Fatal("default salt: broadcast and point-to-point pipelines share a key")
	}
	salt := Options{Salt: []byte("shared")}
	if !bytes.Equal(key(testNet, "a", salt), key([32]byte{9}, "b", salt)) {
		t.Fatal("explicit salt: the key should depend on secret and salt only")
	}
	if bytes.Equal(key(testNet, "a", salt), key(testNet, "a", Options{Salt: []byte("other")})) {
		t.Fatal("explicit salt: another salt gives the same key")
	}
	un := Options{Unsalted: true}
	if !bytes.Equal(key(testNet, "a", un), key([32]byte{9}, "z", un)) {
		t.Fatal("unsalted: the key should depend on the secret only")
	}
	for _, bad := range []Options{{Unsalted: true, Salt: []byte("x"), Encrypted: true}, {Salt: []byte("x")}, {Unsalted: true}} {
		if _, _, err := newDef(testNet, self, "a", bad, secret); err == nil {
			t.Fatalf("options %+v accepted", bad)
		}
	}
	if _, _, err := newDef(testNet, self, "a", Options{Encrypted: true}, nil); err != ErrSecretRequired {
		t.Fatalf("no secret: %v", err)
	}
	if _, _, err := newDef(testNet, self, "a", Options{Realtime: true, Persistent: true}, nil); err != ErrRealtimePersistent {
		t.Fatalf("realtime persistent: %v", err)
	}
	// A received definition with the secret key checks; altered, it does not.
	d, k, _ := newDef(testNet, self, "a", Options{Encrypted: true}, secret)
	m := d.toProto()
	if _, err := defFromProto(testNet, other, m); err != nil {
		t.Fatal(err)
	}
	m.SecretKey = bytes.Repeat([]byte{7}, 32)
	if _, err := defFromProto(testNet, other, m); err == nil {
		t.Fatal("definition with a swapped secret key accepted")
	}
	if k2, ok := d.keyFor(testNet, secret); !ok || k2.raw != k.raw {
		t.Fatal("keyFor refuses the right secret")
	}
	if _, ok := d.keyFor(testNet, []byte("wrong")); ok {
		t.Fatal("keyFor accepts a wrong secret")
	}
	// Sealed data opens only for its pipeline and sender.
	sealed := k.seal(d.ID, self, []byte("hello"))
	if pt, err := k.open(d.ID, self, sealed); err != nil || string(pt) != "hello" {
		t.Fatalf("open: %q %v", pt, err)
	}
	if _, err := k.open(d.ID, other, sealed); err == nil {
		t.Fatal("data re-attributed to another sender opened")
	}
	if !checkProof(d, other, k.proveFor(d.ID, other)) || checkProof(d, self, k.proveFor(d.ID, other)) {
		t.Fatal("proofs do not bind the node")
	}
}
