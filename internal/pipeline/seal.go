package pipeline

import (
	"crypto/hpke"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/pipesnet/pipes/internal/atomicfile"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

// End-to-end encryption between two nodes. A sender opens a session to a
// receiver with HPKE (RFC 9180; KEM ML-KEM-768+X25519, KDF HKDF-SHA256,
// export-only) and exports a 32-byte key from it; each message is sealed
// with ChaCha20-Poly1305 under that key with the message counter as nonce.
// Every message carries the session's encapsulated key, so a receiver that
// missed the first message (or restarted) can still open the next one; it
// decapsulates once per session and caches the key. Sessions are renewed
// after sessionMessages messages or sessionAge.

var (
	kem  = hpke.MLKEM768X25519()
	kdf  = hpke.HKDFSHA256()
	aead = hpke.ExportOnly()
)

const (
	sealInfo        = "pipes/v1 sealed"
	exportLabel     = "pipes/v1 session key"
	sessionMessages = 1 << 20
	sessionAge      = 10 * time.Minute
	maxRecvSessions = 4096
)

// ErrCannotOpen is returned for a sealed message that does not decrypt.
var ErrCannotOpen = errors.New("pipeline: sealed message does not open")

// LoadOrCreateKey reads the node's HPKE private key from path, or creates
// it (mode 0600) if the file does not exist.
func LoadOrCreateKey(path string) (hpke.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		st, err := os.Stat(path)
		if err == nil && st.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("%s is readable by others: run chmod 600 on it", path)
		}
		k, err := kem.NewPrivateKey(b)
		if err != nil {
			return nil, fmt.Errorf("HPKE key %s: %w", path, err)
		}
		return k, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	k, err := kem.GenerateKey()
	if err != nil {
		return nil, err
	}
	raw, err := k.Bytes()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if err := atomicfile.Write(path, raw, 0o600); err != nil {
		return nil, err
	}
	return k, nil
}

// info binds a session to its two ends.
func info(src, dst ids.Node) []byte {
	b := make([]byte, 0, len(sealInfo)+64)
	b = append(b, sealInfo...)
	b = append(b, src[:]...)
	return append(b, dst[:]...)
}

func aad(src, dst ids.Node, encHash [32]byte, counter uint64) []byte {
	b := make([]byte, 0, 3*32+8)
	b = append(b, src[:]...)
	b = append(b, dst[:]...)
	b = append(b, encHash[:]...)
	return binary.BigEndian.AppendUint64(b, counter)
}

func nonce(counter uint64) []byte {
	n := make([]byte, chacha20poly1305.NonceSize)
	binary.BigEndian.PutUint64(n[4:], counter)
	return n
}

type sendSession struct {
	pub     [32]byte // hash of the receiver key the session was opened to
	enc     []byte
	encHash [32]byte
	key     []byte
	counter uint64
	created time.Time
}

// sealer keeps the sessions of one node.
type sealer struct {
	self ids.Node
	priv hpke.PrivateKey

	mu   sync.Mutex
	out  map[ids.Node]*sendSession // by receiver
	recv map[[32]byte][]byte       // session key by hash of enc
}

func newSealer(self ids.Node, priv hpke.PrivateKey) *sealer {
	return &sealer{self: self, priv: priv, out: map[ids.Node]*sendSession{}, recv: map[[32]byte][]byte{}}
}

// seal encrypts plaintext for dst, whose HPKE public key is pubBytes.
func (s *sealer) seal(dst ids.Node, pubBytes []byte, plaintext []byte) (*pb.Sealed, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.out[dst]
	pubHash := sha256.Sum256(pubBytes)
	if ss == nil || ss.pub != pubHash || ss.counter >= sessionMessages || time.Since(ss.created) > sessionAge {
		pub, err := kem.NewPublicKey(pubBytes)
		if err != nil {
			return nil, fmt.Errorf("pipeline: HPKE key of %x: %w", dst[:4], err)
		}
		enc, ctx, err := hpke.NewSender(pub, kdf, aead, info(s.self, dst))
		if err != nil {
			return nil, err
		}
		key, err := ctx.Export(exportLabel, chacha20poly1305.KeySize)
		if err != nil {
			return nil, err
		}
		ss = &sendSession{pub: pubHash, enc: enc, encHash: sha256.Sum256(enc), key: key, created: time.Now()}
		s.out[dst] = ss
	}
	c, err := chacha20poly1305.New(ss.key)
	if err != nil {
		return nil, err
	}
	ss.counter++
	ct := c.Seal(nil, nonce(ss.counter), plaintext, aad(s.self, dst, ss.encHash, ss.counter))
	return &pb.Sealed{Enc: ss.enc, Counter: ss.counter, Ciphertext: ct}, nil
}

// open decrypts a message that src sealed to the local node.
func (s *sealer) open(src ids.Node, m *pb.Sealed) ([]byte, error) {
	if m == nil || len(m.Enc) == 0 || len(m.Enc) > 4096 {
		return nil, ErrCannotOpen
	}
	h := sha256.Sum256(m.Enc)
	s.mu.Lock()
	key := s.recv[h]
	s.mu.Unlock()
	if key == nil {
		ctx, err := hpke.NewRecipient(m.Enc, s.priv, kdf, aead, info(src, s.self))
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrCannotOpen, err)
		}
		if key, err = ctx.Export(exportLabel, chacha20poly1305.KeySize); err != nil {
			return nil, err
		}
	}
	c, err := chacha20poly1305.New(key)
	if err != nil {
		return nil, err
	}
	pt, err := c.Open(nil, nonce(m.Counter), m.Ciphertext, aad(src, s.self, h, m.Counter))
	if err != nil {
		return nil, ErrCannotOpen
	}
	s.mu.Lock()
	if len(s.recv) >= maxRecvSessions {
		clear(s.recv)
	}
	s.recv[h] = key // cached only once a message opened with it
	s.mu.Unlock()
	return pt, nil
}
