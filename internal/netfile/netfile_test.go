package netfile

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/pipesnet/pipes/internal/identity"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

const secret = "tr0ub4dor&3-network-secret"

func create(t testing.TB) (string, *Netfile) {
	t.Helper()
	admin, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "x.net")
	nf, err := Create(path, Spec{Name: "team", Secret: secret, Gateways: []string{"127.0.0.1:7420", "[::1]:7421"}, KDF: TestKDF}, admin)
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
	if got.ID != nf.ID || got.Name != "team" || len(got.Gateways) != 2 || got.KDF != TestKDF || got.Revision != 1 {
		t.Fatalf("round trip: %+v", got)
	}
	if _, ok := got.Unlock(secret); !ok {
		t.Fatal("right secret refused")
	}
	if _, ok := got.Unlock(secret + "x"); ok {
		t.Fatal("wrong secret accepted")
	}
	k := got.DeriveKey(secret)
	if !got.CheckKey(k) || got.CheckKey([32]byte{}) {
		t.Fatal("CheckKey")
	}
	raw, _ := os.ReadFile(path)
	if bytes.Contains(raw, []byte(secret)) || bytes.Contains(raw, k[:]) {
		t.Fatal("the secret or the key is in the netfile")
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v", st.Mode().Perm())
	}
}

func TestCreateRefusesOverwriteAndBadSpecs(t *testing.T) {
	path, _ := create(t)
	admin, _ := identity.Generate()
	if _, err := Create(path, Spec{Name: "n", Secret: "s", KDF: TestKDF}, admin); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("overwrite: %v", err)
	}
	dir := t.TempDir()
	bad := []Spec{
		{Name: "", Secret: "s"},
		{Name: "n", Secret: ""},
		{Name: "n", Secret: "s", Gateways: []string{"nohost"}},
		{Name: "n", Secret: "s", Gateways: []string{"h:0"}},
		{Name: strings.Repeat("n", MaxNameLen+1), Secret: "s"},
		{Name: "n", Secret: "s", KDF: KDFParams{Time: 1, MemoryKiB: 1, Threads: 1}},
	}
	for i, s := range bad {
		if _, err := Create(filepath.Join(dir, "f"+string(rune('a'+i))), s, admin); err == nil {
			t.Errorf("spec %d accepted: %+v", i, s)
		}
	}
}

func TestTamperAndTruncation(t *testing.T) {
	path, _ := create(t)
	raw, _ := os.ReadFile(path)
	for i := len(Magic) + 1; i < len(raw); i++ {
		b := bytes.Clone(raw)
		b[i] ^= 0x20
		if _, err := Parse(b); err == nil {
			t.Fatalf("flipped byte %d accepted", i)
		}
	}
	for n := 0; n < len(raw); n++ {
		if _, err := Parse(raw[:n]); err == nil {
			t.Fatalf("truncation to %d bytes accepted", n)
		}
	}
	os.WriteFile(path, raw[:len(raw)-10], 0o644)
	_, err := Load(path)
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("truncated file error does not name it: %v", err)
	}
	if !errors.Is(err, ErrBadSignature) && !errors.Is(err, ErrMalformed) {
		t.Fatalf("truncated file: %v", err)
	}
}

func TestMagicAndVersion(t *testing.T) {
	_, nf := create(t)
	if _, err := Parse([]byte("hello world, not a netfile")); !errors.Is(err, ErrNotNetfile) {
		t.Fatalf("bad magic: %v", err)
	}
	b := bytes.Clone(nf.Raw)
	b[len(Magic)] = 2
	if _, err := Parse(b); !errors.Is(err, ErrUnsupportedFormat) {
		t.Fatalf("version 2: %v", err)
	}
}

// A hostile admin may sign any parameters; the parser must refuse costs
// that would exhaust memory or time before any derivation runs.
func TestHostileKDFRefused(t *testing.T) {
	admin, _ := identity.Generate()
	id := bytes.Repeat([]byte{1}, 32)
	for _, k := range []*pb.KDFParams{
		{Salt: id, Time: 1, MemoryKib: 1 << 30, Threads: 1},
		{Salt: id, Time: 1 << 20, MemoryKib: 8 << 10, Threads: 1},
		{Salt: id, Time: 1, MemoryKib: 8 << 10, Threads: 1000},
		{Salt: id, Time: 1, MemoryKib: 8 << 10, Threads: 300},
	} {
		body := &pb.NetfileBody{Format: 1, NetworkId: id, Name: "n", Kdf: k, Verifier: make([]byte, 32), AdminKey: admin.Public}
		s, _ := identity.SignProto(admin, signContext, body)
		enc, _ := proto.Marshal(s)
		if _, err := Parse(append([]byte(Magic+"\x01"), enc...)); !errors.Is(err, ErrMalformed) {
			t.Errorf("KDF %v accepted: %v", k, err)
		}
	}
}

// FuzzParse: arbitrary bytes never panic, and whatever parses carries a
// valid admin signature.
func FuzzParse(f *testing.F) {
	_, nf := create(f)
	f.Add(nf.Raw)
	f.Add([]byte(Magic + "\x01"))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := Parse(data)
		if err == nil && got.KDF.MemoryKiB > maxMemoryKiB {
			t.Fatal("accepted an unbounded KDF")
		}
	})
}
