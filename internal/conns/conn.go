package conns

import (
	"crypto/tls"
	"net"

	"github.com/quic-go/quic-go"
)

// streamConn is a QUIC stream as a net.Conn. Close ends both directions;
// CloseWrite only this side's (the peer then reads EOF).
type streamConn struct {
	*quic.Stream
	local, remote net.Addr
}

func (c *streamConn) LocalAddr() net.Addr  { return c.local }
func (c *streamConn) RemoteAddr() net.Addr { return c.remote }

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

// CloseWrite half-closes the connection: the peer reads EOF after what
// was written, and this side can still read.
func (c *tlsConn) CloseWrite() error { return c.Conn.CloseWrite() }
