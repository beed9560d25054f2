// Package netfile reads and writes network definition files ("netfiles")
// and turns network secrets into network keys.
//
// # Format (version 1)
//
//	offset  size  content
//	0       8     magic "PIPESNET"
//	8       1     format version, 1
//	9       rest  protobuf pipes.v1.Signed{body, signature}
//
// body is a serialized pipes.v1.NetfileBody: network id (32 random bytes),
// name, gateways ("host:port"), bootstrap flag, Argon2id parameters (salt =
// network id, time, memory, threads), the secret verifier, creation time,
// revision and the admin's Ed25519 public key. signature is the admin key's
// Ed25519 signature over "pipes/v1 netfile" || 0x00 || body. The netfile is
// self-signed: the signature detects alteration and truncation, and later
// revisions of a network must carry the same admin key.
//
// # Secrets
//
// The network key is Argon2id(secret, salt = network id, time, memory,
// threads, 32 bytes). The verifier is HMAC-SHA256(network key,
// "pipes/v1 secret verifier"). Neither the secret nor the key is in the
// file; the verifier lets a node tell a right secret from a wrong one.
package netfile

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
	"google.golang.org/protobuf/proto"

	"github.com/pipesnet/pipes/internal/atomicfile"
	"github.com/pipesnet/pipes/internal/identity"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

// Magic starts every netfile.
const Magic = "PIPESNET"

// Format is the netfile format version written by this package.
const Format = 1

// signContext is the signature context of netfiles.
const signContext = "pipes/v1 netfile"

const verifierLabel = "pipes/v1 secret verifier"

// Limits.
const (
	MaxNameLen    = 128
	MaxGateways   = 64
	maxFileSize   = 64 << 10
	maxGatewayLen = 256
	minMemoryKiB  = 8 << 10
	maxMemoryKiB  = 1 << 20
	maxTime       = 16
	maxThreads    = 64
)

// Sentinel errors, wrapped by Parse and Load.
var (
	ErrNotNetfile        = errors.New("not a netfile")
	ErrUnsupportedFormat = errors.New("unsupported netfile format")
	ErrBadSignature      = errors.New("signature does not verify: the file was altered or truncated")
	ErrMalformed         = errors.New("malformed netfile")
)

// KDFParams are Argon2id parameters.
type KDFParams struct {
	Time      uint32
	MemoryKiB uint32
	Threads   uint8
}

// DefaultKDF is RFC 9106's second recommended setting: 3 passes, 64 MiB,
// 4 lanes.
var DefaultKDF = KDFParams{Time: 3, MemoryKiB: 64 << 10, Threads: 4}

// TestKDF is the cheapest accepted setting, for tests and demos.
var TestKDF = KDFParams{Time: 1, MemoryKiB: minMemoryKiB, Threads: 1}

func (k KDFParams) check() error {
	if k.Time < 1 || k.Time > maxTime || k.MemoryKiB < minMemoryKiB || k.MemoryKiB > maxMemoryKiB ||
		k.Threads < 1 || k.Threads > maxThreads {
		return fmt.Errorf("%w: Argon2id parameters out of range (time 1..%d, memory %d..%d KiB, threads 1..%d)",
			ErrMalformed, maxTime, minMemoryKiB, maxMemoryKiB, maxThreads)
	}
	return nil
}

// Spec describes a network to create.
type Spec struct {
	Name      string
	Secret    string
	Gateways  []string
	Bootstrap bool
	KDF       KDFParams // zero: DefaultKDF
}

// Netfile is a parsed, verified netfile.
type Netfile struct {
	ID        [32]byte
	Name      string
	Gateways  []string
	Bootstrap bool
	KDF       KDFParams
	Salt      []byte
	Verifier  []byte
	Created   time.Time
	Revision  uint64
	AdminKey  ed25519.PublicKey
	Raw       []byte // the exact file bytes
}

// Create writes a new netfile for spec, signed by admin, to path (mode
// 0644, atomically). It refuses to overwrite an existing file.
func Create(path string, spec Spec, admin *identity.KeyPair) (*Netfile, error) {
	if spec.KDF == (KDFParams{}) {
		spec.KDF = DefaultKDF
	}
	if err := checkSpec(spec); err != nil {
		return nil, err
	}
	var id [32]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, err
	}
	body := &pb.NetfileBody{
		Format:      Format,
		NetworkId:   id[:],
		Name:        spec.Name,
		Gateways:    spec.Gateways,
		Bootstrap:   spec.Bootstrap,
		Kdf:         &pb.KDFParams{Salt: id[:], Time: spec.KDF.Time, MemoryKib: spec.KDF.MemoryKiB, Threads: uint32(spec.KDF.Threads)},
		CreatedUnix: time.Now().Unix(),
		Revision:    1,
		AdminKey:    admin.Public,
	}
	key := deriveKey(spec.Secret, id[:], spec.KDF)
	body.Verifier = verifier(key)
	s, err := identity.SignProto(admin, signContext, body)
	if err != nil {
		return nil, err
	}
	enc, err := proto.MarshalOptions{Deterministic: true}.Marshal(s)
	if err != nil {
		return nil, err
	}
	raw := append([]byte(Magic+string(rune(Format))), enc...)
	if err := atomicfile.Create(path, raw, 0o644); err != nil {
		return nil, fmt.Errorf("netfile: %w", err)
	}
	return Parse(raw)
}

func checkSpec(s Spec) error {
	if s.Name == "" || len(s.Name) > MaxNameLen || !utf8.ValidString(s.Name) {
		return fmt.Errorf("netfile: network name must be 1 to %d bytes of UTF-8", MaxNameLen)
	}
	if s.Secret == "" {
		return errors.New("netfile: the network secret is empty")
	}
	if len(s.Gateways) > MaxGateways {
		return fmt.Errorf("netfile: at most %d gateways", MaxGateways)
	}
	for _, g := range s.Gateways {
		if err := checkGateway(g); err != nil {
			return fmt.Errorf("netfile: %w", err)
		}
	}
	return s.KDF.check()
}

func checkGateway(g string) error {
	host, port, err := net.SplitHostPort(g)
	if err != nil || host == "" || len(g) > maxGatewayLen {
		return fmt.Errorf("gateway %q is not host:port", g)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("gateway %q: port must be 1..65535", g)
	}
	return nil
}

// Load reads and verifies the netfile at path. Errors name the file.
func Load(path string) (*Netfile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("netfile %s: %w", path, err)
	}
	defer f.Close()
	data := make([]byte, maxFileSize+1)
	n, err := readFull(f, data)
	if err != nil {
		return nil, fmt.Errorf("netfile %s: %w", path, err)
	}
	if n > maxFileSize {
		return nil, fmt.Errorf("netfile %s: %w: larger than %d bytes", path, ErrMalformed, maxFileSize)
	}
	nf, err := Parse(data[:n])
	if err != nil {
		return nil, fmt.Errorf("netfile %s: %w", path, err)
	}
	return nf, nil
}

func readFull(f *os.File, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := f.Read(buf[n:])
		n += m
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				return n, err
			}
			return n, nil // io.EOF or a read error: parse what was read
		}
	}
	return n, nil
}

// Parse verifies and decodes netfile bytes.
func Parse(data []byte) (*Netfile, error) {
	if len(data) < len(Magic)+1 || string(data[:len(Magic)]) != Magic {
		return nil, ErrNotNetfile
	}
	if v := data[len(Magic)]; v != Format {
		return nil, fmt.Errorf("%w: version %d, this software reads %d", ErrUnsupportedFormat, v, Format)
	}
	var s pb.Signed
	if err := proto.Unmarshal(data[len(Magic)+1:], &s); err != nil {
		return nil, fmt.Errorf("%w: %v (truncated?)", ErrMalformed, err)
	}
	var body pb.NetfileBody
	if err := proto.Unmarshal(s.Body, &body); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if len(body.AdminKey) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: admin key of %d bytes (truncated?)", ErrMalformed, len(body.AdminKey))
	}
	if !identity.Verify(body.AdminKey, signContext, s.Body, s.Signature) {
		return nil, ErrBadSignature
	}
	if body.Format != Format {
		return nil, fmt.Errorf("%w: body format %d", ErrUnsupportedFormat, body.Format)
	}
	if len(body.NetworkId) != 32 || len(body.Verifier) != sha256.Size || body.Kdf == nil {
		return nil, fmt.Errorf("%w: missing network id, verifier or KDF parameters", ErrMalformed)
	}
	if body.Kdf.Threads > maxThreads {
		return nil, fmt.Errorf("%w: too many Argon2id threads", ErrMalformed)
	}
	kdf := KDFParams{Time: body.Kdf.Time, MemoryKiB: body.Kdf.MemoryKib, Threads: uint8(body.Kdf.Threads)}
	if err := kdf.check(); err != nil {
		return nil, err
	}
	if len(body.Kdf.Salt) < 16 || len(body.Kdf.Salt) > 64 {
		return nil, fmt.Errorf("%w: salt of %d bytes", ErrMalformed, len(body.Kdf.Salt))
	}
	spec := Spec{Name: body.Name, Secret: "x", Gateways: body.Gateways, KDF: kdf}
	if err := checkSpec(spec); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return &Netfile{
		ID:        [32]byte(body.NetworkId),
		Name:      body.Name,
		Gateways:  body.Gateways,
		Bootstrap: body.Bootstrap,
		KDF:       kdf,
		Salt:      body.Kdf.Salt,
		Verifier:  body.Verifier,
		Created:   time.Unix(body.CreatedUnix, 0).UTC(),
		Revision:  body.Revision,
		AdminKey:  ed25519.PublicKey(body.AdminKey),
		Raw:       bytes.Clone(data),
	}, nil
}

func deriveKey(secret string, salt []byte, k KDFParams) [32]byte {
	return [32]byte(argon2.IDKey([]byte(secret), salt, k.Time, k.MemoryKiB, k.Threads, 32))
}

func verifier(key [32]byte) []byte {
	m := hmac.New(sha256.New, key[:])
	m.Write([]byte(verifierLabel))
	return m.Sum(nil)
}

// DeriveKey turns secret into the network key (slow by design).
func (n *Netfile) DeriveKey(secret string) [32]byte { return deriveKey(secret, n.Salt, n.KDF) }

// CheckKey reports, in constant time, whether key matches the verifier.
func (n *Netfile) CheckKey(key [32]byte) bool { return hmac.Equal(verifier(key), n.Verifier) }

// Unlock derives the key of secret and checks it.
func (n *Netfile) Unlock(secret string) ([32]byte, bool) {
	k := n.DeriveKey(secret)
	if !n.CheckKey(k) {
		return [32]byte{}, false
	}
	return k, true
}
