package pipes_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/pipesnet/pipes"
	"github.com/pipesnet/pipes/internal/testnet"
)

// httpOver returns an HTTP client whose connections are data connections
// from node n to service on node to.
func httpOver(n *pipes.Node, to pipes.NodeID, service string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return n.Dial(ctx, to, service) },
	}}
}

// serveHTTP serves a page naming the caller on l until the test ends.
func serveHTTP(t *testing.T, l net.Listener, who string) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s serves %s to %s", who, r.URL.Path, r.RemoteAddr)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
}

func get(t *testing.T, c *http.Client, path string) string {
	t.Helper()
	resp, err := c.Get("http://pipes" + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestDataConnections: net/http over Listen and Dial, directly between
// peers and through a relay; half-close, deadlines and addresses; clear
// errors for an unknown node, a service nobody listens on and a node the
// listener does not allow.
func TestDataConnections(t *testing.T) {
	a, r, b, _ := relayLineWith(t, "conns", true)
	lb, err := b.N.Listen("web")
	if err != nil {
		t.Fatal(err)
	}
	serveHTTP(t, lb, "bob")
	lr, err := r.N.Listen("web")
	if err != nil {
		t.Fatal(err)
	}
	serveHTTP(t, lr, "relay")
	if _, err := b.N.Listen("web"); !errors.Is(err, pipes.ErrExists) {
		t.Fatalf("second listener: %v", err)
	}

	// Through the relay (alice and bob are not peers), and direct.
	if got, want := get(t, httpOver(a.N, b.N.ID(), "web"), "/relayed"), "bob serves /relayed to "+a.N.ID().String(); got != want {
		t.Fatalf("relayed: %q, want %q", got, want)
	}
	if got, want := get(t, httpOver(a.N, r.N.ID(), "web"), "/direct"), "relay serves /direct to "+a.N.ID().String(); got != want {
		t.Fatalf("direct: %q, want %q", got, want)
	}

	// Diagnostics: the path and a ping, direct and through the relay.
	if p, err := a.N.PathTo(context.Background(), r.N.ID()); err != nil || !p.Direct || p.RTT <= 0 {
		t.Fatalf("path to the relay: %+v %v", p, err)
	}
	if rtt, err := a.N.Ping(context.Background(), b.N.ID()); err != nil || rtt <= 0 {
		t.Fatalf("ping bob: %v %v", rtt, err)
	}
	if p, err := a.N.PathTo(context.Background(), b.N.ID()); err != nil || p.Direct || p.Via != r.N.ID() {
		t.Fatalf("path to bob: %+v %v", p, err)
	}

	// Errors come fast and say why.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := a.N.Dial(ctx, b.N.ID(), "nobody-listens"); !errors.Is(err, pipes.ErrRefused) {
		t.Fatalf("service nobody listens on: %v", err)
	}
	if _, err := a.N.Dial(ctx, pipes.NodeID{1, 2, 3}, "web"); !errors.Is(err, pipes.ErrNotConnected) {
		t.Fatalf("unknown node: %v", err)
	}
	only, err := b.N.ListenAllowed("private", pipes.Allowed{Nodes: []pipes.NodeID{r.N.ID()}})
	if err != nil {
		t.Fatal(err)
	}
	go testnet.Echo(only)
	if _, err := a.N.Dial(ctx, b.N.ID(), "private"); !errors.Is(err, pipes.ErrRefused) {
		t.Fatalf("a node the listener does not allow: %v", err)
	}
	if c, err := r.N.Dial(ctx, b.N.ID(), "private"); err != nil {
		t.Fatalf("an allowed node: %v", err)
	} else {
		c.Close()
	}

	// Half-close, deadlines, addresses: direct and relayed.
	for _, target := range []*testnet.Member{r, b} {
		l, err := target.N.Listen("echo")
		if err != nil {
			t.Fatal(err)
		}
		go testnet.Echo(l)
		c, err := a.N.Dial(ctx, target.N.ID(), "echo")
		if err != nil {
			t.Fatal(err)
		}
		if ra, ok := c.RemoteAddr().(pipes.Addr); !ok || ra.Node != target.N.ID() || ra.Service != "echo" || c.LocalAddr().(pipes.Addr).Node != a.N.ID() {
			t.Fatalf("addresses %v -> %v", c.LocalAddr(), c.RemoteAddr())
		}
		msg := make([]byte, 200_000)
		rand.Read(msg)
		go func() {
			c.Write(msg)
			c.(interface{ CloseWrite() error }).CloseWrite()
		}()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		back, err := io.ReadAll(c)
		if err != nil || !bytes.Equal(back, msg) {
			t.Fatalf("echo through %s: %d bytes, %v", target.N.Location(), len(back), err)
		}
		c.SetReadDeadline(time.Now().Add(-time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, io.EOF) {
			t.Fatalf("read past the deadline: %v", err)
		}
		c.Close()
		l.Close()
	}
}

// TestManyConnections: 100 concurrent relayed connections each carry
// their own data.
func TestManyConnections(t *testing.T) {
	a, r, b, _ := relayLineWith(t, "many", true)
	// The relay has two peers, which agree on the address its packets come
	// from: its public address (here its loopback socket).
	testnet.Eventually(t, 30*time.Second, "the relay's public address", func() error {
		want := r.N.ListenAddrs()[0].Port()
		for _, ap := range r.N.PublicAddrs() {
			if ap.Port() == want {
				return nil
			}
		}
		return fmt.Errorf("public addresses %v", r.N.PublicAddrs())
	})
	b.ServeEcho(t)
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			c, err := a.N.Dial(ctx, b.N.ID(), "echo")
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(60 * time.Second))
			msg := bytes.Repeat([]byte{byte(i)}, 32<<10)
			go func() {
				c.Write(msg)
				c.(interface{ CloseWrite() error }).CloseWrite()
			}()
			back, err := io.ReadAll(c)
			if err != nil || !bytes.Equal(back, msg) {
				errs <- fmt.Errorf("connection %d: %d bytes back, %v", i, len(back), err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestRelayLost: a connection through a relay that goes away fails with
// an error (it does not hang), and dialing again says the node cannot be
// reached.
func TestRelayLost(t *testing.T) {
	a, r, b, _ := relayLineWith(t, "lost", true)
	b.ServeEcho(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := a.N.Dial(ctx, b.N.ID(), "echo")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	pipes.KillNode(r.N)
	c.SetDeadline(time.Now().Add(60 * time.Second)) // a safety net, not an assertion
	for {
		_, err := c.Write([]byte("more"))
		if err == nil {
			_, err = c.Read(buf)
		}
		if err == nil {
			continue
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal("the connection hung after its relay went away")
		}
		if !errors.Is(err, pipes.ErrConnectionLost) {
			t.Fatalf("the error does not say the connection was lost: %v", err)
		}
		break
	}
	testnet.Eventually(t, 60*time.Second, "dialing says the node cannot be reached", func() error {
		_, err := a.N.Dial(ctx, b.N.ID(), "echo")
		if errors.Is(err, pipes.ErrNotConnected) {
			return nil
		}
		return fmt.Errorf("dial: %v", err)
	})
}

// TestPunchAfterRelayedConnection: a data connection through a relay makes
// the two nodes punch a direct connection (no NAT between them here, so it
// succeeds; the lab tests NATs); the next connection goes direct.
func TestPunchAfterRelayedConnection(t *testing.T) {
	a, r, b, _ := relayLine(t, "punch")
	b.ServeEcho(t)
	if p, err := a.N.PathTo(context.Background(), b.N.ID()); err != nil || p.Direct || p.Via != r.N.ID() {
		t.Fatalf("before: %+v %v", p, err)
	}
	c, err := a.N.Dial(context.Background(), b.N.ID(), "echo")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	testnet.Eventually(t, 30*time.Second, "alice and bob connect directly", func() error {
		if p, err := a.N.PathTo(context.Background(), b.N.ID()); err != nil || !p.Direct {
			return fmt.Errorf("path to bob: %+v %v", p, err)
		}
		return nil
	})
	// The relayed connection still works.
	if _, err := c.Write([]byte("still here")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "still here" {
		t.Fatalf("relayed connection after the punch: %q %v", buf, err)
	}
}
