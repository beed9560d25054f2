package node

import (
	"crypto/hpke"
	"fmt"
	"os"

	"github.com/pipesnet/pipes/internal/blob"
	"github.com/pipesnet/pipes/internal/pipeline"
)

// Reader reads the store of a node that is not started: a read-only
// engine (the stored definitions, keys and histories, and no goroutine
// that needs the network) and, if the node has one, its blob store.
type Reader struct {
	eng   *pipeline.Engine
	blobs *blob.Store
}

// OpenReader opens a Reader on what cfg names: Key, Cert, Network, DB,
// StoreKey, BlobDir and Logger; the rest is not used. It creates nothing
// on disk: the blob store is opened only if its directory exists, and the
// node's encryption key file is not read (a read-only engine opens no
// sealed message).
func OpenReader(cfg Config) (*Reader, error) {
	if cfg.Key == nil || cfg.Cert == nil || cfg.DB == nil {
		return nil, fmt.Errorf("node: Key, Cert and DB are required")
	}
	hkey, err := hpke.MLKEM768X25519().GenerateKey() // throwaway: see above
	if err != nil {
		return nil, fmt.Errorf("node: encryption key: %w", err)
	}
	r := &Reader{}
	if fi, err := os.Stat(cfg.BlobDir); err == nil && fi.IsDir() {
		if r.blobs, err = openBlobs(cfg); err != nil {
			return nil, fmt.Errorf("node: file store: %w", err)
		}
	}
	pcfg := pipeline.Config{Network: cfg.Network, Key: cfg.Key, Cert: cfg.Cert, HPKE: hkey, Host: &meshHost{},
		Logger: cfg.Logger, DB: cfg.DB, StoreKey: cfg.StoreKey, Blobs: r.blobs, ReadOnly: true}
	if r.eng, err = pipeline.New(pcfg); err != nil {
		r.Close()
		return nil, fmt.Errorf("node: %w", err)
	}
	return r, nil
}

// Engine returns the read-only engine.
func (r *Reader) Engine() *pipeline.Engine { return r.eng }

// Close closes the engine, then the blob store.
func (r *Reader) Close() {
	if r.eng != nil {
		r.eng.Close()
	}
	if r.blobs != nil {
		r.blobs.Close()
	}
}
