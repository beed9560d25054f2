package files

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pipesnet/pipes/internal/identity"
	"github.com/pipesnet/pipes/internal/ids"
)

// A holdings announcement (kinds.Holdings, docs/protocol.md "Holder
// announcements") says which files a node holds complete:
//
//	version 1 (1) | node key (32) | network id (32) | sequence (8) |
//	    count (2) | file ids (32 each, ascending) | signature (64)
//
// signed with the node key under HoldingsContext over every byte before
// the signature. A receiver checks that SHA-256 of the node key is the
// origin's node id (node ids are the hash of the node key, see
// identity.Cert.NodeID), that the network is its own and that the
// signature verifies; then it keeps, per node, the announcement of the
// highest sequence (each replaces the node's list whole) and ignores
// older ones. The sequence is the sender's clock in nanoseconds, or one
// more than its last when the clock did not move, so a restart needs no
// stored counter.
const (
	holdingsVersion = 1
	holdingsHeader  = 1 + 32 + 32 + 8 + 2
	// MaxHoldings is the most file ids one announcement carries; a node
	// that holds more announces the first MaxHoldings (in id order).
	MaxHoldings = 1024
	// HoldingsContext is the signature context of announcements.
	HoldingsContext = "pipes/v1 file holdings"
)

// Errors of announcements.
var (
	ErrForged    = errors.New("files: announcement not signed by its node")
	ErrOversize  = errors.New("files: announcement too large")
	ErrMalformed = errors.New("files: malformed announcement")
)

// holdings is a decoded, verified announcement.
type holdings struct {
	node  ids.Node
	seq   uint64
	files []ids.Content
}

// encodeHoldings signs an announcement of files (at most MaxHoldings of
// them, sorted) by key in network.
func encodeHoldings(key *identity.KeyPair, network [32]byte, seq uint64, files []ids.Content) []byte {
	files = files[:min(len(files), MaxHoldings)]
	b := make([]byte, 0, holdingsHeader+32*len(files)+ed25519.SignatureSize)
	b = append(b, holdingsVersion)
	b = append(b, key.Public...)
	b = append(b, network[:]...)
	b = binary.BigEndian.AppendUint64(b, seq)
	b = binary.BigEndian.AppendUint16(b, uint16(len(files)))
	for _, f := range files {
		b = append(b, f[:]...)
	}
	return append(b, identity.Sign(key, HoldingsContext, b)...)
}

// decodeHoldings decodes and verifies an announcement that came from
// origin in network.
func decodeHoldings(b []byte, network [32]byte, origin ids.Node) (*holdings, error) {
	if len(b) > holdingsHeader+32*MaxHoldings+ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrOversize, len(b))
	}
	if len(b) < holdingsHeader+ed25519.SignatureSize || b[0] != holdingsVersion {
		return nil, fmt.Errorf("%w: %d bytes", ErrMalformed, len(b))
	}
	n := int(binary.BigEndian.Uint16(b[holdingsHeader-2:]))
	if n > MaxHoldings {
		return nil, fmt.Errorf("%w: %d files", ErrOversize, n)
	}
	if len(b) != holdingsHeader+32*n+ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: %d bytes for %d files", ErrMalformed, len(b), n)
	}
	key := ed25519.PublicKey(b[1:33])
	if ids.Node(sha256.Sum256(key)) != origin {
		return nil, fmt.Errorf("%w: the key is not the origin's", ErrForged)
	}
	if !bytes.Equal(b[33:65], network[:]) {
		return nil, fmt.Errorf("%w: of another network", ErrForged)
	}
	body, sig := b[:len(b)-ed25519.SignatureSize], b[len(b)-ed25519.SignatureSize:]
	if !identity.Verify(key, HoldingsContext, body, sig) {
		return nil, fmt.Errorf("%w: the signature does not verify", ErrForged)
	}
	h := &holdings{node: origin, seq: binary.BigEndian.Uint64(b[65:73]), files: make([]ids.Content, n)}
	for i := range h.files {
		h.files[i] = ids.Content(b[holdingsHeader+32*i:])
		if i > 0 && bytes.Compare(h.files[i-1][:], h.files[i][:]) >= 0 {
			return nil, fmt.Errorf("%w: file ids not in order", ErrMalformed)
		}
	}
	return h, nil
}

// IndexStats count the announcements the index refused.
type IndexStats struct {
	Stale    uint64 // a sequence not above the one kept
	Forged   uint64 // not signed by the origin's key, or of another network
	Oversize uint64 // more than MaxHoldings files, or too many bytes
	Bad      uint64 // malformed otherwise
}

// index is the holders index: per node, the files its latest
// announcement lists. Nodes offline for longer than a bound are
// forgotten (expire).
type index struct {
	mu    sync.Mutex
	nodes map[ids.Node]*entry

	stale, forged, oversize, bad atomic.Uint64
}

type entry struct {
	seq          uint64
	files        map[ids.Content]struct{}
	offlineSince time.Time // zero while online
}

func newIndex() *index { return &index{nodes: map[ids.Node]*entry{}} }

// refused counts an announcement that did not decode.
func (x *index) refused(err error) {
	switch {
	case errors.Is(err, ErrForged):
		x.forged.Add(1)
	case errors.Is(err, ErrOversize):
		x.oversize.Add(1)
	default:
		x.bad.Add(1)
	}
}

// apply keeps h if it is newer than what the index has of its node, and
// reports whether it did.
func (x *index) apply(h *holdings) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	e := x.nodes[h.node]
	if e != nil && h.seq <= e.seq {
		x.stale.Add(1)
		return false
	}
	set := make(map[ids.Content]struct{}, len(h.files))
	for _, f := range h.files {
		set[f] = struct{}{}
	}
	x.nodes[h.node] = &entry{seq: h.seq, files: set} // it spoke: online
	return true
}

// holders returns the nodes that hold file id, in id order.
func (x *index) holders(id ids.Content) []ids.Node {
	x.mu.Lock()
	defer x.mu.Unlock()
	var out []ids.Node
	for n, e := range x.nodes {
		if _, ok := e.files[id]; ok {
			out = append(out, n)
		}
	}
	slices.SortFunc(out, func(a, b ids.Node) int { return bytes.Compare(a[:], b[:]) })
	return out
}

// presence records that node came online or went offline at now.
func (x *index) presence(node ids.Node, online bool, now time.Time) {
	x.mu.Lock()
	defer x.mu.Unlock()
	e := x.nodes[node]
	switch {
	case e == nil:
	case online:
		e.offlineSince = time.Time{}
	case e.offlineSince.IsZero():
		e.offlineSince = now
	}
}

// expire forgets the nodes offline since before now-after.
func (x *index) expire(now time.Time, after time.Duration) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for n, e := range x.nodes {
		if !e.offlineSince.IsZero() && now.Sub(e.offlineSince) > after {
			delete(x.nodes, n)
		}
	}
}

func (x *index) stats() IndexStats {
	return IndexStats{Stale: x.stale.Load(), Forged: x.forged.Load(), Oversize: x.oversize.Load(), Bad: x.bad.Load()}
}
