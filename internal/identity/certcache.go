package identity

import (
	"crypto/sha256"
	"encoding/binary"
	"sync"

	"github.com/pipesnet/pipes/internal/wire/pb"
)

// CertCache remembers certificates already verified, keyed by the hash of
// their exact signed bytes, so a certificate that comes with every message
// of a node is checked once. It is safe for concurrent use; the zero value
// is ready. A nil *CertCache parses without caching.
type CertCache struct {
	mu sync.Mutex
	m  map[[32]byte]*Cert
}

// maxCachedCerts bounds the cache; when full it starts over.
const maxCachedCerts = 4096

// Parse is ParseCert through the cache.
func (c *CertCache) Parse(s *pb.Signed) (*Cert, error) {
	if c == nil || s == nil {
		return ParseCert(s)
	}
	h := sha256.New()
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(s.Body)))
	h.Write(n[:]) // length first: no two (body, signature) pairs share a key
	h.Write(s.Body)
	h.Write(s.Signature)
	var k [32]byte
	h.Sum(k[:0])
	c.mu.Lock()
	cert, ok := c.m[k]
	c.mu.Unlock()
	if ok {
		return cert, nil
	}
	cert, err := ParseCert(s)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxCachedCerts {
		c.m = map[[32]byte]*Cert{}
	}
	c.m[k] = cert
	return cert, nil
}
