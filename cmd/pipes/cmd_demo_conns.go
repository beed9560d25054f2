package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/pipesnet/pipes"
)

// demoForward: one node publishes a local HTTP server as a service that
// only one other node may use; that node forwards a local TCP port to it,
// as `pipes expose` and `pipes forward` do, and an HTTP request goes
// through.
func demoForward(ctx context.Context, say func(string, ...any), nodes []*demoNode) error {
	say("\n== Port forwarding over data connections")
	server, client := nodes[1], nodes[0]
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var running []<-chan error
	defer func() {
		cancel()
		for _, done := range running {
			<-done
		}
	}()
	goRun := func(f func() error) {
		done := make(chan error, 1)
		running = append(running, done)
		go func() { done <- f() }()
	}

	// The server's HTTP server, on a local port only.
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	web := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s's web server, you asked for %s", server.name, r.URL.Path)
	}), ReadHeaderTimeout: 5 * time.Second}
	goRun(func() error {
		go func() { <-ctx.Done(); web.Close() }()
		if err := web.Serve(hl); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	target := hl.Addr().String()

	// Exposed as the service "web", to the client only.
	sl, err := server.n.ListenAllowed("web", pipes.Allowed{Nodes: []pipes.NodeID{client.n.ID()}})
	if err != nil {
		return err
	}
	var dialer net.Dialer
	goRun(func() error {
		return relay(ctx, sl, func(ctx context.Context) (net.Conn, error) { return dialer.DialContext(ctx, "tcp", target) },
			func(c net.Conn) (string, string) { return remoteName(server.n, c) }, nil)
	})
	say("%s serves HTTP on %s and exposes it as the service \"web\" to %s only (ListenAllowed, like pipes expose).", server.name, target, client.name)

	// Forwarded from a local port of the client.
	fl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	goRun(func() error {
		return relay(ctx, fl, func(ctx context.Context) (net.Conn, error) { return client.n.Dial(ctx, server.n.ID(), "web") }, tcpFrom, nil)
	})
	say("%s forwards its local port %s to %s's \"web\" (like pipes forward or ssh -L): each TCP connection becomes a Dial.", client.name, fl.Addr(), server.name)

	url := "http://" + fl.Addr().String() + "/hello"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	say("GET %s: %s, %q", url, resp.Status, body)
	if len(nodes) > 2 {
		other := nodes[2]
		c, err := other.n.Dial(ctx, server.n.ID(), "web")
		if err == nil {
			c.Close()
		}
		say("%s dials %s's \"web\" too and is refused before any data flows (ErrRefused: %v).", other.name, server.name, errors.Is(err, pipes.ErrRefused))
	}
	cancel()
	for _, done := range running {
		if err := <-done; err != nil {
			return err
		}
	}
	running = nil
	return nil
}
