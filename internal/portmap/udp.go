package portmap

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"
)

// errNoAnswer means that the gateway did not answer a protocol (timeout,
// port unreachable, or an answer saying it does not speak the version or
// the opcode).
var errNoAnswer = errors.New("no answer")

// errIgnore, returned by a parse function of exchange, drops the packet and
// keeps waiting.
var errIgnore = errors.New("ignored packet")

// initialRTO is the first retransmission timeout of NAT-PMP and PCP
// requests (RFC 6886 section 3.1); it doubles on each retransmission.
const initialRTO = 250 * time.Millisecond

// exchange sends the request built by build (given the local address of
// the socket) to server, retransmitting with exponential backoff until
// parse accepts an answer (returns nil or an error other than errIgnore) or
// ctx ends.
func exchange(ctx context.Context, server netip.AddrPort, build func(local netip.Addr) []byte, parse func([]byte) error) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", server.String())
	if err != nil {
		return fmt.Errorf("%w: %w", errNoAnswer, err)
	}
	conn := c.(*net.UDPConn)
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()

	local := conn.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
	req := build(local)
	buf := make([]byte, 1500)
	rto := initialRTO
	for {
		if _, err := conn.Write(req); err != nil {
			return noAnswer(ctx, err)
		}
		deadline := time.Now().Add(rto)
		if err := conn.SetReadDeadline(deadline); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return noAnswer(ctx, ctx.Err())
		}
		for {
			n, err := conn.Read(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil {
					break // retransmit
				}
				return noAnswer(ctx, err)
			}
			if err := parse(buf[:n]); !errors.Is(err, errIgnore) {
				return err
			}
		}
		rto *= 2
	}
}

func noAnswer(ctx context.Context, err error) error {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%w: port unreachable", errNoAnswer)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%w: %w", errNoAnswer, ctx.Err())
	}
	return fmt.Errorf("%w: %w", errNoAnswer, err)
}
