package netfile

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"strconv"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/pipesnet/pipes/internal/atomicfile"
	"github.com/pipesnet/pipes/internal/identity"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

// Create writes a new netfile for spec, signed by admin, to path: mode
// 0644, atomically. It refuses to overwrite an existing file with an error
// wrapping fs.ErrExist.
func Create(path string, spec Spec, admin *identity.KeyPair) (*Netfile, error) {
	raw, err := Encode(spec, admin)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.Create(path, raw, 0o644); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("netfile %s: %w; refusing to overwrite it", path, fs.ErrExist)
		}
		return nil, fmt.Errorf("netfile: %w", err)
	}
	nf, err := Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("netfile %s: %w", path, err)
	}
	return nf, nil
}

// Encode makes the bytes of a new netfile for spec (revision 1, a new
// random network id, created now), signed by admin. It derives the network
// key once (slow by design) to compute the verifier.
func Encode(spec Spec, admin *identity.KeyPair) ([]byte, error) {
	if spec.KDF == (KDFParams{}) {
		spec.KDF = DefaultKDF
	}
	if err := checkSpec(spec); err != nil {
		return nil, fmt.Errorf("netfile: %w", err)
	}
	if admin == nil || len(admin.Public) != ed25519.PublicKeySize || len(admin.Private) != ed25519.PrivateKeySize {
		return nil, errors.New("netfile: the admin key is not a valid Ed25519 key pair")
	}
	var id [32]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, fmt.Errorf("netfile: network id: %w", err)
	}
	key := deriveKey(spec.Secret, id[:], spec.KDF)
	body := &pb.NetfileBody{
		Format:    Format,
		NetworkId: id[:],
		Name:      spec.Name,
		Gateways:  spec.Gateways,
		Bootstrap: spec.Bootstrap,
		Kdf: &pb.KDFParams{Salt: id[:], Time: spec.KDF.Time,
			MemoryKib: spec.KDF.MemoryKiB, Threads: uint32(spec.KDF.Threads)},
		Verifier:    verifier(key),
		CreatedUnix: time.Now().Unix(),
		Revision:    1,
		AdminKey:    admin.Public,
	}
	s, err := identity.SignProto(admin, signContext, body)
	if err != nil {
		return nil, fmt.Errorf("netfile: admin key: %w", err)
	}
	enc, err := proto.MarshalOptions{Deterministic: true}.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("netfile: encode: %w", err)
	}
	raw := make([]byte, 0, len(Magic)+1+len(enc))
	raw = append(raw, Magic...)
	raw = append(raw, Format)
	return append(raw, enc...), nil
}

func checkSpec(s Spec) error {
	if s.Secret == "" {
		return errors.New("the network secret is empty")
	}
	if err := checkFields(s.Name, s.Gateways); err != nil {
		return err
	}
	return s.KDF.Check()
}

// checkFields checks the name and gateways, for Create and Parse alike.
func checkFields(name string, gateways []string) error {
	if name == "" || len(name) > MaxNameLen || !utf8.ValidString(name) {
		return fmt.Errorf("the network name must be 1 to %d bytes of UTF-8", MaxNameLen)
	}
	if len(gateways) > MaxGateways {
		return fmt.Errorf("%d gateways, at most %d allowed", len(gateways), MaxGateways)
	}
	for _, g := range gateways {
		if err := checkGateway(g); err != nil {
			return err
		}
	}
	return nil
}

func checkGateway(g string) error {
	if len(g) > MaxGatewayLen {
		return fmt.Errorf("gateway %.40q...: longer than %d bytes", g, MaxGatewayLen)
	}
	host, port, err := net.SplitHostPort(g)
	if err != nil {
		return fmt.Errorf("gateway %q is not host:port: %w", g, err)
	}
	if host == "" {
		return fmt.Errorf("gateway %q has no host", g)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("gateway %q: the port must be a number from 1 to 65535", g)
	}
	return nil
}
