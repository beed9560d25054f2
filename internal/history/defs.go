package history

import (
	"crypto/rand"
	"fmt"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/pipesnet/pipes/internal/store"
)

// Kind names a table of small sealed records kept per node and pipeline:
// definitions, pipeline keys, tombstones.
type Kind byte

// Kinds of sealed records.
const (
	KindDef    Kind = tDef
	KindSecret Kind = tSecret
	KindTomb   Kind = tTomb
	KindFetch  Kind = tFetch // files being fetched, by root
	KindOwner  Kind = tOwner // the pipeline of each stored file, by root
)

func (k Kind) String() string {
	switch k {
	case KindDef:
		return "definition"
	case KindSecret:
		return "pipeline key"
	case KindTomb:
		return "tombstone"
	case KindFetch:
		return "file to fetch"
	case KindOwner:
		return "file owner"
	}
	return "record"
}

// SaveSealed stores val for node and pipeline pipe in the table of kind,
// encrypted with key (the record's key is the associated data).
func SaveSealed(db *store.DB, kind Kind, node, pipe, key [32]byte, val []byte) error {
	aead, _ := chacha20poly1305.New(key[:])
	k := store.Key(byte(kind), node[:], pipe[:])
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(val)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	if err := db.Set(k, aead.Seal(nonce, nonce, val, k)); err != nil {
		return fmt.Errorf("history: save %s: %w", kind, err)
	}
	return nil
}

// DeleteSealed removes the record of pipe in the table of kind.
func DeleteSealed(db *store.DB, kind Kind, node, pipe [32]byte) error {
	if err := db.Delete(store.Key(byte(kind), node[:], pipe[:])); err != nil {
		return fmt.Errorf("history: delete %s: %w", kind, err)
	}
	return nil
}

// LoadSealed returns the records SaveSealed stored for node in the table
// of kind, by pipeline. A record that does not decrypt is reported as an
// error wrapping ErrDamaged.
func LoadSealed(db *store.DB, kind Kind, node, key [32]byte) (map[[32]byte][]byte, error) {
	aead, _ := chacha20poly1305.New(key[:])
	out := map[[32]byte][]byte{}
	prefix := store.Key(byte(kind), node[:])
	err := db.Scan(prefix, func(k, v []byte) error {
		n := aead.NonceSize()
		if len(v) < n || len(k) != len(prefix)+32 {
			return fmt.Errorf("%w: %s", ErrDamaged, kind)
		}
		pt, err := aead.Open(nil, v[:n], v[n:], k)
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ErrDamaged, kind, err)
		}
		out[[32]byte(k[len(prefix):])] = pt
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("history: load %s: %w", kind, err)
	}
	return out, nil
}
