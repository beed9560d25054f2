package conns

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/pipesnet/pipes/internal/ids"
)

// ErrLost is matched (errors.Is) by the errors of a connection whose path
// failed: the other end or a relay went away, or the QUIC connection
// under it closed. The original error is wrapped too.
var ErrLost = errors.New("conns: connection lost")

// errTruncated: relayed streams ended without TLS's close_notify, which
// only a failing (or malicious) relay does.
var errTruncated = errors.New("the relayed stream ended before the other end closed it")

type lostError struct{ err error }

func (e *lostError) Error() string   { return "conns: connection lost: " + e.err.Error() }
func (e *lostError) Unwrap() []error { return []error{ErrLost, e.err} }

// mapErr marks the errors that mean the path is gone.
func mapErr(err error) error {
	if err == nil || errors.Is(err, ErrLost) {
		return err
	}
	var se *quic.StreamError
	var ae *quic.ApplicationError
	var ie *quic.IdleTimeoutError
	var sr *quic.StatelessResetError
	if errors.As(err, &se) && se.Remote || errors.As(err, &ae) || errors.As(err, &ie) || errors.As(err, &sr) {
		return &lostError{err}
	}
	return err
}

// streamConn is a QUIC stream as a net.Conn. Close ends both directions
// (what was written is still delivered); CloseWrite only this side's (the
// peer then reads EOF).
type streamConn struct {
	st            *quic.Stream
	local, remote net.Addr
	peer          ids.Node   // the node at the other end
	wmu           sync.Mutex // held by Write; Close waits for it
	closed        atomic.Bool
}

func newStreamConn(st *quic.Stream, local, remote net.Addr) *streamConn {
	return &streamConn{st: st, local: local, remote: remote}
}

// RemoteNode is the node at the other end (the one dialled, or the one
// that dialled: a served connection names its asker by it).
func (c *streamConn) RemoteNode() ids.Node { return c.peer }

func (c *streamConn) LocalAddr() net.Addr                { return c.local }
func (c *streamConn) RemoteAddr() net.Addr               { return c.remote }
func (c *streamConn) SetDeadline(t time.Time) error      { return c.st.SetDeadline(t) }
func (c *streamConn) SetReadDeadline(t time.Time) error  { return c.st.SetReadDeadline(t) }
func (c *streamConn) SetWriteDeadline(t time.Time) error { return c.st.SetWriteDeadline(t) }

func (c *streamConn) Read(b []byte) (int, error) {
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	n, err := c.st.Read(b)
	if err != nil && c.closed.Load() {
		err = net.ErrClosed
	}
	return n, mapErr(err)
}

func (c *streamConn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	n, err := c.st.Write(b)
	if err != nil && c.closed.Load() {
		err = net.ErrClosed
	}
	return n, mapErr(err)
}

// CloseWrite half-closes the connection: the peer reads EOF after what
// was written, and this side can still read.
func (c *streamConn) CloseWrite() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.st.Close()
}

// Close closes the connection in both directions. A Write blocked on flow
// control returns (with net.ErrClosed); what was written before is still
// delivered.
func (c *streamConn) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	c.st.CancelRead(0)
	if !c.wmu.TryLock() {
		c.st.SetWriteDeadline(time.Unix(1, 0)) // wake a blocked Write
		c.wmu.Lock()
		c.st.SetWriteDeadline(time.Time{})
	}
	defer c.wmu.Unlock()
	return c.st.Close()
}

// tlsUnder is what TLS runs over on relayed streams: an end of stream that
// TLS did not announce with close_notify is a truncation, not an EOF
// (crypto/tls would otherwise report it as a clean EOF on a record
// boundary).
type tlsUnder struct{ *streamConn }

func (u tlsUnder) Read(b []byte) (int, error) {
	n, err := u.streamConn.Read(b)
	if errors.Is(err, io.EOF) {
		if n > 0 {
			return n, nil // the stream repeats its EOF at the next Read
		}
		err = &lostError{errTruncated}
	}
	return n, err
}

// tlsConn is an end-to-end TLS connection over relayed streams, with the
// two nodes as its addresses and CloseWrite sending TLS close_notify.
type tlsConn struct {
	*tls.Conn
	local, remote net.Addr
	peer          ids.Node // the node at the other end, end to end
}

// RemoteNode is the node at the other end, as its TLS certificate names
// it.
func (c *tlsConn) RemoteNode() ids.Node { return c.peer }

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
