package pipes

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/pipesnet/pipes/internal/pipeline"
)

// udpBuffer is the socket buffer a port map asks for.
const udpBuffer = 4 << 20

// udpMap bridges a local UDP socket and a realtime point-to-point
// pipeline. Its goroutines (two, and one for the HandleUDPPortMap
// callbacks) belong to the pipeline and stop when the map closes (node
// shutdown, pipeline shutdown, or ClosePortMap).
type udpMap struct {
	conn    *net.UDPConn
	last    atomic.Pointer[net.UDPAddr] // where pipeline packets go: the last sender to the port
	ctx     context.Context
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
//
// The map answers whoever sent to it last: any process that can send a
// datagram to the port can take over the pipeline's output and put
// packets on it. The default host, 127.0.0.1, limits that to local
// processes; listen on other addresses only where every sender that can
// reach the port is trusted.
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
	// Room for bursts (the kernel may grant less; it is not an error).
	conn.SetReadBuffer(udpBuffer)
	conn.SetWriteBuffer(udpBuffer)
	ctx, cancel := context.WithCancel(context.Background())
	m := &udpMap{conn: conn, ctx: ctx, cancel: cancel}
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
		return mapErr(err, "")
	}
	p.mu.Lock()
	if p.mu.udp != nil || p.mu.closed || p.n.engineOrNil() != e {
		p.mu.Unlock()
		cancel()
		conn.Close()
		if p.n.engineOrNil() != e {
			return ErrNotActive // the node stopped meanwhile
		}
		return fmt.Errorf("%w: pipeline %q already has a UDP port map, or was shut down", ErrExists, p.def.Name)
	}
	p.mu.udp = m
	ls := append([]PipelineListener(nil), p.mu.listeners...)
	p.mu.Unlock()
	m.wg.Add(3)
	go m.fromPort(p, e)
	go m.toPort(p, ch)
	go func() {
		defer m.wg.Done()
		for _, l := range ls {
			l.HandleUDPPortMap(p)
		}
	}()
	return nil
}

// batchConn reads and writes several datagrams per system call
// (recvmmsg and sendmmsg where the system has them).
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

func newBatchConn(c *net.UDPConn) batchConn {
	if a, ok := c.LocalAddr().(*net.UDPAddr); ok && a.IP.To4() == nil && !a.IP.IsUnspecified() {
		return ipv6.NewPacketConn(c)
	}
	return ipv4.NewPacketConn(c)
}

// udpBatch is how many datagrams a port map moves per system call.
const udpBatch = 32

// fromPort puts what arrives on the port on the pipeline.
func (m *udpMap) fromPort(p *Pipeline, e *pipeline.Engine) {
	defer m.wg.Done()
	bc := newBatchConn(m.conn)
	ms := make([]ipv4.Message, udpBatch)
	for i := range ms {
		ms[i].Buffers = [][]byte{make([]byte, 64<<10)}
	}
	for {
		n, err := bc.ReadBatch(ms, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // e.g. ICMP port unreachable of an earlier send
		}
		for _, msg := range ms[:n] {
			if from, ok := msg.Addr.(*net.UDPAddr); ok {
				if last := m.last.Load(); last == nil || !last.IP.Equal(from.IP) || last.Port != from.Port {
					m.last.Store(from)
				}
			}
			// PutDatagram waits while the link's datagram queue is full,
			// so that under overload the socket's buffer, not work
			// already done, absorbs the excess.
			if err := e.PutDatagram(m.ctx, p.def.ID, msg.Buffers[0][:msg.N]); err != nil {
				m.dropped.Add(1)
				if m.ctx.Err() != nil || errors.Is(err, pipeline.ErrClosed) || errors.Is(err, pipeline.ErrUnknown) {
					return
				}
			}
		}
	}
}

// toPort sends the pipeline's packets to the last sender to the port,
// as many per system call as are waiting (up to udpBatch).
func (m *udpMap) toPort(p *Pipeline, ch <-chan *pipeline.Packet) {
	defer m.wg.Done()
	bc := newBatchConn(m.conn)
	ms := make([]ipv4.Message, 0, udpBatch)
	add := func(pk *pipeline.Packet) {
		to := m.last.Load()
		if to == nil {
			m.dropped.Add(1)
			return
		}
		data, err := p.packet(pk).Data()
		if err != nil {
			m.dropped.Add(1)
			return
		}
		ms = append(ms, ipv4.Message{Buffers: [][]byte{data}, Addr: to})
	}
	for pk := range ch {
		ms = ms[:0]
		add(pk)
	more:
		for len(ms) < udpBatch {
			select {
			case pk, ok := <-ch:
				if !ok {
					break more
				}
				add(pk)
			default:
				break more
			}
		}
		for sent := 0; sent < len(ms); {
			n, err := bc.WriteBatch(ms[sent:], 0)
			if err != nil {
				m.dropped.Add(uint64(len(ms) - sent))
				break
			}
			sent += n
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
