package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/pipesnet/pipes"
)

// demoChat: one node creates a broadcast pipeline, every node subscribes,
// two nodes talk.
func demoChat(ctx context.Context, say func(string, ...any), nodes []*demoNode) error {
	say("\n== A broadcast pipeline")
	host := nodes[1]
	id, err := host.n.CreatePipeline("chat", pipes.PipelineOptions{})
	if err != nil {
		return err
	}
	say("%s creates the live pipeline \"chat\" (%s); its definition spreads to every node.", host.name, id.String()[:16])
	subs := make([]<-chan *pipes.Packet, len(nodes))
	names := map[pipes.NodeID]string{}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for i, d := range nodes {
		names[d.n.ID()] = d.name
		wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
		p, err := d.n.WaitPipeline(wctx, id)
		wcancel()
		if err != nil {
			return fmt.Errorf("%s: %w", d.name, err)
		}
		subs[i] = p.Subscribe(sctx)
	}
	talk := func(from *demoNode, text string) error {
		p, err := from.n.Pipeline(id)
		if err != nil {
			return err
		}
		if _, err := p.Put([]byte(text)); err != nil {
			return err
		}
		say("%s says: %q", from.name, text)
		for i, d := range nodes {
			if d == from {
				continue
			}
			select {
			case pk := <-subs[i]:
				data, _ := pk.Data()
				say("  %-6s received %q from %s, signature verified", d.name, data, names[pk.Sender()])
			case <-time.After(30 * time.Second):
				return fmt.Errorf("%s received nothing", d.name)
			}
		}
		return nil
	}
	if err := talk(host, "hello, everyone"); err != nil {
		return err
	}
	return talk(nodes[2], "hi "+host.name+"!")
}

// demoRelay: three nodes in a line on a network of their own; the two ends
// talk over a point-to-point pipeline through the middle one, which sees
// only ciphertext.
func demoRelay(ctx context.Context, say func(string, ...any), dir string, logger *slog.Logger) error {
	say("\n== A point-to-point pipeline through a relay")
	b := make([]byte, 16)
	rand.Read(b)
	secret := hex.EncodeToString(b)
	netPath := filepath.Join(dir, "line.net")
	if _, err := pipes.CreateNetwork(netPath, pipes.NetworkSpec{Name: "line", Secret: secret, KDF: pipes.FastKDF}); err != nil {
		return err
	}
	one := pipes.WithTargetDegree(1) // keep the line a line
	var line []*demoNode
	defer func() {
		for _, d := range line {
			d.p.Close()
		}
	}()
	for _, name := range []string{"ivan", "judy", "ken"} {
		d, err := newDemoNode(dir, name, netPath, secret, logger, one)
		if err != nil {
			return err
		}
		line = append(line, d)
	}
	ivan, judy, ken := line[0], line[1], line[2]
	if err := ivan.n.Start(ctx); err != nil {
		return err
	}
	gw := ivan.n.ListenAddrs()[0]
	for _, d := range []*demoNode{judy, ken} {
		d.n.Network().AddGateway(gw.Addr().String(), int(gw.Port()))
		if err := d.n.Start(ctx); err != nil {
			return err
		}
	}
	if err := waitFor(ctx, 30*time.Second, func() bool { return allSee(line, 2) }); err != nil {
		return err
	}
	say("judy and ken each know only ivan: judy's peers %v, ken's peers %v.", peerNames(judy.n), peerNames(ken.n))
	id, err := judy.n.CreatePipeline("judy-and-ken", pipes.PipelineOptions{ToNode: ken.n.ID()})
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	kp, err := ken.n.WaitPipeline(wctx, id)
	if err != nil {
		return err
	}
	ch := kp.Subscribe(wctx)
	jp, _ := judy.n.Pipeline(id)
	if _, err := jp.Put([]byte("meet at noon")); err != nil {
		return err
	}
	select {
	case pk := <-ch:
		data, _ := pk.Data()
		say("ken received %q from judy, sealed end to end (HPKE, ML-KEM-768+X25519).", data)
	case <-wctx.Done():
		return fmt.Errorf("ken received nothing")
	}
	knows := false
	for _, p := range ivan.n.Pipelines() {
		knows = knows || p.ID() == id
	}
	say("ivan relayed %d messages for them and knows of their pipeline: %v.", ivan.n.Stats().Routed, knows)
	return nil
}

func peerNames(n *pipes.Node) []string {
	var out []string
	for _, r := range n.ConnectedPeers() {
		out = append(out, r.Name())
	}
	return out
}
