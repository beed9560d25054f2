package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pipesnet/pipes"
)

func (a *app) demoCmd() *cobra.Command {
	var count int
	var verbose bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a local network of several nodes and narrate what happens",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if count < 2 || count > 50 {
				return errors.New("--nodes must be between 2 and 50")
			}
			return runDemo(cmd.Context(), a.out, count, verbose)
		},
	}
	cmd.Flags().IntVar(&count, "nodes", 6, "how many nodes to run")
	cmd.Flags().BoolVar(&verbose, "verbose", false, "show the nodes' logs")
	return cmd
}

var demoNames = []string{"alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"}

// demoNode is one participant: its own platform (data directory) and node.
type demoNode struct {
	name string
	p    *pipes.Platform
	n    *pipes.Node
}

func runDemo(ctx context.Context, out io.Writer, count int, verbose bool) error {
	say := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }
	dir, err := os.MkdirTemp("", "pipes-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	logger := slog.New(slog.DiscardHandler)
	if verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}

	secretBytes := make([]byte, 16)
	rand.Read(secretBytes)
	secret := hex.EncodeToString(secretBytes)
	netPath := filepath.Join(dir, "demo.net")
	nf, err := pipes.CreateNetwork(netPath, pipes.NetworkSpec{Name: "demo", Secret: secret, KDF: pipes.FastKDF})
	if err != nil {
		return err
	}
	say("== Pipes demo: %d nodes on 127.0.0.1, each with its own data directory under %s", count, dir)
	say("Created network %q (%s); its netfile holds a verifier of the secret, not the secret.", nf.Name, nf.ID.String()[:16])

	nodes := make([]*demoNode, count)
	defer func() {
		for _, d := range nodes {
			if d != nil {
				d.p.Close()
			}
		}
	}()
	for i := range nodes {
		name := demoNames[i%len(demoNames)]
		if i >= len(demoNames) {
			name = fmt.Sprintf("%s%d", name, i/len(demoNames)+1)
		}
		d, err := newDemoNode(dir, name, netPath, secret, logger)
		if err != nil {
			return err
		}
		nodes[i] = d
	}
	// The first node is the gateway: the others know only its address.
	if err := nodes[0].n.Start(ctx); err != nil {
		return err
	}
	gw := nodes[0].n.ListenAddrs()[0]
	say("%s starts first and is the gateway at %s; every other node is told only that address.", nodes[0].name, gw)
	for _, d := range nodes[1:] {
		d.n.Network().AddGateway(gw.Addr().String(), int(gw.Port()))
		if err := d.n.Start(ctx); err != nil {
			return err
		}
	}
	start := time.Now()
	if err := waitFor(ctx, 30*time.Second, func() bool { return allSee(nodes, count-1) }); err != nil {
		return fmt.Errorf("nodes did not find each other: %w", err)
	}
	say("\nAfter %v every node sees the %d others online, through peer exchange and signed presence:", time.Since(start).Round(time.Millisecond), count-1)
	for _, d := range nodes {
		var peers []string
		for _, r := range d.n.ConnectedPeers() {
			peers = append(peers, r.Name())
		}
		say("  %-6s %s  direct peers: %-34s online nodes: %d", d.name, d.n.ID().String()[:8], strings.Join(peers, ","), len(d.n.ConnectedNodes()))
	}

	leaver := nodes[count-1]
	watcher := nodes[0]
	events := make(chan string, 16)
	l := &pipes.NodeListenerFuncs{NodeStatusUpdate: func(r pipes.NodeRef, _ *pipes.Node) {
		if r.ID() == leaver.n.ID() {
			select {
			case events <- fmt.Sprintf("%s@%s online=%v", r.Name(), r.Location(), r.IsConnected()):
			default:
			}
		}
	}}
	watcher.n.AddListener(l)
	say("\n%s shuts down cleanly...", leaver.name)
	start = time.Now()
	if err := leaver.n.Shutdown(); err != nil {
		return err
	}
	if err := waitFor(ctx, 30*time.Second, func() bool { return allSee(nodes[:count-1], count-2) }); err != nil {
		return fmt.Errorf("departure not seen: %w", err)
	}
	say("After %v all %d remaining nodes report %s offline.", time.Since(start).Round(time.Millisecond), count-1, leaver.name)
	drain(events, func(s string) { say("  %s's listener was told: %s", watcher.name, s) })
	known := 0
	for _, r := range watcher.n.KnownNodes() {
		if r.ID() == leaver.n.ID() {
			known++
		}
	}
	say("%s still lists %s among its known nodes: %v", watcher.name, leaver.name, known == 1)

	say("\n%s starts again...", leaver.name)
	start = time.Now()
	if err := leaver.n.Start(ctx); err != nil {
		return err
	}
	if err := waitFor(ctx, 30*time.Second, func() bool { return allSee(nodes, count-1) }); err != nil {
		return fmt.Errorf("restart not seen: %w", err)
	}
	say("After %v %s is back and every node sees all %d others again.", time.Since(start).Round(time.Millisecond), leaver.name, count-1)
	drain(events, func(s string) { say("  %s's listener was told: %s", watcher.name, s) })
	watcher.n.RemoveListener(l)

	if err := demoChat(ctx, say, nodes); err != nil {
		return fmt.Errorf("chat: %w", err)
	}
	if err := demoHistory(ctx, say, nodes); err != nil {
		return fmt.Errorf("history: %w", err)
	}
	if err := demoEncrypted(ctx, say, nodes); err != nil {
		return fmt.Errorf("encrypted pipeline: %w", err)
	}
	if err := demoFile(ctx, say, dir, nodes); err != nil {
		return fmt.Errorf("file: %w", err)
	}
	if err := demoShare(ctx, say, dir, nodes); err != nil {
		return fmt.Errorf("shared file: %w", err)
	}
	if err := demoForward(ctx, say, nodes); err != nil {
		return fmt.Errorf("port forwarding: %w", err)
	}
	if err := demoRelay(ctx, say, dir, logger); err != nil {
		return fmt.Errorf("relay: %w", err)
	}

	say("\nAn outsider with the netfile but the wrong secret cannot join:")
	out2, err := pipes.Open(filepath.Join(dir, "outsider"), pipes.WithTestMode(true), pipes.WithLogger(logger))
	if err != nil {
		return err
	}
	defer out2.Close()
	nw, err := out2.AddNetwork(netPath)
	if err != nil {
		return err
	}
	ok, err := nw.SetSecret("not the secret")
	if err != nil {
		return err
	}
	say("  SetSecret with a wrong secret returns %v; starting the node then fails: %v", ok, startErr(ctx, out2, nw))

	say("\nShutting everything down.")
	for _, d := range nodes {
		if err := d.p.Close(); err != nil {
			return err
		}
	}
	nodes = nil
	say("Done: %d nodes found each other from one gateway, saw a node leave and come back, chatted on a verified broadcast pipeline, caught a node up on a persistent one, sealed a pipeline with a secret of its own, sent a file, shared one that outlived its first holder, forwarded a TCP port to another node's web server, passed a sealed message through a relay, and kept an outsider out.", count)
	return nil
}

func startErr(ctx context.Context, p *pipes.Platform, nw *pipes.Network) error {
	id, err := p.AddIdentity("mallory")
	if err != nil {
		return err
	}
	n, err := p.AddNode(nw, id, "outside")
	if err != nil {
		return err
	}
	return n.Start(ctx)
}

func newDemoNode(dir, name, netPath, secret string, logger *slog.Logger, opts ...pipes.NodeOption) (*demoNode, error) {
	p, err := pipes.Open(filepath.Join(dir, name), pipes.WithTestMode(true), pipes.WithLogger(logger), pipes.WithLogTag(name))
	if err != nil {
		return nil, err
	}
	nw, err := p.AddNetwork(netPath)
	if err != nil {
		p.Close()
		return nil, err
	}
	if ok, err := nw.SetSecret(secret); err != nil || !ok {
		p.Close()
		return nil, fmt.Errorf("set secret: ok=%v err=%v", ok, err)
	}
	id, err := p.AddIdentity(name)
	if err != nil {
		p.Close()
		return nil, err
	}
	n, err := p.AddNode(nw, id, name+"-laptop", opts...)
	if err != nil {
		p.Close()
		return nil, err
	}
	return &demoNode{name: name, p: p, n: n}, nil
}

// allSee reports whether each running node sees want others online.
func allSee(nodes []*demoNode, want int) bool {
	for _, d := range nodes {
		if len(d.n.ConnectedNodes()) != want {
			return false
		}
	}
	return true
}

// waitFor polls cond until it holds, ctx ends or limit passes.
func waitFor(ctx context.Context, limit time.Duration, cond func() bool) error {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not after %v", limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

func drain(ch chan string, fn func(string)) {
	for {
		select {
		case s := <-ch:
			fn(s)
		default:
			return
		}
	}
}
