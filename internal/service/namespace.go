package service

import (
	"github.com/pipesnet/pipes/internal/store"
)

// StoreNamespace returns the namespace of db under prefix: each key a
// service uses is stored as prefix followed by the key. A nil db makes a
// namespace whose every call fails with ErrUnavailable.
func StoreNamespace(db *store.DB, prefix []byte) Namespace {
	if db == nil {
		return noStore{}
	}
	return &namespace{db: db, prefix: append([]byte{}, prefix...)}
}

type namespace struct {
	db     *store.DB
	prefix []byte
}

func (n *namespace) key(k []byte) []byte {
	return append(append(make([]byte, 0, len(n.prefix)+len(k)), n.prefix...), k...)
}

func (n *namespace) Get(key []byte) ([]byte, error) { return n.db.Get(n.key(key)) }
func (n *namespace) Set(key, value []byte) error    { return n.db.Set(n.key(key), value) }
func (n *namespace) Delete(key []byte) error        { return n.db.Delete(n.key(key)) }

func (n *namespace) Scan(prefix []byte, fn func(key, value []byte) error) error {
	return n.db.Scan(n.key(prefix), func(k, v []byte) error { return fn(k[len(n.prefix):], v) })
}

type noStore struct{}

func (noStore) Get([]byte) ([]byte, error)                       { return nil, ErrUnavailable }
func (noStore) Set(_, _ []byte) error                            { return ErrUnavailable }
func (noStore) Delete([]byte) error                              { return ErrUnavailable }
func (noStore) Scan([]byte, func(key, value []byte) error) error { return ErrUnavailable }
