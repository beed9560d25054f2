package main

import (
	"context"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pipesnet/pipes"
)

// The persistent-pipeline benchmarks: (a) a new node catches up a long
// history, against one raw quic-go stream of the same payload bytes;
// (b) two replicas that differ by a little reconcile with traffic in
// proportion to the difference; (c) the rate and latency of durable Puts,
// and the disk used per packet.
var catchPackets int // -catch: history size of benchmark (a)

func runHistory(quick bool) {
	catchN, shared, differ := 1_000_000, 100_000, 1_000
	if quick {
		catchN, shared, differ = 20_000, 5_000, 1_000
	}
	if catchPackets > 0 {
		catchN = catchPackets
	}
	const size = 100

	fmt.Println("## Persistent pipelines")
	fmt.Println()
	c, err := catchUp(catchN, size)
	must(err)
	raw, err := rawSend(int64(catchN)*size, 64<<10, true)
	must(err)
	fmt.Printf("### (a) A new node catches up %d packets of %d B\n\n", catchN, size)
	header("system", "wall time", "bytes received", "payload bytes", "time / raw")
	fmt.Printf("| raw quic-go stream of the payload | %v | %d | %d | |\n", raw.Round(time.Millisecond), int64(catchN)*size, int64(catchN)*size)
	fmt.Printf("| Pipes sync (writer wrote at %.0f packets/s) | %v | %d | %d | %.1fx |\n", c.putRate, c.wall.Round(time.Millisecond), c.bytes,
		int64(catchN)*size, c.wall.Seconds()/raw.Seconds())
	fmt.Println()

	r, err := reconcile(shared, differ, size)
	must(err)
	missing := int64(differ) * size
	fmt.Printf("### (b) Two replicas share %d packets and differ by %d (%d B each)\n\n", shared, differ, size)
	header("bytes exchanged (both ways)", "missing payload", "goal: 2x missing + 10 KiB", "ratio to goal", "wall time")
	fmt.Printf("| %d | %d | %d | %.2f | %v |\n", r.bytes, missing, 2*missing+10240, float64(r.bytes)/float64(2*missing+10240), r.wall.Round(time.Millisecond))
	fmt.Println()

	fmt.Println("### (c) Durable Puts (each Put returns once its packet is synced to disk)")
	fmt.Println()
	header("payload", "writers", "packets/s", "p50 Put", "p99 Put", "disk per packet (tables)", "disk / payload")
	for _, sz := range []int{100, 1024} {
		for _, writers := range []int{1, 32} {
			d, err := durablePuts(sz, writers, quick)
			must(err)
			fmt.Printf("| %d B | %d | %.0f | %v | %v | %.0f B | %.2fx |\n", sz, writers, d.rate, d.p50.Round(time.Microsecond),
				d.p99.Round(time.Microsecond), d.diskPer, d.diskPer/float64(sz))
		}
	}
	fmt.Println()
}

// fill puts n packets of size bytes on p from writers goroutines and
// returns the rate.
func fill(p *pipes.Pipeline, n, size, writers int) (float64, error) {
	var next atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, size)
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				copy(buf, fmt.Appendf(nil, "%d", i))
				if _, err := p.Put(buf); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, err
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// waitLogged waits until p has logged n packets.
func waitLogged(p *pipes.Pipeline, n int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for p.Stats().Logged < int64(n) {
		if time.Now().After(deadline) {
			return fmt.Errorf("logged %d of %d packets after %v", p.Stats().Logged, n, limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// twoReplicas starts two peers with a persistent pipeline known to both,
// and returns it as each node sees it.
func twoReplicas(name string) (*pipesNet, *pipes.Pipeline, *pipes.Pipeline, error) {
	pn, err := startPipes(2, [][2]int{{0, 1}}, 1)
	if err != nil {
		return nil, nil, nil, err
	}
	id, err := pn.nodes[0].CreatePipeline(name, pipes.PipelineOptions{Persistent: true})
	if err != nil {
		pn.close()
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pb, err := pn.nodes[1].WaitPipeline(ctx, id)
	if err != nil {
		pn.close()
		return nil, nil, nil, err
	}
	pa, _ := pn.nodes[0].Pipeline(id)
	return pn, pa, pb, nil
}

type catchResult struct {
	wall    time.Duration
	bytes   uint64
	putRate float64
}

// catchUp: node 0 writes n packets while node 1 is stopped; then node 1
// starts and catches up. It measures from node 1's start to its last
// packet logged, and the QUIC bytes node 1 received.
func catchUp(n, size int) (catchResult, error) {
	pn, pa, pb, err := twoReplicas("history")
	if err != nil {
		return catchResult{}, err
	}
	defer pn.close()
	b := pn.nodes[1]
	if err := b.Shutdown(); err != nil {
		return catchResult{}, err
	}
	rate, err := fill(pa, n, size, 64)
	if err != nil {
		return catchResult{}, err
	}
	start := time.Now()
	if err := b.Start(context.Background()); err != nil {
		return catchResult{}, err
	}
	pb, _ = b.Pipeline(pb.ID())
	if err := waitLogged(pb, n, 30*time.Minute); err != nil {
		return catchResult{}, err
	}
	return catchResult{wall: time.Since(start), bytes: b.Stats().BytesReceived, putRate: rate}, nil
}

type reconcileResult struct {
	bytes uint64
	wall  time.Duration
}

// reconcile: nodes 0 and 1 share `shared` packets; node 1 stops, node 0
// writes `differ` more, node 1 starts again. It measures the QUIC bytes
// node 1 sent and received until it has them all, connection set-up and
// presence included.
func reconcile(shared, differ, size int) (reconcileResult, error) {
	pn, pa, pb, err := twoReplicas("replica")
	if err != nil {
		return reconcileResult{}, err
	}
	defer pn.close()
	b := pn.nodes[1]
	if _, err := fill(pa, shared, size, 64); err != nil {
		return reconcileResult{}, err
	}
	if err := waitLogged(pb, shared, 10*time.Minute); err != nil {
		return reconcileResult{}, err
	}
	if err := b.Shutdown(); err != nil {
		return reconcileResult{}, err
	}
	if _, err := fill(pa, differ, size, 8); err != nil {
		return reconcileResult{}, err
	}
	start := time.Now()
	if err := b.Start(context.Background()); err != nil {
		return reconcileResult{}, err
	}
	pb, _ = b.Pipeline(pb.ID())
	if err := waitLogged(pb, shared+differ, 10*time.Minute); err != nil {
		return reconcileResult{}, err
	}
	wall := time.Since(start)
	s := b.Stats()
	return reconcileResult{bytes: s.BytesSent + s.BytesReceived, wall: wall}, nil
}

type durableResult struct {
	rate     float64
	p50, p99 time.Duration
	diskPer  float64
}

// durablePuts measures Puts on a persistent pipeline of a node alone:
// writers goroutines put for a few seconds; then the platform is closed
// and its store's size divided by the packets written.
func durablePuts(size, writers int, quick bool) (durableResult, error) {
	dur := 5 * time.Second
	if quick {
		dur = time.Second
	}
	pn, err := startPipes(1, nil, 1)
	if err != nil {
		return durableResult{}, err
	}
	defer pn.close()
	n := pn.nodes[0]
	id, err := n.CreatePipeline("durable", pipes.PipelineOptions{Persistent: true})
	if err != nil {
		return durableResult{}, err
	}
	p, _ := n.Pipeline(id)
	var mu sync.Mutex
	var lat []time.Duration
	var count atomic.Int64
	stop := time.Now().Add(dur)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, size)
			var mine []time.Duration
			for i := 0; time.Now().Before(stop); i++ {
				copy(buf, fmt.Appendf(nil, "%d-%d", w, i))
				t := time.Now()
				if _, err := p.Put(buf); err != nil {
					return
				}
				mine = append(mine, time.Since(t))
				count.Add(1)
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(lat)
	if len(lat) == 0 {
		return durableResult{}, fmt.Errorf("no Put succeeded")
	}
	res := durableResult{rate: float64(count.Load()) / elapsed.Seconds(), p50: lat[len(lat)/2], p99: lat[len(lat)*99/100]}
	// Disk: close the platform (memtable flushed), then measure its store.
	dir := pn.dirs[0]
	pn.ps[0].Close()
	// The tables hold the data for good; the write-ahead log is recycled
	// and its size says nothing of the history.
	var tables int64
	filepath.WalkDir(filepath.Join(dir, "db"), func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && filepath.Ext(path) == ".sst" {
			if info, err := d.Info(); err == nil {
				tables += info.Size()
			}
		}
		return nil
	})
	res.diskPer = float64(tables) / float64(count.Load())
	return res, nil
}
