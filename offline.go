package pipes

import (
	"encoding/hex"
	"path/filepath"

	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/node"
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
	e, r := n.mu.run.Engine(), n.mu.reader
	n.mu.Unlock()
	switch {
	case e != nil:
		return e, nil
	case r != nil:
		return r.Engine(), nil
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
	r, err = node.OpenReader(node.Config{Key: key, Cert: cert, Network: ids.Network(nw.id), DB: n.p.db,
		StoreKey: storeKey(nkey, nw.id), BlobDir: n.blobDir(), Logger: n.logger()})
	if err != nil {
		return nil, mapErr(err, "")
	}
	n.mu.Lock()
	n.mu.reader = r
	n.mu.Unlock()
	return r.Engine(), nil
}

// closeReader closes the read-only engine, if open.
func (n *Node) closeReader() {
	n.readerMu.Lock()
	defer n.readerMu.Unlock()
	n.mu.Lock()
	r := n.mu.reader
	n.mu.reader = nil
	n.mu.Unlock()
	if r != nil {
		r.Close()
	}
}

// blobDir is the directory of the node's blob store.
func (n *Node) blobDir() string {
	return filepath.Join(n.p.dir, "blobs", hex.EncodeToString(n.id[:]))
}
