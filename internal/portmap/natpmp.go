package portmap

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"
)

// NAT-PMP (RFC 6886) opcodes and result codes.
const (
	pmpVersion     = 0
	pmpOpExternal  = 0
	pmpOpMapUDP    = 1
	pmpOpMapTCP    = 2
	pmpOpReply     = 128
	pmpUnsuppVers  = 1
	pmpUnsuppOp    = 5
	pmpRespExtLen  = 12
	pmpRespMapLen  = 16
	pmpMaxLifetime = 1<<32 - 1
)

// pmpResultError is a non-zero NAT-PMP result code.
type pmpResultError uint16

func (e pmpResultError) Error() string {
	switch e {
	case 1:
		return "NAT-PMP: unsupported version"
	case 2:
		return "NAT-PMP: not authorized/refused"
	case 3:
		return "NAT-PMP: network failure"
	case 4:
		return "NAT-PMP: out of resources"
	case 5:
		return "NAT-PMP: unsupported opcode"
	}
	return fmt.Sprintf("NAT-PMP: result code %d", uint16(e))
}

// Unwrap maps the result code to errNoAnswer (the gateway does not speak
// this) or ErrRefused.
func (e pmpResultError) Unwrap() error {
	if e == pmpUnsuppVers || e == pmpUnsuppOp {
		return errNoAnswer
	}
	return ErrRefused
}

// pmpHeader checks the common part of a NAT-PMP response to a request with
// opcode op: version, opcode, result code and length.
func pmpHeader(b []byte, op byte, size int) error {
	if len(b) < 4 {
		return errIgnore
	}
	if b[0] != pmpVersion {
		// A PCP-only server answers with its own version.
		return fmt.Errorf("%w: NAT-PMP answered with version %d", errNoAnswer, b[0])
	}
	if b[1] != pmpOpReply+op {
		return errIgnore
	}
	if rc := binary.BigEndian.Uint16(b[2:4]); rc != 0 {
		return pmpResultError(rc)
	}
	if len(b) < size {
		return errIgnore
	}
	return nil
}

// pmpExternalResponse is a decoded answer to an external address request.
type pmpExternalResponse struct {
	epoch uint32
	addr  netip.Addr
}

// parsePMPExternal decodes an answer to an external address request.
func parsePMPExternal(b []byte) (pmpExternalResponse, error) {
	if err := pmpHeader(b, pmpOpExternal, pmpRespExtLen); err != nil {
		return pmpExternalResponse{}, err
	}
	return pmpExternalResponse{
		epoch: binary.BigEndian.Uint32(b[4:8]),
		addr:  netip.AddrFrom4([4]byte(b[8:12])),
	}, nil
}

// pmpMapResponse is a decoded answer to a map request.
type pmpMapResponse struct {
	epoch        uint32
	internalPort uint16
	externalPort uint16
	lifetime     uint32
}

// parsePMPMap decodes an answer to a map request with opcode op.
func parsePMPMap(b []byte, op byte) (pmpMapResponse, error) {
	if err := pmpHeader(b, op, pmpRespMapLen); err != nil {
		return pmpMapResponse{}, err
	}
	return pmpMapResponse{
		epoch:        binary.BigEndian.Uint32(b[4:8]),
		internalPort: binary.BigEndian.Uint16(b[8:10]),
		externalPort: binary.BigEndian.Uint16(b[10:12]),
		lifetime:     binary.BigEndian.Uint32(b[12:16]),
	}, nil
}

// encodePMPMap encodes a map request.
func encodePMPMap(op byte, internal, external uint16, lifetime uint32) []byte {
	b := make([]byte, 12)
	b[0], b[1] = pmpVersion, op
	binary.BigEndian.PutUint16(b[4:6], internal)
	binary.BigEndian.PutUint16(b[6:8], external)
	binary.BigEndian.PutUint32(b[8:12], lifetime)
	return b
}

// seconds converts a lifetime to whole seconds, at least 1.
func seconds(d time.Duration) uint32 {
	return uint32(min(max(d/time.Second, 1), pmpMaxLifetime))
}

// pmpMapper is a NAT-PMP mapping.
type pmpMapper struct {
	server   netip.AddrPort
	op       byte
	internal uint16
	lifetime uint32

	mu       sync.Mutex
	external uint16 // suggested, then the one granted
}

func newPMPMapper(cfg Config, gw netip.Addr) *pmpMapper {
	op := byte(pmpOpMapUDP)
	if cfg.Protocol == "tcp" {
		op = pmpOpMapTCP
	}
	return &pmpMapper{
		server:   netip.AddrPortFrom(gw, cfg.ServerPort),
		op:       op,
		internal: cfg.InternalPort,
		external: cfg.ExternalPort,
		lifetime: seconds(cfg.Lifetime),
	}
}

func (p *pmpMapper) name() string { return ProtoNATPMP }

func (p *pmpMapper) mapPort(ctx context.Context) (netip.AddrPort, time.Duration, error) {
	if !p.server.Addr().Unmap().Is4() {
		return netip.AddrPort{}, 0, fmt.Errorf("%w: NAT-PMP needs an IPv4 gateway", errNoAnswer)
	}
	var ext pmpExternalResponse
	err := exchange(ctx, p.server,
		func(netip.Addr) []byte { return []byte{pmpVersion, pmpOpExternal} },
		func(b []byte) (err error) { ext, err = parsePMPExternal(b); return err })
	if err != nil {
		return netip.AddrPort{}, 0, err
	}
	if ext.addr.IsUnspecified() {
		return netip.AddrPort{}, 0, fmt.Errorf("%w: gateway has no external address", ErrRefused)
	}
	p.mu.Lock()
	req := encodePMPMap(p.op, p.internal, p.external, p.lifetime)
	p.mu.Unlock()
	var resp pmpMapResponse
	err = exchange(ctx, p.server,
		func(netip.Addr) []byte { return req },
		func(b []byte) (err error) {
			resp, err = parsePMPMap(b, p.op)
			if err == nil && resp.internalPort != p.internal {
				return errIgnore
			}
			return err
		})
	if err != nil {
		return netip.AddrPort{}, 0, err
	}
	if resp.lifetime == 0 || resp.externalPort == 0 {
		return netip.AddrPort{}, 0, fmt.Errorf("%w: NAT-PMP granted no mapping", ErrRefused)
	}
	p.mu.Lock()
	p.external = resp.externalPort
	p.mu.Unlock()
	return netip.AddrPortFrom(ext.addr, resp.externalPort), time.Duration(resp.lifetime) * time.Second, nil
}

func (p *pmpMapper) unmap(ctx context.Context) error {
	// RFC 6886 section 3.4: lifetime 0 and external port 0 delete.
	req := encodePMPMap(p.op, p.internal, 0, 0)
	err := exchange(ctx, p.server,
		func(netip.Addr) []byte { return req },
		func(b []byte) error {
			resp, err := parsePMPMap(b, p.op)
			if err == nil && resp.internalPort != p.internal {
				return errIgnore
			}
			return err
		})
	if errors.Is(err, errNoAnswer) {
		return fmt.Errorf("NAT-PMP delete: %w", err)
	}
	return err
}
