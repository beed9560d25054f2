// Package ids holds the typed ids the internal packages pass between them:
// a node, a pipeline, a packet, a network and a content id are each 32
// bytes, and each has its own type so that one cannot be passed where
// another is expected without an explicit conversion. The guarantee is the
// compiler's: an ids.Node given where an ids.Pipeline is wanted does not
// build. (An untyped [32]byte still converts implicitly to any of them,
// which is what the lower layers that stay on [32]byte rely on.)
//
// A leaf: it imports nothing of the project.
package ids

import "encoding/hex"

// Node identifies a node: SHA-256 of the node's Ed25519 device key.
type Node [32]byte

// Pipeline identifies a pipeline: a hash of its network and definition.
type Pipeline [32]byte

// Packet identifies a packet: SHA-256 of its header and data.
type Packet [32]byte

// Network identifies a network: 32 random bytes chosen with its netfile.
type Network [32]byte

// Identity identifies an identity (a user, whose nodes it certifies):
// SHA-256 of its Ed25519 public key.
type Identity [32]byte

// Content identifies a content (a file's bytes, as stored): its BLAKE3
// root, the BLAKE3-256 hash of its manifest, which lists the hashes of
// its chunks (see package blob's Manifest.Root).
type Content [32]byte

// String returns the id as 64 lower-case hex digits.
func (id Node) String() string { return hex.EncodeToString(id[:]) }

// Short returns the first 8 hex digits of the id, for logs.
func (id Node) Short() string { return hex.EncodeToString(id[:4]) }

// IsZero reports whether id is all zeros (no node).
func (id Node) IsZero() bool { return id == Node{} }

// String returns the id as 64 lower-case hex digits.
func (id Pipeline) String() string { return hex.EncodeToString(id[:]) }

// Short returns the first 8 hex digits of the id, for logs.
func (id Pipeline) Short() string { return hex.EncodeToString(id[:4]) }

// String returns the id as 64 lower-case hex digits.
func (id Packet) String() string { return hex.EncodeToString(id[:]) }

// Short returns the first 8 hex digits of the id, for logs.
func (id Packet) Short() string { return hex.EncodeToString(id[:4]) }

// String returns the id as 64 lower-case hex digits.
func (id Network) String() string { return hex.EncodeToString(id[:]) }

// String returns the id as 64 lower-case hex digits.
func (id Content) String() string { return hex.EncodeToString(id[:]) }

// Short returns the first 8 hex digits of the id, for logs.
func (id Content) Short() string { return hex.EncodeToString(id[:4]) }

// String returns the id as 64 lower-case hex digits.
func (id Identity) String() string { return hex.EncodeToString(id[:]) }

// Short returns the first 8 hex digits of the id, for logs.
func (id Identity) Short() string { return hex.EncodeToString(id[:4]) }
