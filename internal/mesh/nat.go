package mesh

import "net/netip"

// Mapping is how the node's NAT maps the packets of its socket, as the
// observations of its peers show.
type Mapping uint8

const (
	// MappingUnknown: fewer than two peers at different addresses report
	// an address on the same public IP.
	MappingUnknown Mapping = iota
	// MappingIndependent: peers at different addresses see the same
	// public address and port (one public port per socket, or no NAT).
	MappingIndependent
	// MappingDependent: they see different ports on the same public
	// address: the NAT gives each destination a new port (a "symmetric"
	// NAT), and only the hard-NAT punch gets through to a node that
	// filters.
	MappingDependent
)

// String names the mapping behaviour.
func (m Mapping) String() string {
	switch m {
	case MappingIndependent:
		return "endpoint-independent"
	case MappingDependent:
		return "endpoint-dependent"
	}
	return "unknown"
}

// observation is one peer's report of this node's address: remote is the
// peer's address as seen here (the destination of this node's packets),
// observed the address the peer says they come from.
type observation struct {
	remote, observed netip.AddrPort
}

// classify derives the mapping behaviour from observations: two peers at
// different addresses that see the same public IP with different ports
// mean a new mapping per destination; with the same port, one mapping.
func classify(obs []observation) Mapping {
	out := MappingUnknown
	for i := range obs {
		for j := i + 1; j < len(obs); j++ {
			a, b := obs[i], obs[j]
			if a.remote == b.remote || a.observed.Addr() != b.observed.Addr() {
				continue
			}
			if a.observed.Port() != b.observed.Port() {
				return MappingDependent
			}
			out = MappingIndependent
		}
	}
	return out
}
