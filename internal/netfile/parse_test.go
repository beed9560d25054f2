package netfile

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/pipesnet/pipes/internal/identity"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

// encodeBody signs body with admin and frames it as a netfile, bypassing
// Create's checks, as a hostile writer would.
func encodeBody(t testing.TB, admin *identity.KeyPair, body *pb.NetfileBody) []byte {
	t.Helper()
	s, err := identity.SignProto(admin, signContext, body)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := proto.MarshalOptions{Deterministic: true}.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte(Magic+"\x01"), enc...)
}

func validBody(admin *identity.KeyPair) *pb.NetfileBody {
	id := bytes.Repeat([]byte{7}, 32)
	return &pb.NetfileBody{Format: 1, NetworkId: id, Name: "n", Gateways: []string{"h:1"},
		Kdf:      &pb.KDFParams{Salt: id, Time: 1, MemoryKib: MinKDFMemoryKiB, Threads: 1},
		Verifier: make([]byte, 32), Revision: 1, AdminKey: admin.Public}
}

func TestTamperAndTruncation(t *testing.T) {
	_, nf := create(t)
	raw := nf.Raw
	for i := len(Magic) + 1; i < len(raw); i++ {
		for _, mask := range []byte{0x01, 0x20, 0x80, 0xff} {
			b := bytes.Clone(raw)
			b[i] ^= mask
			if _, err := Parse(b); !errors.Is(err, ErrBadSignature) && !errors.Is(err, ErrMalformed) {
				t.Fatalf("byte %d ^ %#x: %v", i, mask, err)
			}
		}
	}
	for n := 0; n < len(raw); n++ {
		_, err := Parse(raw[:n])
		switch {
		case n < len(Magic) && !errors.Is(err, ErrNotNetfile),
			n >= len(Magic) && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrBadSignature):
			t.Fatalf("truncation to %d bytes: %v", n, err)
		}
	}
}

// Bytes outside the signed body are checked too: nothing may be appended
// or repeated in the envelope.
func TestEnvelopeIsCanonical(t *testing.T) {
	_, nf := create(t)
	env := nf.Raw[len(Magic)+1:]
	unknown := protowire.AppendBytes(protowire.AppendTag(nil, 3, protowire.BytesType), []byte("x"))
	for name, b := range map[string][]byte{
		"zero byte appended":    append(bytes.Clone(nf.Raw), 0),
		"unknown field":         append(bytes.Clone(nf.Raw), unknown...),
		"envelope twice":        append(bytes.Clone(nf.Raw), env...),
		"signature first":       append([]byte(Magic+"\x01"), reorder(t, env)...),
		"file twice":            append(bytes.Clone(nf.Raw), nf.Raw...),
		"empty envelope":        []byte(Magic + "\x01"),
		"signature of 65 bytes": encodeSigned(t, nf, func(s *pb.Signed) { s.Signature = append(s.Signature, 0) }),
		"no body":               encodeSigned(t, nf, func(s *pb.Signed) { s.Body = nil }),
	} {
		if _, err := Parse(b); !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func encodeSigned(t *testing.T, nf *Netfile, edit func(*pb.Signed)) []byte {
	var s pb.Signed
	if err := proto.Unmarshal(nf.Raw[len(Magic)+1:], &s); err != nil {
		t.Fatal(err)
	}
	edit(&s)
	enc, _ := proto.Marshal(&s)
	return append([]byte(Magic+"\x01"), enc...)
}

func reorder(t *testing.T, env []byte) []byte {
	var s pb.Signed
	if err := proto.Unmarshal(env, &s); err != nil {
		t.Fatal(err)
	}
	b := protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), s.Signature)
	return protowire.AppendBytes(protowire.AppendTag(b, 1, protowire.BytesType), s.Body)
}

func TestMagicAndVersion(t *testing.T) {
	_, nf := create(t)
	for _, b := range [][]byte{nil, []byte("hello world, not a netfile"), []byte("PIPESNE"), []byte("pipesnet\x01")} {
		if _, err := Parse(b); !errors.Is(err, ErrNotNetfile) {
			t.Fatalf("%q: %v", b, err)
		}
	}
	for _, v := range []byte{0, 2, 0xff} {
		b := bytes.Clone(nf.Raw)
		b[len(Magic)] = v
		if _, err := Parse(b); !errors.Is(err, ErrUnsupportedFormat) {
			t.Fatalf("version %d: %v", v, err)
		}
	}
	admin := mustAdmin(t)
	body := validBody(admin)
	body.Format = 2
	if _, err := Parse(encodeBody(t, admin, body)); !errors.Is(err, ErrUnsupportedFormat) {
		t.Fatalf("body format 2: %v", err)
	}
}

// A hostile admin may sign anything; the parser must refuse costs that
// would exhaust memory or time, and fields of the wrong size, before any
// key derivation runs.
func TestHostileBodiesRefused(t *testing.T) {
	admin := mustAdmin(t)
	if _, err := Parse(encodeBody(t, admin, validBody(admin))); err != nil {
		t.Fatalf("the unedited body: %v", err)
	}
	for name, edit := range map[string]func(*pb.NetfileBody){
		"1 TiB memory":     func(b *pb.NetfileBody) { b.Kdf.MemoryKib = 1 << 30 },
		"memory 1 GiB+1":   func(b *pb.NetfileBody) { b.Kdf.MemoryKib = MaxKDFMemoryKiB + 1 },
		"memory 1 KiB":     func(b *pb.NetfileBody) { b.Kdf.MemoryKib = 1 },
		"2^20 passes":      func(b *pb.NetfileBody) { b.Kdf.Time = 1 << 20 },
		"0 passes":         func(b *pb.NetfileBody) { b.Kdf.Time = 0 },
		"1000 threads":     func(b *pb.NetfileBody) { b.Kdf.Threads = 1000 },
		"300 threads":      func(b *pb.NetfileBody) { b.Kdf.Threads = 300 }, // 44 as a uint8
		"256 threads":      func(b *pb.NetfileBody) { b.Kdf.Threads = 256 }, // 0 as a uint8
		"0 threads":        func(b *pb.NetfileBody) { b.Kdf.Threads = 0 },
		"no KDF":           func(b *pb.NetfileBody) { b.Kdf = nil },
		"short salt":       func(b *pb.NetfileBody) { b.Kdf.Salt = b.Kdf.Salt[:15] },
		"long salt":        func(b *pb.NetfileBody) { b.Kdf.Salt = make([]byte, 65) },
		"short id":         func(b *pb.NetfileBody) { b.NetworkId = b.NetworkId[:31] },
		"short verifier":   func(b *pb.NetfileBody) { b.Verifier = b.Verifier[:31] },
		"no name":          func(b *pb.NetfileBody) { b.Name = "" },
		"long name":        func(b *pb.NetfileBody) { b.Name = strings.Repeat("n", MaxNameLen+1) },
		"bad gateway":      func(b *pb.NetfileBody) { b.Gateways = []string{"h:99999"} },
		"too many gateway": func(b *pb.NetfileBody) { b.Gateways = make([]string, MaxGateways+1) },
	} {
		b := validBody(admin)
		edit(b)
		if _, err := Parse(encodeBody(t, admin, b)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// An admin key of the wrong length cannot verify anything.
	b := validBody(admin)
	b.AdminKey = b.AdminKey[:31]
	if _, err := Parse(encodeBody(t, admin, b)); !errors.Is(err, ErrMalformed) {
		t.Errorf("short admin key: %v", err)
	}
	// Signed by another key than the admin key it names.
	if _, err := Parse(encodeBody(t, mustAdmin(t), validBody(admin))); !errors.Is(err, ErrBadSignature) {
		t.Errorf("signed by another key: %v", err)
	}
}

// FuzzParse: arbitrary bytes never panic, and whatever parses carries a
// valid admin signature and bounded parameters.
func FuzzParse(f *testing.F) {
	_, nf := create(f)
	f.Add(nf.Raw)
	f.Add([]byte(Magic + "\x01"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := Parse(data)
		if err != nil {
			return
		}
		if got.KDF.Check() != nil || len(got.Salt) > maxSaltLen {
			t.Fatalf("accepted unbounded KDF parameters %+v", got.KDF)
		}
		var s pb.Signed
		if proto.Unmarshal(data[len(Magic)+1:], &s) != nil || !identity.Verify(got.AdminKey, signContext, s.Body, s.Signature) {
			t.Fatal("accepted a netfile whose signature does not verify")
		}
		if !bytes.Equal(got.Raw, data) {
			t.Fatal("Raw is not the input")
		}
	})
}
