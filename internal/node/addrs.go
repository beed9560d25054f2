package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/pipesnet/pipes/internal/transport"
)

// listen binds the node's socket on the first of addrs that is free.
func listen(ctx context.Context, addrs []string, cfg transport.Config) (*transport.Transport, error) {
	if len(addrs) == 0 {
		return nil, errors.New("node: no address to listen on")
	}
	var errs []error
	for _, a := range addrs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		tr, err := transport.Listen(a, cfg)
		if err == nil {
			return tr, nil
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("node: no address to listen on (tried %s): %w", strings.Join(addrs, ", "), errors.Join(errs...))
}

// advertise lists the addresses other nodes can dial, given the bound
// address: the port mapping's external address first, if there is one (a
// candidate for peers outside the router's LAN; one that turns out
// unreachable, as behind a second NAT, costs them only a dial), then
// Advertise(bound).
func (n *Node) advertise(bound netip.AddrPort) []string {
	out := Advertise(bound)
	if n.cfg.PortMap == nil {
		return out
	}
	if ext := n.cfg.PortMap.External(); ext.IsValid() && !slices.Contains(out, ext.String()) {
		out = append([]string{ext.String()}, out...)
	}
	return out
}

// Advertise lists the addresses of a socket bound to ap that other nodes
// can dial: the bound address, or for an unspecified host the
// non-loopback addresses of the up interfaces (loopback only if there is
// nothing else), at most 16.
func Advertise(ap netip.AddrPort) []string {
	if !ap.Addr().IsUnspecified() {
		return []string{ap.String()}
	}
	var out []string
	ifaces, _ := net.Interfaces()
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok || ip.IsLinkLocalUnicast() || ip.IsMulticast() {
				continue
			}
			ip = ip.Unmap()
			if ap.Addr().Is4() && !ip.Is4() {
				continue
			}
			if ip.IsLoopback() {
				continue // useless to other machines, and a trap: it names their own host
			}
			out = append(out, netip.AddrPortFrom(ip, ap.Port()).String())
		}
	}
	if len(out) == 0 {
		out = append(out, netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), ap.Port()).String())
	}
	if len(out) > 16 {
		out = out[:16]
	}
	return out
}
