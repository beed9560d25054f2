package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/pipesnet/pipes"
	"github.com/pipesnet/pipes/internal/ids"
	inode "github.com/pipesnet/pipes/internal/node"
)

// pipesNet is a Pipes network of in-process nodes, each with its own data
// directory, on loopback.
type pipesNet struct {
	dir   string
	dirs  []string // each platform's data directory
	ps    []*pipes.Platform
	nodes []*pipes.Node
}

func (n *pipesNet) close() {
	for _, p := range n.ps {
		p.Close()
	}
	os.RemoveAll(n.dir)
}

// noPunch, when set, keeps the nodes startPipes starts from punching a
// direct connection after a relayed data connection (the relayed rows of
// the conns benchmark measure the relayed path on every dial).
var noPunch bool

// startPipes starts count nodes linked as edges says: for each edge (i, j)
// node j has node i as its gateway. degree is each node's target degree.
func startPipes(count int, edges [][2]int, degree int) (*pipesNet, error) {
	dir, err := os.MkdirTemp("", "pipes-bench-")
	if err != nil {
		return nil, err
	}
	n := &pipesNet{dir: dir}
	netPath := filepath.Join(dir, "bench.net")
	const secret = "benchmark secret"
	if _, err := pipes.CreateNetwork(netPath, pipes.NetworkSpec{Name: "bench", Secret: secret, KDF: pipes.FastKDF}); err != nil {
		return nil, err
	}
	quiet := slog.New(slog.DiscardHandler)
	for i := range count {
		pdir := filepath.Join(dir, strconv.Itoa(i))
		p, err := pipes.Open(pdir, pipes.WithLogger(quiet))
		if err != nil {
			n.close()
			return nil, err
		}
		n.ps = append(n.ps, p)
		n.dirs = append(n.dirs, pdir)
		nw, err := p.AddNetwork(netPath)
		if err != nil {
			n.close()
			return nil, err
		}
		if ok, err := nw.SetSecret(secret); !ok || err != nil {
			n.close()
			return nil, fmt.Errorf("secret: %v %v", ok, err)
		}
		id, _ := p.AddIdentity(fmt.Sprintf("n%d", i))
		node, err := p.AddNode(nw, id, "bench", pipes.WithListenAddr("127.0.0.1:0"), pipes.WithTargetDegree(degree))
		if err != nil {
			n.close()
			return nil, err
		}
		if noPunch {
			inode.SetTestHooks(ids.Node(node.ID()), func(h *inode.TestHooks) { h.NoPunch = true })
		}
		n.nodes = append(n.nodes, node)
	}
	addrs := make([]netip.AddrPort, count)
	for i, node := range n.nodes {
		for _, e := range edges {
			if e[1] == i {
				a := addrs[e[0]]
				node.Network().AddGateway(a.Addr().String(), int(a.Port()))
			}
		}
		if err := node.Start(context.Background()); err != nil {
			n.close()
			return nil, err
		}
		addrs[i] = node.ListenAddrs()[0]
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		all := true
		for _, node := range n.nodes {
			if len(node.ConnectedNodes()) != count-1 {
				all = false
			}
		}
		if all {
			break
		}
		if time.Now().After(deadline) {
			n.close()
			return nil, fmt.Errorf("pipes: nodes did not all see each other")
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(time.Second) // let peer exchange settle
	return n, nil
}

func (n *pipesNet) treeTotals() (bytes, sends uint64) {
	for _, node := range n.nodes {
		st := node.Stats().Broadcast
		bytes += st.EagerBytes
		sends += st.EagerSent
	}
	return
}

func runPipesBroadcast(w workload) (result, error) {
	degree := 2
	if !w.sparse {
		degree = w.nodes
	}
	net, err := startPipes(w.nodes, w.edges(), degree)
	if err != nil {
		return result{}, err
	}
	defer net.close()
	id, err := net.nodes[0].CreatePipeline("bench", pipes.PipelineOptions{})
	if err != nil {
		return result{}, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	want := w.messages * (w.nodes - 1) // every message to every node but its publisher
	rec := newRecorder(want)
	pls := make([]*pipes.Pipeline, w.nodes)
	for i, node := range net.nodes {
		wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
		p, err := node.WaitPipeline(wctx, id)
		wcancel()
		if err != nil {
			return result{}, fmt.Errorf("node %d: %w", i, err)
		}
		pls[i] = p
		ch := p.Subscribe(ctx)
		go func() {
			for pk := range ch {
				d, _ := pk.Data()
				rec.deliver(d)
			}
		}()
	}
	b0, _ := net.treeTotals()
	start := time.Now()
	err = publishPlan(w, func(pub, seq int) error {
		_, err := pls[pub].Put(makePayload(w.size, pub, seq))
		return err
	})
	if err != nil {
		return result{}, err
	}
	select {
	case <-rec.done:
	case <-time.After(60 * time.Second):
	}
	time.Sleep(300 * time.Millisecond) // the mesh publishes its counters every 100 ms
	b1, _ := net.treeTotals()
	var dropped, copies uint64
	for _, p := range pls {
		st := p.Stats()
		dropped += st.Dropped
		copies += st.Received
	}
	res := rec.result(start, w.nodes-1, b1-b0, copies)
	if os.Getenv("BENCH_DEBUG") != "" {
		var g, pr, d, bad, drop uint64
		for _, node := range net.nodes {
			st := node.Stats()
			g += st.Broadcast.GraftsSent
			pr += st.Broadcast.PrunesSent
			d += st.Broadcast.Duplicates
			bad += st.BadMessages
			drop += st.FramesDropped
		}
		fmt.Fprintf(os.Stderr, "pipes %s: grafts %d prunes %d duplicates %d bad %d frames dropped %d\n", w, g, pr, d, bad, drop)
	}
	if dropped > 0 {
		res.note = fmt.Sprintf("%d dropped at slow subscribers (counted)", dropped)
	}
	return res, nil
}
