package netfile

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/pipesnet/pipes/internal/identity"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

// Load reads and verifies the netfile at path. Its errors name the file
// and wrap Parse's sentinels, or the os error.
func Load(path string) (*Netfile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("netfile: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("netfile %s: %w", path, err)
	}
	nf, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("netfile %s: %w", path, err)
	}
	return nf, nil
}

// Parse verifies and decodes the bytes of a netfile (see the package
// documentation for the checks). It never panics; the returned Netfile
// holds its own copy of data in Raw.
func Parse(data []byte) (*Netfile, error) {
	if len(data) < len(Magic) || string(data[:len(Magic)]) != Magic {
		return nil, fmt.Errorf("%w: the data does not start with %q", ErrNotNetfile, Magic)
	}
	if len(data) == len(Magic) {
		return nil, fmt.Errorf("%w: truncated after the magic", ErrMalformed)
	}
	if v := data[len(Magic)]; v != Format {
		return nil, fmt.Errorf("%w: version %d, this software reads version %d", ErrUnsupportedFormat, v, Format)
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrMalformed, MaxFileSize)
	}
	s, err := decodeEnvelope(data[len(Magic)+1:])
	if err != nil {
		return nil, err
	}
	var body pb.NetfileBody
	if err := proto.Unmarshal(s.Body, &body); err != nil {
		return nil, fmt.Errorf("%w: body: %w", ErrMalformed, err)
	}
	if len(body.AdminKey) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: admin key of %d bytes, want %d", ErrMalformed, len(body.AdminKey), ed25519.PublicKeySize)
	}
	if !identity.Verify(body.AdminKey, signContext, s.Body, s.Signature) {
		return nil, ErrBadSignature
	}
	if body.Format != Format {
		return nil, fmt.Errorf("%w: body format %d, this software reads %d", ErrUnsupportedFormat, body.Format, Format)
	}
	kdf, err := checkBody(&body)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
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

// decodeEnvelope decodes the Signed envelope and insists that it is in the
// one encoding a writer makes, so that no byte of the file escapes the
// checks: appended, duplicated or unknown fields are refused.
func decodeEnvelope(enc []byte) (*pb.Signed, error) {
	var s pb.Signed
	if err := proto.Unmarshal(enc, &s); err != nil {
		return nil, fmt.Errorf("%w: envelope (truncated?): %w", ErrMalformed, err)
	}
	if len(s.ProtoReflect().GetUnknown()) != 0 {
		return nil, fmt.Errorf("%w: unknown fields in the envelope", ErrMalformed)
	}
	canon, err := proto.MarshalOptions{Deterministic: true}.Marshal(&s)
	if err != nil || !bytes.Equal(canon, enc) {
		return nil, fmt.Errorf("%w: the envelope is not in canonical form (extra or repeated fields)", ErrMalformed)
	}
	if len(s.Signature) != ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: signature of %d bytes, want %d (truncated?)", ErrMalformed, len(s.Signature), ed25519.SignatureSize)
	}
	return &s, nil
}

// checkBody checks the fields of a signed body and returns its KDF
// parameters.
func checkBody(b *pb.NetfileBody) (KDFParams, error) {
	if len(b.NetworkId) != 32 {
		return KDFParams{}, fmt.Errorf("network id of %d bytes, want 32", len(b.NetworkId))
	}
	if len(b.Verifier) != sha256.Size {
		return KDFParams{}, fmt.Errorf("verifier of %d bytes, want %d", len(b.Verifier), sha256.Size)
	}
	if b.Kdf == nil {
		return KDFParams{}, fmt.Errorf("no Argon2id parameters")
	}
	if b.Kdf.Threads > MaxKDFThreads { // before narrowing to uint8
		return KDFParams{}, fmt.Errorf("%d Argon2id threads, at most %d allowed", b.Kdf.Threads, MaxKDFThreads)
	}
	kdf := KDFParams{Time: b.Kdf.Time, MemoryKiB: b.Kdf.MemoryKib, Threads: uint8(b.Kdf.Threads)}
	if err := kdf.Check(); err != nil {
		return KDFParams{}, err
	}
	if n := len(b.Kdf.Salt); n < minSaltLen || n > maxSaltLen {
		return KDFParams{}, fmt.Errorf("salt of %d bytes, want %d to %d", n, minSaltLen, maxSaltLen)
	}
	if err := checkFields(b.Name, b.Gateways); err != nil {
		return KDFParams{}, err
	}
	return kdf, nil
}
