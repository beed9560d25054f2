package history

import (
	"crypto/rand"
	"fmt"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/pipesnet/pipes/internal/store"
)

// SaveDef stores the encoded definition of pipeline pipe for node,
// encrypted with key.
func SaveDef(db *store.DB, node, pipe, key [32]byte, def []byte) error {
	aead, _ := chacha20poly1305.New(key[:])
	k := store.Key(tDef, node[:], pipe[:])
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(def)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	if err := db.Set(k, aead.Seal(nonce, nonce, def, k)); err != nil {
		return fmt.Errorf("history: save definition: %w", err)
	}
	return nil
}

// LoadDefs returns the definitions SaveDef stored for node. A record that
// does not decrypt is reported as an error wrapping ErrDamaged.
func LoadDefs(db *store.DB, node, key [32]byte) ([][]byte, error) {
	aead, _ := chacha20poly1305.New(key[:])
	var out [][]byte
	err := db.Scan(store.Key(tDef, node[:]), func(k, v []byte) error {
		n := aead.NonceSize()
		if len(v) < n {
			return fmt.Errorf("%w: definition", ErrDamaged)
		}
		pt, err := aead.Open(nil, v[:n], v[n:], k)
		if err != nil {
			return fmt.Errorf("%w: definition: %v", ErrDamaged, err)
		}
		out = append(out, pt)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("history: load definitions: %w", err)
	}
	return out, nil
}
