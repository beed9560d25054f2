package pipes

import (
	"crypto/hpke"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"

	"github.com/pipesnet/pipes/internal/blob"
	"github.com/pipesnet/pipes/internal/history"
	"github.com/pipesnet/pipes/internal/keys"

	"github.com/pipesnet/pipes/internal/pipeline"
)

// readEngine returns the engine that reads the node's stored pipelines:
// the running one, or, when the node is not started, a read-only engine
// opened on first use (the stored definitions, keys and histories, and no
// goroutine that needs the network). Start closes the read-only engine
// once its own runs, Shutdown and Platform.Close close it too.
func (n *Node) readEngine() (*pipeline.Engine, error) {
	if e := n.engineOrNil(); e != nil {
		return e, nil
	}
	n.readerMu.Lock()
	defer n.readerMu.Unlock()
	n.mu.Lock()
	e, r := n.mu.engine, n.mu.reader
	n.mu.Unlock()
	switch {
	case e != nil:
		return e, nil
	case r != nil:
		return r, nil
	}
	n.p.mu.Lock()
	closed := n.p.mu.closed
	n.p.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	nw, nkey, key, cert, err := n.keys()
	if err != nil {
		return nil, err
	}
	// The read-only engine opens no sealed message: a throwaway key, so
	// that reading never creates the node's key file (Start does).
	hkey, err := hpke.MLKEM768X25519().GenerateKey()
	if err != nil {
		return nil, fmt.Errorf("pipes: encryption key: %w", err)
	}
	skey := storeKey(nkey, nw.id)
	// The files of file packets read from the node's blob store, if it
	// has one: opened here only when it exists, so that reading creates
	// nothing on disk.
	var blobs *blob.Store
	if dir := n.blobDir(); dirExists(dir) {
		if blobs, err = blob.Open(dir, history.DeriveKey(skey, keys.Blobs, nil)); err != nil {
			return nil, fmt.Errorf("pipes: file store: %w", err)
		}
	}
	cfg := pipeline.Config{Network: nw.id, Key: key, Cert: cert, HPKE: hkey, Host: &meshHost{},
		Logger: n.logger(), DB: n.p.db, StoreKey: skey, ReadOnly: true}
	if blobs != nil {
		cfg.Blobs = blobs
	}
	r, err = pipeline.New(cfg)
	if err != nil {
		if blobs != nil {
			blobs.Close()
		}
		return nil, fmt.Errorf("pipes: %w", err)
	}
	n.mu.Lock()
	n.mu.reader, n.mu.readerBlobs = r, blobs
	n.mu.Unlock()
	return r, nil
}

// closeReader closes the read-only engine, if open.
func (n *Node) closeReader() {
	n.readerMu.Lock()
	defer n.readerMu.Unlock()
	n.mu.Lock()
	r, blobs := n.mu.reader, n.mu.readerBlobs
	n.mu.reader, n.mu.readerBlobs = nil, nil
	n.mu.Unlock()
	if r != nil {
		r.Close()
	}
	if blobs != nil {
		blobs.Close()
	}
}

// blobDir is the directory of the node's blob store.
func (n *Node) blobDir() string {
	return filepath.Join(n.p.dir, "blobs", hex.EncodeToString(n.id[:]))
}

func dirExists(dir string) bool {
	fi, err := os.Stat(dir)
	return err == nil && fi.IsDir()
}
