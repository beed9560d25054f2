package conns

import (
	"crypto/tls"
	"errors"
	"net"

	"github.com/quic-go/quic-go"
)

// ErrLost is matched (errors.Is) by the errors of a connection whose path
// failed: the other end or a relay went away, or the QUIC connection
// under it closed. The original error is wrapped too.
var ErrLost = errors.New("conns: connection lost")

type lostError struct{ err error }

func (e *lostError) Error() string   { return "conns: connection lost: " + e.err.Error() }
func (e *lostError) Unwrap() []error { return []error{ErrLost, e.err} }

// mapErr marks the errors that mean the path is gone.
func mapErr(err error) error {
	var se *quic.StreamError
	var ae *quic.ApplicationError
	var ie *quic.IdleTimeoutError
	var sr *quic.StatelessResetError
	if err != nil && (errors.As(err, &se) && se.Remote || errors.As(err, &ae) || errors.As(err, &ie) || errors.As(err, &sr)) {
		return &lostError{err}
	}
	return err
}

// streamConn is a QUIC stream as a net.Conn. Close ends both directions;
// CloseWrite only this side's (the peer then reads EOF).
type streamConn struct {
	*quic.Stream
	local, remote net.Addr
}

func (c *streamConn) LocalAddr() net.Addr  { return c.local }
func (c *streamConn) RemoteAddr() net.Addr { return c.remote }

func (c *streamConn) Read(b []byte) (int, error) {
	n, err := c.Stream.Read(b)
	return n, mapErr(err)
}

func (c *streamConn) Write(b []byte) (int, error) {
	n, err := c.Stream.Write(b)
	return n, mapErr(err)
}

// CloseWrite half-closes the connection: the peer reads EOF after what
// was written, and this side can still read.
func (c *streamConn) CloseWrite() error { return c.Stream.Close() }

// Close closes the connection in both directions.
func (c *streamConn) Close() error {
	c.Stream.CancelRead(0)
	return c.Stream.Close()
}

// tlsConn is an end-to-end TLS connection over relayed streams, with the
// two nodes as its addresses and CloseWrite sending TLS close_notify.
type tlsConn struct {
	*tls.Conn
	local, remote net.Addr
}

func (c *tlsConn) LocalAddr() net.Addr  { return c.local }
func (c *tlsConn) RemoteAddr() net.Addr { return c.remote }

func (c *tlsConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	return n, mapErr(err)
}

func (c *tlsConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	return n, mapErr(err)
}

// CloseWrite half-closes the connection: the peer reads EOF after what
// was written, and this side can still read.
func (c *tlsConn) CloseWrite() error { return c.Conn.CloseWrite() }
