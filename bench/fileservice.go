package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"time"

	"github.com/zeebo/blake3"

	"github.com/pipesnet/pipes"
)

// The file service benchmark (Node.Files): a file of fsMiB MiB (default
// 1 GiB) on two nodes of one network in this process on loopback.
//
//   - Import: Files.Add of the file on node A (read, BLAKE3 of every chunk
//     and of the manifest, sealed at rest, written to the blob store),
//     against hashing the same file with zeebo/blake3 as b3sum does
//     (read it in 1 MiB pieces into one hasher). The file is in the page
//     cache for both. Median of three each; between imports the copy is
//     removed, so each one writes the whole blob. A copy of the file
//     (read, write to a new file, fsync) shows what writing the bytes
//     costs on the machine.
//   - Fetch: node B's Files.Fetch of the file from node A, from the call
//     until it returns (the manifest asked for, every chunk verified and
//     stored in B's blob store), against one raw quic-go stream of the
//     same bytes between two quic-go endpoints (rawSend, writes of
//     256 KiB), median of three each; B's copy is removed between
//     fetches. The heap growth (peak HeapInuse, sampled every 20 ms,
//     minus the level after a GC) and the process's CPU time (both ends)
//     are those of the median fetch.
var fsMiB int // -fs-mib

// Goals of the issue: import at least 70% of the hashing speed, fetch at
// least 80% of the raw stream's.
const (
	importGoal = 0.70
	fetchGoal  = 0.80
)

// runs is the median of measurements.
type runs []time.Duration

func (r runs) median() time.Duration {
	s := slices.Clone(r)
	slices.SortFunc(s, cmp.Compare)
	return s[len(s)/2]
}

func (r runs) rates(size int64) string {
	var out []string
	for _, d := range r {
		out = append(out, fmt.Sprintf("%.0f", float64(size)/1e6/d.Seconds()))
	}
	return fmt.Sprint(out)
}

func runFileService(quick bool) {
	mib := fsMiB
	if quick && mib > 64 {
		mib = 64
	}
	if mib <= 0 {
		must(errors.New("fileservice: -fs-mib must be positive"))
	}
	size := int64(mib) << 20
	dir, err := os.MkdirTemp("", "pipes-bench-fs-")
	must(err)
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "content.bin")
	must(writeRandomFile(path, size))

	// Hashing, b3sum-style.
	var hash runs
	var sum [32]byte
	for range 3 {
		start := time.Now()
		s, err := hashFile(path)
		must(err)
		hash = append(hash, time.Since(start))
		sum = s
	}
	_ = sum

	// What the disk allows: a copy of the file (read, write, fsync).
	var cp runs
	for range 3 {
		start := time.Now()
		must(copyFile(path, filepath.Join(dir, "copy.bin")))
		cp = append(cp, time.Since(start))
		must(os.Remove(filepath.Join(dir, "copy.bin")))
	}

	pn, err := startPipes(2, [][2]int{{0, 1}}, 1)
	must(err)
	defer pn.close()
	a, b := pn.nodes[0], pn.nodes[1]
	ctx := context.Background()

	var imp runs
	var id pipes.FileID
	for k := range 3 {
		if k > 0 {
			must(a.Files().Remove(ctx, id))
		}
		start := time.Now()
		id, err = a.Files().Add(ctx, path)
		must(err)
		imp = append(imp, time.Since(start))
	}

	// B must know A holds the file before it fetches.
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := b.Files().Stat(ctx, id)
		if err == nil && len(st.Holders) == 1 {
			break
		}
		if time.Now().After(deadline) {
			must(fmt.Errorf("fileservice: B does not see A's file: %v", err))
		}
		time.Sleep(50 * time.Millisecond)
	}

	var raw runs
	for range 3 {
		d, err := rawSend(size, 256<<10, false)
		must(err)
		raw = append(raw, d)
	}

	type fetchRun struct {
		wall, cpu time.Duration
		heap      int64
	}
	var fetches []fetchRun
	for k := range 3 {
		if k > 0 {
			must(b.Files().Remove(ctx, id))
		}
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		base := ms.HeapInuse
		hs := startHeapSampler()
		cpu0 := processCPU()
		start := time.Now()
		err := b.Files().Fetch(ctx, id, nil)
		wall := time.Since(start)
		cpu := processCPU() - cpu0
		peak := hs.finish()
		must(err)
		fetches = append(fetches, fetchRun{wall, cpu, int64(peak) - int64(base)})
	}
	// The copy fetched is the file.
	r, err := b.Files().Open(id)
	must(err)
	h := blake3.New()
	n, err := io.Copy(h, r)
	r.Close()
	must(err)
	if n != size || [32]byte(h.Sum(nil)) != sum {
		must(errors.New("fileservice: the fetched copy differs from the file"))
	}
	slices.SortFunc(fetches, func(x, y fetchRun) int { return cmp.Compare(x.wall, y.wall) })
	fm := fetches[1]
	var fr runs
	for _, f := range fetches {
		fr = append(fr, f.wall)
	}

	mbps := func(d time.Duration) float64 { return float64(size) / 1e6 / d.Seconds() }
	fmt.Printf("## File service: a file of %d MiB, import vs BLAKE3 hashing, fetch vs one raw quic-go stream\n\n", mib)
	fmt.Printf("Two nodes on loopback, default timings, the file in the page cache. Hashing: zeebo/blake3 over the file read " +
		"in 1 MiB pieces (as b3sum hashes). Copy: the file copied to a new one on the same disk in 1 MiB pieces, then fsync (what writing the bytes costs). Import: Files.Add (read, hash every chunk, seal at rest, write the blob). " +
		"Raw: one quic-go stream, writes of 256 KiB, first write to last byte read. Fetch: Files.Fetch on the second node " +
		"until it returns (manifest, every chunk verified and stored). Medians of three (all three in brackets, MB/s). " +
		"Heap: peak HeapInuse during the median fetch minus the level after a GC before it. MB = 10⁶ bytes.\n\n")
	header("measurement", "time", "MB/s", "runs (MB/s)", "ratio")
	fmt.Printf("| BLAKE3 hashing (zeebo/blake3) | %s | %.0f | %s | |\n", fmtDur(hash.median()), mbps(hash.median()), hash.rates(size))
	impRatio := hash.median().Seconds() / imp.median().Seconds()
	fmt.Printf("| copy of the file (read, write, fsync) | %s | %.0f | %s | |\n", fmtDur(cp.median()), mbps(cp.median()), cp.rates(size))
	fmt.Printf("| Files.Add | %s | %.0f | %s | %.0f%% of hashing, %.0f%% of the copy |\n", fmtDur(imp.median()), mbps(imp.median()),
		imp.rates(size), 100*impRatio, 100*cp.median().Seconds()/imp.median().Seconds())
	fmt.Printf("| raw quic-go stream | %s | %.0f | %s | |\n", fmtDur(raw.median()), mbps(raw.median()), raw.rates(size))
	fetchRatio := raw.median().Seconds() / fm.wall.Seconds()
	fmt.Printf("| Files.Fetch | %s | %.0f | %s | %.0f%% of the raw stream |\n\n", fmtDur(fm.wall), mbps(fm.wall), fr.rates(size), 100*fetchRatio)
	fmt.Printf("Median fetch: heap growth %.1f MiB, CPU %s (both nodes).\n\n", float64(fm.heap)/(1<<20), fmtDur(fm.cpu))
	header("goal", "result")
	met := func(ok bool) string {
		if ok {
			return "met"
		}
		return "**missed**"
	}
	fmt.Printf("| import ≥ %.0f%% of BLAKE3 hashing | %s: %.0f%% (%.0f vs %.0f MB/s) |\n", 100*importGoal,
		met(impRatio >= importGoal), 100*impRatio, mbps(imp.median()), mbps(hash.median()))
	fmt.Printf("| fetch ≥ %.0f%% of one raw quic-go stream | %s: %.0f%% (%.0f vs %.0f MB/s) |\n\n", 100*fetchGoal,
		met(fetchRatio >= fetchGoal), 100*fetchRatio, mbps(fm.wall), mbps(raw.median()))
}

// hashFile hashes the file at path with BLAKE3 as b3sum does (one hasher
// over the whole content, read in 1 MiB pieces).
func hashFile(path string) ([32]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return [32]byte{}, err
	}
	defer f.Close()
	h := blake3.New()
	buf := make([]byte, 1<<20)
	if _, err := io.CopyBuffer(h, struct{ io.Reader }{f}, buf); err != nil {
		return [32]byte{}, err
	}
	return [32]byte(h.Sum(nil)), nil
}

// copyFile copies the file at from to a new file to, in 1 MiB pieces, and
// syncs it.
func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.CopyBuffer(struct{ io.Writer }{out}, struct{ io.Reader }{in}, make([]byte, 1<<20)); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
