package main

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pipesnet/pipes"
)

// The file benchmark: one file packet of fileMiB MiB from node A to node B
// of one network (two nodes in this process on loopback, default timings)
// on a live broadcast pipeline, a persistent one and an encrypted
// persistent one, against one raw quic-go stream of the same bytes.
//
// Per pipeline: the time of PutFile (read the file, hash, seal at rest,
// and seal with the pipeline key when encrypted); the transfer, from
// PutFile's return until B has read the whole content through
// Packet.Open into io.Discard (Open streams chunks as they arrive, so this
// is until B's copy is complete and read); the total of both; the growth
// of the heap in use (peak sampled every 20 ms, minus the level after a
// GC before PutFile); and the process's CPU time (both nodes) during
// PutFile and during the transfer. The raw stream is timed from its first
// write until the receiver read its last byte, the median of three.
var fileMiB int // -file-mib: size of the file

const fileGoal = 0.80 // transfer rate at least 80% of the raw stream's

type fileRow struct {
	name     string
	put      time.Duration // PutFile
	arrive   time.Duration // PutFile's return until the packet is at B
	transfer time.Duration // PutFile's return until B read the last byte
	heap     int64         // peak HeapInuse minus the baseline
	cpuPut   time.Duration // process CPU during PutFile
	cpu      time.Duration // process CPU during the transfer
}

func runFiles(quick bool) {
	mib := fileMiB
	if quick && mib > 32 {
		mib = 32
	}
	if mib <= 0 {
		must(errors.New("files: -file-mib must be positive"))
	}
	size := int64(mib) << 20
	dir, err := os.MkdirTemp("", "pipes-bench-file-")
	must(err)
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "content")
	must(writeRandomFile(path, size))

	// The baseline first, in writes of the blob store's chunk size: the
	// median of three streams (loopback rates vary from one to the next),
	// with its CPU time (the connection's set-up included).
	type rawRun struct{ wall, cpu time.Duration }
	var raws []rawRun
	for range 3 {
		cpu0 := processCPU()
		d, err := rawSend(size, 256<<10, false)
		must(err)
		raws = append(raws, rawRun{d, processCPU() - cpu0})
	}
	slices.SortFunc(raws, func(x, y rawRun) int { return cmp.Compare(x.wall, y.wall) })
	raw, rawCPU := raws[1].wall, raws[1].cpu

	cases := []struct {
		name string
		opts pipes.PipelineOptions
	}{
		{"live broadcast", pipes.PipelineOptions{}},
		{"persistent broadcast", pipes.PipelineOptions{Persistent: true}},
		{"encrypted persistent broadcast", pipes.PipelineOptions{Persistent: true, Encrypted: true, Secret: []byte("benchmark pipeline secret")}},
	}
	var rows []fileRow
	for _, c := range cases {
		// The label tells each pipeline's samples apart in a -cpuprofile
		// (pprof -tagfocus files=...); the nodes' goroutines inherit it.
		pprof.Do(context.Background(), pprof.Labels("files", c.name), func(context.Context) {
			r, err := fileTransfer(c.name, c.opts, path, size)
			must(err)
			rows = append(rows, r)
		})
	}

	mbps := func(d time.Duration) float64 { return float64(size) / 1e6 / d.Seconds() }
	fmt.Printf("## File packets: one file of %d MiB, Pipes vs one raw quic-go stream\n\n", mib)
	fmt.Printf("Two nodes on loopback, default timings. Raw: one quic-go stream between two quic-go endpoints, writes of 256 KiB, " +
		"from the first write until the receiver read the last byte (median of three). PutFile: import (read, hash, seal at rest). " +
		"Transfer: from PutFile's return until the receiver has read the whole content through Open into io.Discard. " +
		"Arrival: from PutFile's return until the packet is at the receiver. " +
		"Heap: peak HeapInuse (sampled every 20 ms) minus the level after a GC before PutFile. " +
		"CPU: user and system time of the whole process (both ends) during PutFile and during the transfer. MB = 10⁶ bytes.\n\n")
	header("system", "PutFile", "arrival", "transfer", "transfer MB/s", "total (PutFile + transfer)", "total MB/s", "heap growth",
		"CPU PutFile", "CPU transfer", "transfer / raw")
	fmt.Printf("| raw quic-go stream (median of 3: %.0f, %.0f, %.0f MB/s) | | | %s | %.0f | | | | | %s | |\n",
		mbps(raws[2].wall), mbps(raws[1].wall), mbps(raws[0].wall), fmtDur(raw), mbps(raw), fmtDur(rawCPU))
	for _, r := range rows {
		total := r.put + r.transfer
		fmt.Printf("| Pipes, %s | %s | %s | %s | %.0f | %s | %.0f | %.1f MiB | %s | %s | %.0f%% |\n",
			r.name, fmtDur(r.put), fmtDur(r.arrive), fmtDur(r.transfer), mbps(r.transfer), fmtDur(total), mbps(total),
			float64(r.heap)/(1<<20), fmtDur(r.cpuPut), fmtDur(r.cpu), 100*raw.Seconds()/r.transfer.Seconds())
	}
	fmt.Println()
	header("goal", "result")
	for _, r := range rows {
		ratio := raw.Seconds() / r.transfer.Seconds()
		met := "met"
		if ratio < fileGoal {
			met = "**missed**"
		}
		fmt.Printf("| %s: transfer ≥ %.0f%% of the raw stream | %s: %.0f%% (%.0f vs %.0f MB/s) |\n",
			r.name, 100*fileGoal, met, 100*ratio, mbps(r.transfer), mbps(raw))
	}
	fmt.Println()
}

// writeRandomFile writes size pseudo-random bytes (ChaCha8, seeded) to
// path, 1 MiB at a time.
func writeRandomFile(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	rng := rand.NewChaCha8([32]byte{'p', 'i', 'p', 'e', 's'})
	if _, err := io.CopyN(w, rng, size); err != nil {
		f.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// heapSampler records the peak HeapInuse, every 20 ms, until stopped.
type heapSampler struct {
	peak atomic.Uint64
	stop chan struct{}
	wg   sync.WaitGroup
}

func startHeapSampler() *heapSampler {
	h := &heapSampler{stop: make(chan struct{})}
	h.sample()
	h.wg.Go(func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				h.sample()
			case <-h.stop:
				return
			}
		}
	})
	return h
}

func (h *heapSampler) sample() {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	for {
		old := h.peak.Load()
		if ms.HeapInuse <= old || h.peak.CompareAndSwap(old, ms.HeapInuse) {
			return
		}
	}
}

func (h *heapSampler) finish() uint64 {
	close(h.stop)
	h.wg.Wait()
	h.sample()
	return h.peak.Load()
}

// fileTransfer starts two nodes, creates a pipeline with opts on A, puts
// the file at path on it and measures until B has read it all.
func fileTransfer(name string, opts pipes.PipelineOptions, path string, size int64) (fileRow, error) {
	row := fileRow{name: name}
	pn, err := startPipes(2, [][2]int{{0, 1}}, 1)
	if err != nil {
		return row, err
	}
	defer pn.close()
	a, b := pn.nodes[0], pn.nodes[1]
	id, err := a.CreatePipeline("files", opts)
	if err != nil {
		return row, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	pb, err := b.WaitPipeline(wctx, id)
	wcancel()
	if err != nil {
		return row, err
	}
	if opts.Encrypted {
		if ok, err := pb.SetSecret(opts.Secret); !ok || err != nil {
			return row, fmt.Errorf("files: SetSecret: %v %v", ok, err)
		}
	}
	pa, err := a.Pipeline(id)
	if err != nil {
		return row, err
	}
	ch := pb.Subscribe(ctx)

	type got struct {
		arrived, done time.Time
		n             int64
		err           error
	}
	res := make(chan got, 1)
	go func() {
		var g got
		defer func() { res <- g }()
		var pk *pipes.Packet
		for pk == nil || !pk.IsFile() {
			select {
			case pk = <-ch:
				if pk == nil {
					g.err = errors.New("files: subscription closed")
					return
				}
			case <-ctx.Done():
				g.err = ctx.Err()
				return
			}
		}
		g.arrived = time.Now()
		if s := pk.Size(); s != size {
			g.err = fmt.Errorf("files: the packet's size is %d, want %d", s, size)
			return
		}
		r, err := pk.Open()
		if err != nil {
			g.err = err
			return
		}
		defer r.Close()
		g.n, g.err = io.Copy(io.Discard, r)
		g.done = time.Now()
	}()

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	heap := startHeapSampler()
	cpu0 := processCPU()
	start := time.Now()
	if _, err := pa.PutFile(path); err != nil {
		heap.finish()
		return row, err
	}
	putDone := time.Now()
	cpu1 := processCPU()
	g := <-res
	row.cpuPut, row.cpu = cpu1-cpu0, processCPU()-cpu1
	row.heap = int64(heap.finish()) - int64(base)
	if g.err != nil {
		return row, fmt.Errorf("files %s: %w", name, g.err)
	}
	if g.n != size {
		return row, fmt.Errorf("files %s: read %d bytes of %d", name, g.n, size)
	}
	row.put = putDone.Sub(start)
	row.arrive = max(g.arrived.Sub(putDone), 0)
	row.transfer = g.done.Sub(putDone)
	return row, nil
}
