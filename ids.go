package pipes

import (
	"encoding/hex"
	"fmt"
)

// NetworkID identifies a network: 32 random bytes chosen when the netfile
// is created.
type NetworkID [32]byte

// IdentityID identifies an identity: SHA-256 of its Ed25519 public key.
type IdentityID [32]byte

// NodeID identifies a node: SHA-256 of the node's Ed25519 device key.
type NodeID [32]byte

// PipelineID identifies a pipeline.
type PipelineID [32]byte

// PacketID identifies a packet: SHA-256 of its header and data.
type PacketID [32]byte

// String returns the id as 64 lower-case hex digits.
func (id NetworkID) String() string { return hex.EncodeToString(id[:]) }

// String returns the id as 64 lower-case hex digits.
func (id IdentityID) String() string { return hex.EncodeToString(id[:]) }

// String returns the id as 64 lower-case hex digits.
func (id NodeID) String() string { return hex.EncodeToString(id[:]) }

// String returns the id as 64 lower-case hex digits.
func (id PipelineID) String() string { return hex.EncodeToString(id[:]) }

// String returns the id as 64 lower-case hex digits.
func (id PacketID) String() string { return hex.EncodeToString(id[:]) }

// IsZero reports whether id is all zeros (no node).
func (id NodeID) IsZero() bool { return id == NodeID{} }

func parseID(kind, s string) ([32]byte, error) {
	var id [32]byte
	if len(s) != 64 {
		return id, fmt.Errorf("%w: %s id must be 64 hex digits, got %d characters", ErrInvalidID, kind, len(s))
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("%w: %s id %q: %w", ErrInvalidID, kind, s, err)
	}
	return id, nil
}

// ParseNetworkID parses the 64-hex-digit form of a NetworkID.
func ParseNetworkID(s string) (NetworkID, error) { id, err := parseID("network", s); return id, err }

// ParseIdentityID parses the 64-hex-digit form of an IdentityID.
func ParseIdentityID(s string) (IdentityID, error) { id, err := parseID("identity", s); return id, err }

// ParseNodeID parses the 64-hex-digit form of a NodeID.
func ParseNodeID(s string) (NodeID, error) { id, err := parseID("node", s); return id, err }

// ParsePipelineID parses the 64-hex-digit form of a PipelineID.
func ParsePipelineID(s string) (PipelineID, error) { id, err := parseID("pipeline", s); return id, err }

// ParsePacketID parses the 64-hex-digit form of a PacketID.
func ParsePacketID(s string) (PacketID, error) { id, err := parseID("packet", s); return id, err }
