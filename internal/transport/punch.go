package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
)

// Punching through a NAT that gives each destination a new public port
// (a "symmetric" NAT) toward a NAT that keeps one public port per socket
// but drops unsolicited packets (a home router): neither side can know
// the port the other must send to. The symmetric side opens many sockets
// and sends from each toward the other's public address, so its NAT
// holds many mappings toward it; the other side sends probes to many
// random ports of the symmetric NAT, each of which opens its own NAT
// toward that port. When a probe hits one of the mappings (with 256
// sockets and 2,048 probes that happens with a probability of 99.97%)
// the socket it reaches dials the prober, whose NAT now lets that port
// in. PunchHard is the symmetric side, ProbePorts the other.

// Limits of the hard-NAT punch.
const (
	// portLow is the first port NATs give out (Linux's default range is
	// 1024-65535).
	portLow = 1024
	// probeBatch probes are sent, then the sender pauses probePause, so
	// that a round does not overflow queues on the way.
	probeBatch = 128
	probePause = 5 * time.Millisecond
)

// ProbePorts sends a probe from the node's socket to n distinct random
// ports (1024-65535) of ip: each opens this side's NAT toward that port,
// for a peer running PunchHard behind ip.
func (t *Transport) ProbePorts(ctx context.Context, ip netip.Addr, n int) error {
	for i, p := range probePorts(n) {
		if i > 0 && i%probeBatch == 0 {
			select {
			case <-time.After(probePause):
			case <-ctx.Done():
				return ctx.Err()
			case <-t.ctx.Done():
				return net.ErrClosed
			}
		}
		if err := t.SendProbe(netip.AddrPortFrom(ip, p)); err != nil {
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// One refused send (an unreachable port, a full queue)
			// does not end the round.
		}
	}
	return nil
}

// probePorts picks n distinct random ports of the range NATs give out.
func probePorts(n int) []uint16 {
	n = max(0, min(n, 65536-portLow))
	out := make([]uint16, 0, n)
	seen := make(map[uint16]bool, n)
	for len(out) < n {
		p := uint16(portLow + rand.IntN(65536-portLow))
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

// PunchHard opens n extra UDP sockets on the node's address, sends a
// probe from each to every address of to (again every second), and waits
// until one of them receives a probe from one of to's IP addresses: the
// peer, probing many ports of this side's NAT, hit the port the NAT gave
// that socket. It then dials the prober from that socket, with a QUIC
// endpoint of its own, and returns the verified connection (Extra is
// set); the socket lives as long as the connection. It returns an error
// when ctx ends first.
func (t *Transport) PunchHard(ctx context.Context, n int, to []netip.AddrPort) (*Conn, error) {
	if len(to) == 0 || n <= 0 {
		return nil, errors.New("transport: nothing to punch toward")
	}
	ips := map[netip.Addr]bool{}
	for _, a := range to {
		ips[a.Addr().Unmap()] = true
	}
	local := t.Addr()
	laddr := &net.UDPAddr{IP: local.Addr().AsSlice(), Zone: local.Addr().Zone()}
	if t.ctx.Err() != nil {
		return nil, net.ErrClosed
	}
	var socks []*net.UDPConn
	owned := map[int]bool{} // handed to dialOn, which closes them
	defer func() {
		for i, s := range socks {
			if !owned[i] {
				s.Close()
			}
		}
	}()
	for range n {
		s, err := t.cfg.ListenUDP(laddr)
		if err != nil {
			if len(socks) == 0 {
				return nil, fmt.Errorf("transport: punch socket: %w", err)
			}
			break // fewer sockets: a smaller chance, still one
		}
		socks = append(socks, s)
	}

	type hit struct {
		i    int
		from netip.AddrPort
	}
	hits := make(chan hit, len(socks)) // one per reader at most: never blocks
	var wg sync.WaitGroup
	for i, s := range socks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 64)
			for {
				nn, from, err := s.ReadFromUDPAddrPort(buf)
				if err != nil {
					return // closed or past its deadline: the punch is over
				}
				from = Unmap(from)
				if bytes.Equal(buf[:nn], probe) && ips[from.Addr()] && from != local {
					hits <- hit{i, from}
					return // the socket is the dialer's now
				}
			}
		}()
	}
	stopReaders := func() {
		for i, s := range socks {
			if !owned[i] {
				s.SetReadDeadline(time.Unix(1, 0))
			}
		}
		wg.Wait()
	}
	defer stopReaders()

	send := func() {
		for i, s := range socks {
			if owned[i] {
				continue
			}
			for _, a := range to {
				s.WriteToUDPAddrPort(probe, a) // best effort
			}
		}
	}
	send()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var lastErr error
	for {
		select {
		case h := <-hits:
			// A hit whose dial fails (a lost handshake, a forged probe)
			// does not end the punch: others may still come.
			owned[h.i] = true
			c, err := t.dialOn(ctx, socks[h.i], h.from)
			if err == nil {
				return c, nil
			}
			lastErr = fmt.Errorf("dial %s: %w", h.from, err)
		case <-tick.C:
			send()
		case <-ctx.Done():
			if lastErr != nil {
				return nil, fmt.Errorf("transport: hard punch: %w (%v)", ctx.Err(), lastErr)
			}
			return nil, fmt.Errorf("transport: hard punch: %w", ctx.Err())
		case <-t.ctx.Done():
			return nil, net.ErrClosed
		}
	}
}

// dialOn dials addr from socket s through a QUIC endpoint of its own,
// which (with s) is closed when the connection or the transport ends.
// It owns s from the call on.
func (t *Transport) dialOn(ctx context.Context, s *net.UDPConn, addr netip.AddrPort) (*Conn, error) {
	qt := &quic.Transport{Conn: s}
	closeAll := func() {
		qt.Close()
		s.Close()
	}
	ctx, cancel := context.WithTimeout(ctx, t.cfg.HandshakeTimeout)
	defer cancel()
	qc, err := qt.Dial(ctx, net.UDPAddrFromAddrPort(addr), t.tlsConf, t.qconf)
	if err != nil {
		closeAll()
		return nil, err
	}
	c, err := t.handshake(ctx, qc, true)
	if err != nil {
		closeAll()
		return nil, err
	}
	c.Extra = true
	t.extraMu.Lock()
	defer t.extraMu.Unlock()
	if t.closing {
		c.Close(CodeNormal, "shutting down")
		closeAll()
		return nil, net.ErrClosed
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		select {
		case <-qc.Context().Done():
		case <-t.ctx.Done():
		}
		closeAll()
	}()
	return c, nil
}
