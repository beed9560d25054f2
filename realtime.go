package pipes

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/pipesnet/pipes/internal/pipeline"
)

// udpMap bridges a local UDP socket and a realtime point-to-point
// pipeline. Its goroutines (two, and one for the HandleUDPPortMap
// callbacks) belong to the pipeline and stop when the map closes (node
// shutdown, pipeline shutdown, or ClosePortMap).
type udpMap struct {
	conn    *net.UDPConn
	last    atomic.Pointer[net.UDPAddr] // where pipeline packets go: the last sender to the port
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	dropped atomic.Uint64 // packets with nowhere to go, or refused
}

// SetupUDPPortMap maps a local UDP port to a realtime point-to-point
// pipeline: each datagram a local application sends to the port is put on
// the pipeline (one packet), and each packet from the other node is sent
// as one datagram to the local address that last sent to the port (until
// one has, they are dropped and counted in Stats().Dropped). host ""
// means 127.0.0.1 (use "0.0.0.0" for every interface); port 0 picks a
// free port. When the map is ready the listeners' HandleUDPPortMap is
// called (on a goroutine of the map, which must not call ClosePortMap)
// and UDPAddr reports the address. A
// datagram larger than the path to the other node carries is dropped and
// counted (see Put for the limit). The map lasts until the node shuts
// down or ClosePortMap.
func (p *Pipeline) SetupUDPPortMap(host string, port int) error {
	if !p.Realtime() || !p.IsPointToPoint() {
		return fmt.Errorf("%w: a UDP port map needs a realtime point-to-point pipeline", ErrNotRealtime)
	}
	e := p.n.engineOrNil()
	if e == nil {
		return ErrNotActive
	}
	if host == "" {
		host = "127.0.0.1"
	}
	addr, err := net.ResolveUDPAddr("udp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("pipes: UDP port map address: %w", err)
	}
	p.mu.Lock()
	busy := p.mu.udp != nil
	p.mu.Unlock()
	if busy {
		return fmt.Errorf("%w: pipeline %q already has a UDP port map", ErrExists, p.def.Name)
	}
	conn, err := net.ListenUDP("udp", addr)
	if err != nil {
		return fmt.Errorf("pipes: UDP port map: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &udpMap{conn: conn, cancel: cancel}
	ch := make(chan *pipeline.Packet, 4096)
	err = e.Subscribe(ctx, p.def.ID, func(pk *pipeline.Packet) bool {
		select {
		case ch <- pk:
			return true
		default:
			return false
		}
	}, func() { close(ch) })
	if err != nil {
		cancel()
		conn.Close()
		return fmt.Errorf("pipes: %w", err)
	}
	p.mu.Lock()
	if p.mu.udp != nil || p.mu.closed {
		p.mu.Unlock()
		cancel()
		conn.Close()
		return fmt.Errorf("%w: pipeline %q already has a UDP port map, or was shut down", ErrExists, p.def.Name)
	}
	p.mu.udp = m
	ls := append([]PipelineListener(nil), p.mu.listeners...)
	p.mu.Unlock()
	m.wg.Add(3)
	go m.fromPort(p)
	go m.toPort(p, ch)
	go func() {
		defer m.wg.Done()
		for _, l := range ls {
			l.HandleUDPPortMap(p)
		}
	}()
	return nil
}

// fromPort puts what arrives on the port on the pipeline.
func (m *udpMap) fromPort(p *Pipeline) {
	defer m.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		n, from, err := m.conn.ReadFromUDP(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // e.g. ICMP port unreachable of an earlier send
		}
		if last := m.last.Load(); last == nil || !last.IP.Equal(from.IP) || last.Port != from.Port {
			m.last.Store(from)
		}
		if _, err := p.Put(buf[:n]); err != nil {
			m.dropped.Add(1)
			if errors.Is(err, ErrNotActive) || errors.Is(err, ErrClosedPipeline) {
				return
			}
		}
	}
}

// toPort sends the pipeline's packets to the last sender to the port.
func (m *udpMap) toPort(p *Pipeline, ch <-chan *pipeline.Packet) {
	defer m.wg.Done()
	for pk := range ch {
		to := m.last.Load()
		if to == nil {
			m.dropped.Add(1)
			continue
		}
		data, err := p.packet(pk).Data()
		if err != nil {
			m.dropped.Add(1)
			continue
		}
		if _, err := m.conn.WriteToUDP(data, to); err != nil {
			m.dropped.Add(1)
		}
	}
}

// close stops the map and waits for its goroutines.
func (m *udpMap) close() {
	m.cancel()
	m.conn.Close()
	m.wg.Wait()
}

// ClosePortMap removes the pipeline's UDP port map, if it has one.
func (p *Pipeline) ClosePortMap() {
	p.mu.Lock()
	m := p.mu.udp
	p.mu.udp = nil
	p.mu.Unlock()
	if m != nil {
		m.close()
	}
}

// UDPAddr returns the local address of the UDP port map (nil without one):
// the spec's udpHost and udpPort.
func (p *Pipeline) UDPAddr() *net.UDPAddr {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mu.udp == nil {
		return nil
	}
	a, _ := p.mu.udp.conn.LocalAddr().(*net.UDPAddr)
	return a
}

// realtimeErr maps the engine's datagram errors.
func realtimeErr(err error) error {
	var tl *pipeline.DatagramTooLargeError
	if errors.As(err, &tl) {
		return &DatagramTooLargeError{Max: tl.Max}
	}
	return nil
}

// DatagramTooLargeError is returned by Put on a realtime pipeline for a
// packet larger than one datagram on the path to a receiver. Max is the
// largest data that fits now (QUIC probes the path, so it may grow). It
// matches ErrTooLarge with errors.Is.
type DatagramTooLargeError struct{ Max int }

func (e *DatagramTooLargeError) Error() string {
	return fmt.Sprintf("pipes: realtime packet larger than a datagram on the path (at most %d bytes now)", e.Max)
}

// Unwrap makes errors.Is(err, ErrTooLarge) true.
func (e *DatagramTooLargeError) Unwrap() error { return ErrTooLarge }
