// Package netaddr classifies IP addresses for the parts of a node that
// decide which addresses to advertise, punch toward or trust as public.
// One definition keeps the port mapper, hole punching and the NAT check in
// agreement.
package netaddr

import "net/netip"

// cgnat is the shared address space of carrier-grade NATs (RFC 6598).
var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// IsPublic reports whether a is an address of the internet at large: a
// global unicast address that is not private (RFC 1918, RFC 4193), not in
// the carrier-grade NAT space (RFC 6598), and not loopback, link-local or
// unspecified. IPv4-mapped IPv6 forms are judged as the IPv4 address they
// carry.
func IsPublic(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsGlobalUnicast() && !a.IsPrivate() && !cgnat.Contains(a)
}
