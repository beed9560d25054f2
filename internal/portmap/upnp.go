package portmap

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/huin/goupnp"
	"github.com/huin/goupnp/dcps/internetgateway2"
	"github.com/huin/goupnp/soap"
)

// errNoDevice means that SSDP found no gateway device.
var errNoDevice = errors.New("no UPnP gateway device found")

// UPnP error codes of AddPortMapping that change what is asked next.
const (
	upnpConflict         = 718 // ConflictInMappingEntry
	upnpSamePortRequired = 724 // SamePortValuesRequired
	upnpPermanentOnly    = 725 // OnlyPermanentLeasesSupported
	upnpConflictRetries  = 3
)

// igdClient is what WANIPConnection1, WANIPConnection2 and WANPPPConnection1
// clients have in common.
type igdClient interface {
	AddPortMappingCtx(ctx context.Context, remoteHost string, externalPort uint16, protocol string,
		internalPort uint16, internalClient string, enabled bool, description string, lease uint32) error
	DeletePortMappingCtx(ctx context.Context, remoteHost string, externalPort uint16, protocol string) error
	GetExternalIPAddressCtx(ctx context.Context) (string, error)
}

// upnpMapper is a UPnP-IGD mapping.
type upnpMapper struct {
	client      igdClient
	local       string // internal client address
	protocol    string // "UDP" or "TCP"
	internal    uint16
	description string
	lease       time.Duration // asked

	mu        sync.Mutex
	external  uint16
	permanent bool // the router only takes unlimited leases
}

// upnpError classifies an error of a SOAP call: a SOAP fault is a refusal,
// anything else means the device did not answer.
func upnpError(err error) error {
	var fault *soap.SOAPFaultError
	if errors.As(err, &fault) {
		return fmt.Errorf("%w: UPnP error %d %s", ErrRefused,
			fault.Detail.UPnPError.Errorcode, fault.Detail.UPnPError.ErrorDescription)
	}
	return fmt.Errorf("%w: %w", errNoAnswer, err)
}

func upnpCode(err error) int {
	var fault *soap.SOAPFaultError
	if errors.As(err, &fault) {
		return fault.Detail.UPnPError.Errorcode
	}
	return 0
}

// discoverUPnP finds the gateway device (at cfg.UPnPURL or by SSDP) and maps
// the port with the first of its connection services that grants it.
func discoverUPnP(ctx context.Context, cfg Config, gw netip.Addr) (mapper, netip.AddrPort, time.Duration, error) {
	var roots []*goupnp.RootDevice
	var locs []*url.URL
	if cfg.UPnPURL != "" {
		loc, err := url.Parse(cfg.UPnPURL)
		if err != nil {
			return nil, netip.AddrPort{}, 0, fmt.Errorf("UPnP URL: %w", err)
		}
		root, err := goupnp.DeviceByURLCtx(ctx, loc)
		if err != nil {
			return nil, netip.AddrPort{}, 0, fmt.Errorf("%w: %w", errNoAnswer, err)
		}
		roots, locs = append(roots, root), append(locs, loc)
	} else {
		var err error
		if roots, locs, err = ssdpGateways(ctx, gw); err != nil {
			return nil, netip.AddrPort{}, 0, err
		}
	}
	var errs []error
	for i, root := range roots {
		for _, client := range igdClients(root, locs[i]) {
			mp := &upnpMapper{
				client:      client,
				protocol:    strings.ToUpper(cfg.Protocol),
				internal:    cfg.InternalPort,
				external:    cfg.ExternalPort,
				description: cfg.Description,
				lease:       cfg.UPnPLease,
			}
			local, err := localAddrTo(locs[i].Hostname())
			if err != nil {
				errs = append(errs, err)
				continue
			}
			mp.local = local.String()
			ext, refresh, err := mp.mapPort(ctx)
			if err == nil {
				return mp, ext, refresh, nil
			}
			if ctx.Err() != nil {
				return nil, netip.AddrPort{}, 0, err
			}
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		return nil, netip.AddrPort{}, 0, fmt.Errorf("%w: no WAN connection service", errNoAnswer)
	}
	return nil, netip.AddrPort{}, 0, errors.Join(errs...)
}

// igdClients returns the WAN connection services of a root device, newest
// first.
func igdClients(root *goupnp.RootDevice, loc *url.URL) []igdClient {
	var out []igdClient
	if cs, err := internetgateway2.NewWANIPConnection2ClientsFromRootDevice(root, loc); err == nil {
		for _, c := range cs {
			out = append(out, c)
		}
	}
	if cs, err := internetgateway2.NewWANIPConnection1ClientsFromRootDevice(root, loc); err == nil {
		for _, c := range cs {
			out = append(out, c)
		}
	}
	if cs, err := internetgateway2.NewWANPPPConnection1ClientsFromRootDevice(root, loc); err == nil {
		for _, c := range cs {
			out = append(out, c)
		}
	}
	return out
}

// ssdpGateways discovers Internet Gateway Devices (versions 1 and 2) by
// SSDP, those at the gateway address first.
func ssdpGateways(ctx context.Context, gw netip.Addr) ([]*goupnp.RootDevice, []*url.URL, error) {
	targets := []string{
		"urn:schemas-upnp-org:device:InternetGatewayDevice:2",
		"urn:schemas-upnp-org:device:InternetGatewayDevice:1",
	}
	results := make([][]goupnp.MaybeRootDevice, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Go(func() { results[i], _ = goupnp.DiscoverDevicesCtx(ctx, t) })
	}
	wg.Wait()
	type found struct {
		root *goupnp.RootDevice
		loc  *url.URL
	}
	var all []found
	seen := map[string]bool{}
	for _, rs := range results {
		for _, r := range rs {
			if r.Err != nil || r.Root == nil || r.Location == nil || seen[r.Location.String()] {
				continue
			}
			seen[r.Location.String()] = true
			all = append(all, found{r.Root, r.Location})
		}
	}
	if len(all) == 0 {
		return nil, nil, errNoDevice
	}
	atGateway := func(f found) bool {
		a, err := netip.ParseAddr(f.loc.Hostname())
		return err == nil && gw.IsValid() && a.Unmap() == gw.Unmap()
	}
	slices.SortStableFunc(all, func(a, b found) int {
		switch {
		case atGateway(a) && !atGateway(b):
			return -1
		case atGateway(b) && !atGateway(a):
			return 1
		}
		return 0
	})
	roots := make([]*goupnp.RootDevice, len(all))
	locs := make([]*url.URL, len(all))
	for i, f := range all {
		roots[i], locs[i] = f.root, f.loc
	}
	return roots, locs, nil
}

// localAddrTo returns the local address that the host uses to reach host.
// No packet is sent.
func localAddrTo(host string) (netip.Addr, error) {
	c, err := net.Dial("udp", net.JoinHostPort(host, "1900"))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%w: %w", errNoAnswer, err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap(), nil
}

func (u *upnpMapper) name() string { return ProtoUPnP }

func (u *upnpMapper) mapPort(ctx context.Context) (netip.AddrPort, time.Duration, error) {
	s, err := u.client.GetExternalIPAddressCtx(ctx)
	if err != nil {
		return netip.AddrPort{}, 0, upnpError(err)
	}
	ip, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil || ip.IsUnspecified() {
		return netip.AddrPort{}, 0, fmt.Errorf("%w: UPnP external address %q", ErrRefused, s)
	}
	ip = ip.Unmap()

	u.mu.Lock()
	external, permanent := u.external, u.permanent
	u.mu.Unlock()
	lease := uint32(u.lease / time.Second)
	if permanent {
		lease = 0
	}
	conflicts := 0
	for {
		err = u.client.AddPortMappingCtx(ctx, "", external, u.protocol, u.internal, u.local, true, u.description, lease)
		if err == nil {
			break
		}
		switch upnpCode(err) {
		case upnpPermanentOnly:
			if lease != 0 {
				lease, permanent = 0, true
				continue
			}
		case upnpConflict:
			if conflicts < upnpConflictRetries {
				conflicts++
				external = uint16(1024 + rand.IntN(65535-1024))
				continue
			}
		case upnpSamePortRequired:
			if external != u.internal {
				external = u.internal
				continue
			}
		}
		return netip.AddrPort{}, 0, upnpError(err)
	}
	u.mu.Lock()
	u.external, u.permanent = external, permanent
	u.mu.Unlock()
	// An unlimited lease is still refreshed, at half of the lease asked.
	return netip.AddrPortFrom(ip, external), u.lease, nil
}

func (u *upnpMapper) unmap(ctx context.Context) error {
	u.mu.Lock()
	external := u.external
	u.mu.Unlock()
	if err := u.client.DeletePortMappingCtx(ctx, "", external, u.protocol); err != nil {
		return fmt.Errorf("UPnP delete: %w", upnpError(err))
	}
	return nil
}
