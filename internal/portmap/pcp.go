package portmap

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"time"
)

// PCP (RFC 6887) constants for the MAP opcode.
const (
	pcpVersion      = 2
	pcpOpMap        = 1
	pcpResponseBit  = 0x80
	pcpHeaderLen    = 24
	pcpMapLen       = 36
	pcpMaxLen       = 1100
	pcpProtoUDP     = 17
	pcpProtoTCP     = 6
	pcpUnsuppVers   = 1
	pcpUnsuppOpcode = 4
)

// pcpResultError is a non-zero PCP result code.
type pcpResultError uint8

var pcpResultNames = [...]string{
	1: "UNSUPP_VERSION", 2: "NOT_AUTHORIZED", 3: "MALFORMED_REQUEST",
	4: "UNSUPP_OPCODE", 5: "UNSUPP_OPTION", 6: "MALFORMED_OPTION",
	7: "NETWORK_FAILURE", 8: "NO_RESOURCES", 9: "UNSUPP_PROTOCOL",
	10: "USER_EX_QUOTA", 11: "CANNOT_PROVIDE_EXTERNAL", 12: "ADDRESS_MISMATCH",
	13: "EXCESSIVE_REMOTE_PEERS",
}

func (e pcpResultError) Error() string {
	if int(e) < len(pcpResultNames) && pcpResultNames[e] != "" {
		return "PCP: " + pcpResultNames[e]
	}
	return fmt.Sprintf("PCP: result code %d", uint8(e))
}

// Unwrap maps the result code to errNoAnswer (the gateway does not speak
// this) or ErrRefused.
func (e pcpResultError) Unwrap() error {
	if e == pcpUnsuppVers || e == pcpUnsuppOpcode {
		return errNoAnswer
	}
	return ErrRefused
}

// pcpMapRequest is a MAP request.
type pcpMapRequest struct {
	lifetime     uint32
	client       netip.Addr
	nonce        [12]byte
	protocol     uint8
	internalPort uint16
	externalPort uint16
	externalIP   netip.Addr // suggested; invalid for any
}

// pcpAddr encodes an address as 16 bytes, IPv4 as IPv4-mapped IPv6.
func pcpAddr(a netip.Addr) [16]byte {
	if !a.IsValid() {
		a = netip.IPv4Unspecified()
	}
	return netip.AddrFrom16(a.As16()).As16()
}

func (r pcpMapRequest) encode() []byte {
	b := make([]byte, pcpHeaderLen+pcpMapLen)
	b[0], b[1] = pcpVersion, pcpOpMap
	binary.BigEndian.PutUint32(b[4:8], r.lifetime)
	client := pcpAddr(r.client)
	copy(b[8:24], client[:])
	p := b[pcpHeaderLen:]
	copy(p[0:12], r.nonce[:])
	p[12] = r.protocol
	binary.BigEndian.PutUint16(p[16:18], r.internalPort)
	binary.BigEndian.PutUint16(p[18:20], r.externalPort)
	ext := pcpAddr(r.externalIP)
	copy(p[20:36], ext[:])
	return b
}

// pcpMapResponse is a decoded MAP response.
type pcpMapResponse struct {
	result       uint8
	lifetime     uint32
	epoch        uint32
	nonce        [12]byte
	protocol     uint8
	internalPort uint16
	externalPort uint16
	externalIP   netip.Addr
}

// parsePCPMap decodes a MAP response. It returns errIgnore for packets that
// are not MAP responses, errNoAnswer (wrapped) when a NAT-PMP-only server
// answered, and a pcpResultError for an error result that carries no
// MAP payload.
func parsePCPMap(b []byte) (pcpMapResponse, error) {
	var r pcpMapResponse
	if len(b) >= 4 && b[0] == pmpVersion {
		// A NAT-PMP-only server answers a version it does not know with
		// its own version and result code 1.
		return r, fmt.Errorf("%w: PCP answered with NAT-PMP version 0", errNoAnswer)
	}
	if len(b) < pcpHeaderLen || len(b) > pcpMaxLen || len(b)%4 != 0 {
		return r, errIgnore
	}
	if b[0] != pcpVersion {
		return r, errIgnore
	}
	if b[1] != pcpResponseBit|pcpOpMap {
		return r, errIgnore
	}
	r.result = b[3]
	r.lifetime = binary.BigEndian.Uint32(b[4:8])
	r.epoch = binary.BigEndian.Uint32(b[8:12])
	if len(b) < pcpHeaderLen+pcpMapLen {
		if r.result != 0 {
			return r, pcpResultError(r.result)
		}
		return r, errIgnore
	}
	p := b[pcpHeaderLen:]
	copy(r.nonce[:], p[0:12])
	r.protocol = p[12]
	r.internalPort = binary.BigEndian.Uint16(p[16:18])
	r.externalPort = binary.BigEndian.Uint16(p[18:20])
	r.externalIP = netip.AddrFrom16([16]byte(p[20:36])).Unmap()
	return r, nil
}

// pcpMapper is a PCP MAP mapping.
type pcpMapper struct {
	server   netip.AddrPort
	protocol uint8
	internal uint16
	lifetime uint32
	nonce    [12]byte

	mu         sync.Mutex
	external   uint16     // suggested, then granted
	externalIP netip.Addr // granted
}

func newPCPMapper(cfg Config, gw netip.Addr) (*pcpMapper, error) {
	p := &pcpMapper{
		server:   netip.AddrPortFrom(gw, cfg.ServerPort),
		protocol: pcpProtoUDP,
		internal: cfg.InternalPort,
		external: cfg.ExternalPort,
		lifetime: seconds(cfg.Lifetime),
	}
	if cfg.Protocol == "tcp" {
		p.protocol = pcpProtoTCP
	}
	if _, err := rand.Read(p.nonce[:]); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *pcpMapper) name() string { return ProtoPCP }

// request sends a MAP request with the given lifetime (0 deletes).
func (p *pcpMapper) request(ctx context.Context, lifetime uint32) (pcpMapResponse, error) {
	p.mu.Lock()
	req := pcpMapRequest{
		lifetime:     lifetime,
		nonce:        p.nonce,
		protocol:     p.protocol,
		internalPort: p.internal,
		externalPort: p.external,
		externalIP:   p.externalIP,
	}
	p.mu.Unlock()
	var resp pcpMapResponse
	err := exchange(ctx, p.server,
		func(local netip.Addr) []byte { req.client = local; return req.encode() },
		func(b []byte) (err error) {
			resp, err = parsePCPMap(b)
			if err != nil {
				return err
			}
			if resp.nonce != p.nonce || resp.protocol != p.protocol || resp.internalPort != p.internal {
				return errIgnore
			}
			if resp.result != 0 {
				return pcpResultError(resp.result)
			}
			return nil
		})
	return resp, err
}

func (p *pcpMapper) mapPort(ctx context.Context) (netip.AddrPort, time.Duration, error) {
	resp, err := p.request(ctx, p.lifetime)
	if err != nil {
		return netip.AddrPort{}, 0, err
	}
	if resp.lifetime == 0 || resp.externalPort == 0 || !resp.externalIP.IsValid() || resp.externalIP.IsUnspecified() {
		return netip.AddrPort{}, 0, fmt.Errorf("%w: PCP granted no mapping", ErrRefused)
	}
	p.mu.Lock()
	p.external, p.externalIP = resp.externalPort, resp.externalIP
	p.mu.Unlock()
	return netip.AddrPortFrom(resp.externalIP, resp.externalPort), time.Duration(resp.lifetime) * time.Second, nil
}

func (p *pcpMapper) unmap(ctx context.Context) error {
	_, err := p.request(ctx, 0)
	if err != nil {
		return fmt.Errorf("PCP delete: %w", err)
	}
	return nil
}
