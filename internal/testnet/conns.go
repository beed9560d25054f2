package testnet

import (
	"io"
	"net"
	"testing"
)

// ServeEcho runs an echo service "echo" on m's node until the test ends.
func (m *Member) ServeEcho(t testing.TB) {
	t.Helper()
	l, err := m.N.Listen("echo")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go Echo(l)
}

// Echo serves l until it is closed: each connection gets back what it
// sent, then EOF.
func Echo(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			io.Copy(c, c)
			c.(interface{ CloseWrite() error }).CloseWrite()
		}()
	}
}
