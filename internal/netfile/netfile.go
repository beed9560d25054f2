// Package netfile reads and writes network definition files ("netfiles")
// and turns network secrets into network keys.
//
// A netfile defines a private network: its id, name, gateways and the
// parameters that turn the network secret into the network key. It is
// handed to members together with the secret, which it never contains.
//
// # Format (version 1)
//
//	offset  size  content
//	0       8     magic, the ASCII bytes "PIPESNET"
//	8       1     format version, 1
//	9       rest  envelope: protobuf pipes.v1.Signed { body = 1, signature = 2 }
//
// The envelope is exactly the deterministic protobuf encoding of Signed:
// 0x0a, varint length, body, 0x12, 0x40, the 64-byte signature, and
// nothing else (no other or repeated fields, no trailing bytes). A whole
// netfile is at most 64 KiB.
//
// body is a serialized pipes.v1.NetfileBody:
//
//	field             content
//	format (1)        1
//	network_id (2)    32 random bytes
//	name (3)          1 to 128 bytes of UTF-8
//	gateways (4)      0 to 64 "host:port", each at most 256 bytes, with a
//	                  non-empty host and a decimal port 1..65535
//	bootstrap (5)     whether this is a bootstrap network
//	kdf (6)           pipes.v1.KDFParams: salt (16 to 64 bytes; writers
//	                  use the network id), time 1..16, memory_kib
//	                  8192..1048576 (8 MiB to 1 GiB), threads 1..64
//	verifier (7)      32 bytes: HMAC-SHA256(network key,
//	                  "pipes/v1 secret verifier")
//	created_unix (8)  creation time, seconds since 1970
//	revision (9)      1 for a new network, higher when the admin re-issues
//	admin_key (10)    the admin's Ed25519 public key, 32 bytes
//
// Writers encode body deterministically; readers use the bytes exactly as
// stored and ignore unknown body fields (they are covered by the
// signature). signature is the admin key's Ed25519 signature over
// "pipes/v1 netfile" || 0x00 || body (identity.Sign). The netfile is
// self-signed by admin_key: the signature detects alteration and
// truncation, and a later revision of a network must carry the same admin
// key (checked by whoever holds the earlier revision).
//
// A reader checks, in order: the magic (ErrNotNetfile), the version byte
// (ErrUnsupportedFormat), the envelope and the body decoding and the admin
// key length (ErrMalformed), the signature (ErrBadSignature), the body's
// format field (ErrUnsupportedFormat), then the remaining fields and limits
// above (ErrMalformed). The limits on the Argon2id costs keep a hostile
// file from making a reader allocate unbounded memory or spin for long.
//
// # Secrets
//
// The network key is Argon2id(secret, salt, time, memory, threads, 32
// bytes), with the parameters of kdf. The verifier is HMAC-SHA256(network
// key, "pipes/v1 secret verifier"): it tells a right secret from a wrong
// one without revealing the key. Neither the secret nor the key is written
// to the file.
package netfile

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"
)

// Magic starts every netfile.
const Magic = "PIPESNET"

// Format is the netfile format version written and read by this package:
// the byte after Magic, and NetfileBody.format.
const Format = 1

// signContext is the signature context of netfiles.
const signContext = "pipes/v1 netfile"

// verifierLabel is what the network key MACs to make the verifier.
const verifierLabel = "pipes/v1 secret verifier"

// Limits on netfile fields.
const (
	MaxNameLen    = 128 // bytes of UTF-8 in the network name
	MaxGateways   = 64  // gateways per netfile
	MaxGatewayLen = 256 // bytes of one "host:port"
	MaxFileSize   = 64 << 10
)

// Limits on Argon2id parameters, enforced by Create and Parse.
const (
	MinKDFTime      = 1
	MaxKDFTime      = 16
	MinKDFMemoryKiB = 8 << 10 // 8 MiB
	MaxKDFMemoryKiB = 1 << 20 // 1 GiB
	MinKDFThreads   = 1
	MaxKDFThreads   = 64
)

const (
	minSaltLen = 16
	maxSaltLen = 64
)

// Sentinel errors, wrapped by Parse and Load (test with errors.Is).
var (
	// ErrNotNetfile: the data does not start with Magic.
	ErrNotNetfile = errors.New("not a netfile")
	// ErrUnsupportedFormat: a format version this package does not read.
	ErrUnsupportedFormat = errors.New("unsupported netfile format")
	// ErrBadSignature: the admin signature does not verify.
	ErrBadSignature = errors.New("signature does not verify: the file was altered or truncated")
	// ErrMalformed: a decoding failure, a wrong length or a field out of
	// bounds.
	ErrMalformed = errors.New("malformed netfile")
)

// KDFParams are Argon2id parameters.
type KDFParams struct {
	Time      uint32 // passes over memory
	MemoryKiB uint32 // memory in KiB
	Threads   uint8  // lanes
}

// DefaultKDF is RFC 9106's second recommended setting: 3 passes over
// 64 MiB with 4 lanes.
var DefaultKDF = KDFParams{Time: 3, MemoryKiB: 64 << 10, Threads: 4}

// TestKDF is the cheapest accepted setting (1 pass, 8 MiB, 1 lane), for
// tests and demos only.
var TestKDF = KDFParams{Time: MinKDFTime, MemoryKiB: MinKDFMemoryKiB, Threads: MinKDFThreads}

// Check reports whether k is within the accepted limits.
func (k KDFParams) Check() error {
	if k.Time < MinKDFTime || k.Time > MaxKDFTime || k.MemoryKiB < MinKDFMemoryKiB || k.MemoryKiB > MaxKDFMemoryKiB ||
		k.Threads < MinKDFThreads || k.Threads > MaxKDFThreads {
		return fmt.Errorf("Argon2id parameters time %d, memory %d KiB, threads %d out of range (time %d..%d, memory %d..%d KiB, threads %d..%d)",
			k.Time, k.MemoryKiB, k.Threads, MinKDFTime, MaxKDFTime, MinKDFMemoryKiB, MaxKDFMemoryKiB, MinKDFThreads, MaxKDFThreads)
	}
	return nil
}

// Spec describes a network to create.
type Spec struct {
	Name      string
	Secret    string // never written; only its verifier is
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
