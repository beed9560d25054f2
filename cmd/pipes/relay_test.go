package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// TestRelayHalfCloseAndStop: relay passes each direction's end on as a
// half-close, reports the connection, and closes its listener and the
// open connections when its context ends.
func TestRelayHalfCloseAndStop(t *testing.T) {
	// The target reads until the client's half-close, then answers and
	// closes.
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b, _ := io.ReadAll(c)
				fmt.Fprintf(c, "read %d bytes: %s", len(b), b)
			}()
		}
	}()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := make(chan connEvent, 16)
	done := make(chan error, 1)
	var d net.Dialer
	go func() {
		done <- relay(ctx, ln, func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", tl.Addr().String()) },
			tcpFrom, func(e connEvent) { events <- e })
	}()
	next := func() connEvent {
		select {
		case e := <-events:
			return e
		case <-time.After(time.Minute):
			t.Fatal("no event")
			return connEvent{}
		}
	}

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("ping"))
	c.(*net.TCPConn).CloseWrite()
	reply, err := io.ReadAll(c) // ends when the target's close arrives
	c.Close()
	if err != nil || string(reply) != "read 4 bytes: ping" {
		t.Fatalf("reply %q %v", reply, err)
	}
	if e := next(); e.Event != "open" || e.Conn != 1 || e.From != c.LocalAddr().String() {
		t.Fatalf("first event %+v", e)
	}
	if e := next(); e.Event != "close" || e.Sent != 4 || e.Received != int64(len(reply)) || e.Error != "" {
		t.Fatalf("second event %+v", e)
	}

	// A connection still open when the context ends is closed.
	c2, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if e := next(); e.Event != "open" || e.Conn != 2 {
		t.Fatalf("third event %+v", e)
	}
	cancel()
	io.ReadAll(c2)
	if err := <-done; err != nil {
		t.Fatalf("relay: %v", err)
	}
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Fatal("the listener accepts after the context ended")
	}
}
