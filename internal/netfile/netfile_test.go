package netfile

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pipesnet/pipes/internal/identity"
)

const secret = "tr0ub4dor&3-network-secret"

func mustAdmin(t testing.TB) *identity.KeyPair {
	t.Helper()
	admin, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return admin
}

func create(t testing.TB) (string, *Netfile) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "x.net")
	nf, err := Create(path, Spec{Name: "team", Secret: secret, Gateways: []string{"127.0.0.1:7420", "[::1]:7421"}, KDF: TestKDF}, mustAdmin(t))
	if err != nil {
		t.Fatal(err)
	}
	return path, nf
}

func TestCreateLoadUnlock(t *testing.T) {
	path, nf := create(t)
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != nf.ID || got.Name != "team" || len(got.Gateways) != 2 || got.Gateways[1] != "[::1]:7421" ||
		got.KDF != TestKDF || got.Revision != 1 || !bytes.Equal(got.Salt, nf.ID[:]) ||
		!bytes.Equal(got.AdminKey, nf.AdminKey) || !got.Created.Equal(nf.Created) || got.Bootstrap {
		t.Fatalf("round trip: %+v", got)
	}
	raw, _ := os.ReadFile(path)
	if !bytes.Equal(got.Raw, raw) || !bytes.Equal(nf.Raw, raw) {
		t.Fatal("Raw is not the file's bytes")
	}
	key, ok := got.Unlock(secret)
	if !ok || key != got.DeriveKey(secret) {
		t.Fatal("right secret refused")
	}
	for _, wrong := range []string{secret + "x", "", strings.ToUpper(secret), secret[:len(secret)-1]} {
		if k, ok := got.Unlock(wrong); ok || k != [32]byte{} {
			t.Fatalf("wrong secret %q accepted", wrong)
		}
	}
	if !got.CheckKey(key) || got.CheckKey([32]byte{}) {
		t.Fatal("CheckKey")
	}
	if bytes.Contains(raw, []byte(secret)) || bytes.Contains(raw, key[:]) {
		t.Fatal("the secret or the key is in the netfile")
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v", st.Mode().Perm())
	}
	// A second network with the same secret has another id, salt and key.
	_, other := create(t)
	if other.ID == nf.ID || other.DeriveKey(secret) == key {
		t.Fatal("two networks share an id or a key")
	}
}

func TestEncodeDefaultKDF(t *testing.T) {
	if testing.Short() {
		t.Skip("derives a key with DefaultKDF")
	}
	raw, err := Encode(Spec{Name: "n", Secret: "s", Bootstrap: true}, mustAdmin(t))
	if err != nil {
		t.Fatal(err)
	}
	nf, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if nf.KDF != DefaultKDF || !nf.Bootstrap || len(nf.Gateways) != 0 {
		t.Fatalf("%+v", nf)
	}
}

func TestCreateRefusesOverwriteAndBadSpecs(t *testing.T) {
	path, _ := create(t)
	before, _ := os.ReadFile(path)
	admin := mustAdmin(t)
	if _, err := Create(path, Spec{Name: "n", Secret: "s", KDF: TestKDF}, admin); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("overwrite: %v", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatal("the existing netfile changed")
	}
	dir := t.TempDir()
	many := make([]string, MaxGateways+1)
	for i := range many {
		many[i] = "h:1"
	}
	bad := map[string]Spec{
		"no name":         {Name: "", Secret: "s"},
		"no secret":       {Name: "n", Secret: ""},
		"long name":       {Name: strings.Repeat("n", MaxNameLen+1), Secret: "s"},
		"name not UTF-8":  {Name: "n\xff", Secret: "s"},
		"no port":         {Name: "n", Secret: "s", Gateways: []string{"nohost"}},
		"no host":         {Name: "n", Secret: "s", Gateways: []string{":7420"}},
		"port 0":          {Name: "n", Secret: "s", Gateways: []string{"h:0"}},
		"port 65536":      {Name: "n", Secret: "s", Gateways: []string{"h:65536"}},
		"port +80":        {Name: "n", Secret: "s", Gateways: []string{"h:+80"}},
		"port name":       {Name: "n", Secret: "s", Gateways: []string{"h:http"}},
		"long gateway":    {Name: "n", Secret: "s", Gateways: []string{strings.Repeat("h", MaxGatewayLen) + ":1"}},
		"too many":        {Name: "n", Secret: "s", Gateways: many},
		"weak KDF":        {Name: "n", Secret: "s", KDF: KDFParams{Time: 1, MemoryKiB: 1, Threads: 1}},
		"no KDF threads":  {Name: "n", Secret: "s", KDF: KDFParams{Time: 1, MemoryKiB: MinKDFMemoryKiB}},
		"huge KDF memory": {Name: "n", Secret: "s", KDF: KDFParams{Time: 1, MemoryKiB: MaxKDFMemoryKiB + 1, Threads: 1}},
	}
	for name, s := range bad {
		p := filepath.Join(dir, name)
		if _, err := Create(p, s, admin); err == nil {
			t.Errorf("%s: accepted", name)
		}
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: a file was written", name)
		}
	}
	for _, a := range []*identity.KeyPair{nil, {}} {
		if _, err := Create(filepath.Join(dir, "noadmin"), Spec{Name: "n", Secret: "s", KDF: TestKDF}, a); err == nil {
			t.Errorf("admin %v accepted", a)
		}
	}
	good := Spec{Name: strings.Repeat("é", MaxNameLen/2), Secret: "s", KDF: TestKDF,
		Gateways: []string{"example.com:1", "[2001:db8::1]:65535", "10.0.0.1:7420"}}
	if _, err := Create(filepath.Join(dir, "good"), good, admin); err != nil {
		t.Fatalf("spec at the limits: %v", err)
	}
}

func TestLoadErrors(t *testing.T) {
	path, nf := create(t)
	b := bytes.Clone(nf.Raw)
	b[len(b)-1] ^= 0x01 // last signature byte
	os.WriteFile(path, b, 0o644)
	_, err := Load(path)
	want := "netfile " + path + ": signature does not verify: the file was altered or truncated"
	if err == nil || err.Error() != want || !errors.Is(err, ErrBadSignature) {
		t.Fatalf("got %v, want %q", err, want)
	}
	os.WriteFile(path, nf.Raw[:len(nf.Raw)-10], 0o644)
	if _, err := Load(path); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), path) {
		t.Fatalf("truncated: %v", err)
	}
	os.WriteFile(path, []byte("#!/bin/sh\n"), 0o644)
	if _, err := Load(path); !errors.Is(err, ErrNotNetfile) || !strings.Contains(err.Error(), path) {
		t.Fatalf("not a netfile: %v", err)
	}
	os.WriteFile(path, append(bytes.Clone(nf.Raw), make([]byte, MaxFileSize)...), 0o644)
	if _, err := Load(path); !errors.Is(err, ErrMalformed) {
		t.Fatalf("huge file: %v", err)
	}
	missing := filepath.Join(t.TempDir(), "missing.net")
	if _, err := Load(missing); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Fatalf("missing file: %v", err)
	}
	dir := t.TempDir()
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), dir) {
		t.Fatalf("directory: %v", err)
	}
}

// A Netfile not made by Parse must not make the key functions panic.
func TestZeroNetfile(t *testing.T) {
	var n Netfile
	if n.DeriveKey("s") != [32]byte{} || n.CheckKey([32]byte{}) {
		t.Fatal("zero Netfile derives or checks keys")
	}
	if _, ok := n.Unlock("s"); ok {
		t.Fatal("zero Netfile unlocks")
	}
}
