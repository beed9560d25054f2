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
	if rtt, err := judy.n.Ping(wctx, ken.n.ID()); err == nil {
		say("judy pings ken through ivan: %.2f ms.", float64(rtt.Microseconds())/1000)
	}
	if rep, err := judy.n.CheckNAT(wctx); err == nil {
		say("judy's netcheck: socket %s, mapping %s, filtering %s, behind a NAT: %v (on loopback there is none).",
			rep.Local, rep.Mapping, rep.Filtering, rep.BehindNAT)
	}
	return nil
}

func peerNames(n *pipes.Node) []string {
	var out []string
	for _, r := range n.ConnectedPeers() {
		out = append(out, r.Name())
	}
	return out
}

// demoHistory: a persistent pipeline; one node goes offline while the
// others write, comes back, and catches up from its peers.
func demoHistory(ctx context.Context, say func(string, ...any), nodes []*demoNode) error {
	say("\n== A persistent pipeline with offline catch-up")
	owner, away := nodes[0], nodes[len(nodes)-1]
	id, err := owner.n.CreatePipeline("journal", pipes.PipelineOptions{Persistent: true})
	if err != nil {
		return err
	}
	for _, d := range nodes {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := d.n.WaitPipeline(wctx, id)
		cancel()
		if err != nil {
			return fmt.Errorf("%s: %w", d.name, err)
		}
	}
	say("%s creates the persistent pipeline \"journal\": every node keeps its whole history, encrypted at rest.", owner.name)
	op, _ := owner.n.Pipeline(id)
	if _, err := op.Put([]byte("entry 1: project started")); err != nil {
		return err
	}
	if err := waitFor(ctx, 30*time.Second, func() bool { return logged(away, id) == 1 }); err != nil {
		return fmt.Errorf("%s did not log the first entry", away.name)
	}
	say("%s writes one entry; every node logs it. %s goes offline...", owner.name, away.name)
	if err := away.n.Shutdown(); err != nil {
		return err
	}
	const n = 1000
	writers := nodes[:len(nodes)-1]
	for i := range n {
		w := writers[i%len(writers)]
		p, _ := w.n.Pipeline(id)
		if _, err := p.Put(fmt.Appendf(nil, "entry %d from %s", i+2, w.name)); err != nil {
			return err
		}
	}
	say("While it is away the other %d nodes write %d more entries (each Put returns once the entry is on disk).", len(writers), n)
	synced := make(chan bool, 16)
	ap, _ := away.n.Pipeline(id)
	l := &pipes.PipelineListenerFuncs{SyncUpdate: func(ok bool, _ *pipes.Pipeline) {
		select {
		case synced <- ok:
		default:
		}
	}}
	ap.AddListener(l)
	defer ap.RemoveListener(l)
	start := time.Now()
	if err := away.n.Start(ctx); err != nil {
		return err
	}
	if err := waitFor(ctx, 60*time.Second, func() bool { return logged(away, id) == n+1 }); err != nil {
		return fmt.Errorf("%s did not catch up: %d of %d entries", away.name, logged(away, id), n+1)
	}
	say("%s is back and has all %d entries after %v, fetched from its peers in parallel.", away.name, n+1, time.Since(start).Round(time.Millisecond))
	// The listener hears of the start and the end of the catch-up.
	timeout := time.After(30 * time.Second)
	for done := false; !done; {
		select {
		case ok := <-synced:
			if ok {
				say("  its listener was told: synchronized")
				done = true
			} else {
				say("  its listener was told: synchronizing")
			}
		case <-timeout:
			return fmt.Errorf("%s's listener was not told that sync finished", away.name)
		}
	}
	var last *pipes.Packet
	for pk, err := range ap.PacketsSince(int64(n - 1)) {
		if err != nil {
			return err
		}
		last = pk
	}
	data, _ := last.Data()
	say("Its log runs from LogID 0 to %d; the last entry is %q, sequence %d of its sender.", last.LogID(), data, last.Seq())
	return nil
}

func logged(d *demoNode, id pipes.PipelineID) int64 {
	p, err := d.n.Pipeline(id)
	if err != nil {
		return -1
	}
	return p.Stats().Logged
}
