package history

import (
	"crypto/rand"
	"fmt"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/store"
)

// Kind names a table of small sealed records kept per node and pipeline
// (definitions, pipeline keys, tombstones) or per node and file
// (files to fetch, the owners of stored files).
type Kind byte

// SealedID is what a sealed record is kept by: a pipeline (KindDef,
// KindSecret, KindTomb) or a file's content root (KindFetch, KindOwner).
// Both are 32 bytes in the record's key.
type SealedID interface {
	ids.Pipeline | ids.Content
}

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

// SaveSealed stores val for node and id (a pipeline or a file root) in
// the table of kind, encrypted with key (the record's key is the
// associated data).
func SaveSealed[ID SealedID](db *store.DB, kind Kind, node ids.Node, id ID, key [32]byte, val []byte) error {
	aead, _ := chacha20poly1305.New(key[:])
	k := store.Key(byte(kind), node[:], id[:])
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(val)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	if err := db.Set(k, aead.Seal(nonce, nonce, val, k)); err != nil {
		return fmt.Errorf("history: save %s: %w", kind, err)
	}
	return nil
}

// DeleteSealed removes the record of id in the table of kind.
func DeleteSealed[ID SealedID](db *store.DB, kind Kind, node ids.Node, id ID) error {
	if err := db.Delete(store.Key(byte(kind), node[:], id[:])); err != nil {
		return fmt.Errorf("history: delete %s: %w", kind, err)
	}
	return nil
}

// LoadSealed returns the records SaveSealed stored for node in the table
// of kind, by pipeline or file root (ID says which). A record that does
// not decrypt is reported as an error wrapping ErrDamaged.
func LoadSealed[ID SealedID](db *store.DB, kind Kind, node ids.Node, key [32]byte) (map[ID][]byte, error) {
	aead, _ := chacha20poly1305.New(key[:])
	out := map[ID][]byte{}
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
		out[ID(k[len(prefix):])] = pt
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("history: load %s: %w", kind, err)
	}
	return out, nil
}
