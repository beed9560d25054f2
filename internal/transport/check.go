package transport

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// NAT checks: a peer (or a node this one never talked to) sends a check
// probe, a packet that is not QUIC carrying a nonce, to this node's public
// address; whether it arrives on the node's socket shows how the NAT in
// front filters unsolicited packets.

// checkPrefix starts a check probe; a 16-byte nonce follows.
var checkPrefix = []byte("\x00pipes check")

// checkLen is the length of a check probe.
var checkLen = len(checkPrefix) + 16

func checkProbe(nonce [16]byte) []byte {
	return append(bytes.Clone(checkPrefix), nonce[:]...)
}

// readNonQUIC reads the packets of the node's socket that are not QUIC:
// punch probes are dropped, check probes go to ExpectCheck's waiters.
func (t *Transport) readNonQUIC() {
	defer t.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, from, err := t.qt.ReadNonQUICPacket(t.ctx, buf)
		if err != nil {
			return
		}
		if n != checkLen || !bytes.HasPrefix(buf[:n], checkPrefix) {
			continue
		}
		nonce := [16]byte(buf[len(checkPrefix):n])
		t.checkMu.Lock()
		ch := t.checks[nonce]
		t.checkMu.Unlock()
		if ua, ok := from.(*net.UDPAddr); ok && ch != nil {
			select {
			case ch <- Unmap(ua.AddrPort()):
			default:
			}
		}
	}
}

// ExpectCheck starts waiting for a check probe with nonce on the node's
// socket: the channel receives where it came from. The caller must call
// the returned function when it stops waiting. (Register before asking
// for the probe, so that one arriving at once is not missed.)
func (t *Transport) ExpectCheck(nonce [16]byte) (<-chan netip.AddrPort, func()) {
	ch := make(chan netip.AddrPort, 1)
	t.checkMu.Lock()
	if t.checks == nil {
		t.checks = map[[16]byte]chan netip.AddrPort{}
	}
	t.checks[nonce] = ch
	t.checkMu.Unlock()
	return ch, func() {
		t.checkMu.Lock()
		if t.checks[nonce] == ch {
			delete(t.checks, nonce)
		}
		t.checkMu.Unlock()
	}
}

// checkSends is how many times a check probe is sent (loss of one must
// not make a NAT look stricter than it is).
const checkSends = 3

// SendCheck sends check probes with nonce to addr. From the node's socket
// when fresh is false; otherwise from a new socket on the node's address
// (another port), closed afterwards.
func (t *Transport) SendCheck(ctx context.Context, addr netip.AddrPort, nonce [16]byte, fresh bool) error {
	pkt := checkProbe(nonce)
	send := func() error {
		_, err := t.qt.WriteTo(pkt, net.UDPAddrFromAddrPort(addr))
		return err
	}
	if fresh {
		local := t.Addr()
		s, err := t.cfg.ListenUDP(&net.UDPAddr{IP: local.Addr().AsSlice(), Zone: local.Addr().Zone()})
		if err != nil {
			return fmt.Errorf("transport: check socket: %w", err)
		}
		defer s.Close()
		send = func() error {
			_, err := s.WriteToUDPAddrPort(pkt, addr)
			return err
		}
	}
	for i := range checkSends {
		if i > 0 {
			select {
			case <-time.After(100 * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if err := send(); err != nil {
			return fmt.Errorf("transport: check probe to %s: %w", addr, err)
		}
	}
	return nil
}
