package dispatch

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/kinds"
)

// Streams. A QUIC stream a direct peer opens begins with two bytes, its
// protocol (a number of package kinds, kinds.Stream*). AcceptStream reads
// them on a goroutine of the dispatcher, within streamHeaderTime, and
// hands the stream, past those two bytes, to the handler registered for
// the protocol. A stream of a protocol nobody registered, one that does
// not say its protocol in time, and streams beyond maxReading waiting to
// say it are reset and counted.

// StreamHandler takes a stream a direct peer opened, past its protocol
// bytes. It runs on a goroutine of the dispatcher and must not block: it
// hands the stream to a goroutine of its service (which owns it from then
// on) or resets it.
type StreamHandler func(peer ids.Node, st *quic.Stream)

// StreamCode is the QUIC error code of the streams the dispatcher resets.
const StreamCode quic.StreamErrorCode = 0x52

const (
	streamHeaderTime = 10 * time.Second
	maxReading       = 1024 // streams whose protocol bytes are awaited at once
)

// streams is the dispatcher's part for streams.
type streams struct {
	mu       sync.Mutex
	handlers map[uint16]StreamHandler
	reading  int
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

func (s *streams) init() {
	s.handlers = map[uint16]StreamHandler{}
	s.ctx, s.cancel = context.WithCancel(context.Background())
}

// HandleStream registers h for the streams of protocol proto. A protocol
// registered already is ErrDuplicate.
func (d *Dispatcher) HandleStream(proto uint16, h StreamHandler) error {
	if h == nil {
		return fmt.Errorf("dispatch: stream protocol %#x: no handler", proto)
	}
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	if closed {
		return ErrClosed
	}
	s := &d.streams
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.handlers[proto]; ok {
		return fmt.Errorf("%w: stream protocol %#x (%s)", ErrDuplicate, proto, kinds.StreamName(proto))
	}
	s.handlers[proto] = h
	return nil
}

// AcceptStream takes a stream peer opened (mesh.Config.OnStream). It does
// not block.
func (d *Dispatcher) AcceptStream(peer ids.Node, st *quic.Stream) {
	s := &d.streams
	s.mu.Lock()
	if s.ctx.Err() != nil || s.reading >= maxReading {
		s.mu.Unlock()
		d.dropped.Add(1)
		resetStream(st)
		return
	}
	s.reading++
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		h, err := d.readProto(st)
		s.mu.Lock()
		s.reading--
		s.mu.Unlock()
		if err != nil {
			d.log.Debug("refused a stream", "from", peer.Short(), "err", err)
			resetStream(st)
			return
		}
		h(peer, st)
	}()
}

// readProto reads a stream's protocol and returns its handler. Closing
// the dispatcher resets a stream still being read.
func (d *Dispatcher) readProto(st *quic.Stream) (StreamHandler, error) {
	s := &d.streams
	stop := context.AfterFunc(s.ctx, func() { resetStream(st) })
	defer stop()
	st.SetReadDeadline(time.Now().Add(streamHeaderTime))
	var b [2]byte
	if _, err := io.ReadFull(st, b[:]); err != nil {
		return nil, fmt.Errorf("dispatch: a stream's protocol: %w", err)
	}
	st.SetReadDeadline(time.Time{})
	proto := binary.BigEndian.Uint16(b[:])
	s.mu.Lock()
	h := s.handlers[proto]
	closed := s.ctx.Err() != nil
	s.mu.Unlock()
	switch {
	case closed:
		d.dropped.Add(1)
		return nil, ErrClosed
	case h == nil:
		d.unknown.Add(1)
		return nil, fmt.Errorf("%w: stream protocol %#x", ErrUnknownKind, proto)
	}
	return h, nil
}

// close resets the streams whose protocol is still awaited and
// waits for their goroutines.
func (s *streams) close() {
	s.mu.Lock()
	s.cancel()
	s.mu.Unlock()
	s.wg.Wait()
}

// StreamHeader returns the bytes a stream of protocol proto begins with:
// the opener writes them first.
func StreamHeader(proto uint16) []byte { return binary.BigEndian.AppendUint16(nil, proto) }

func resetStream(st *quic.Stream) {
	st.CancelRead(StreamCode)
	st.CancelWrite(StreamCode)
}
