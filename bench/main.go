// Command bench measures Pipes against go-libp2p's GossipSub and raw
// quic-go, in one process on loopback, and prints the figures and the
// ratios from the same run. See docs/performance.md for the workloads and
// recorded results.
//
//	cd bench && go run . [-quick] [-only broadcast|dups|p2p|history|realtime|files|fileservice|conns]
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"runtime/pprof"
	"time"
)

func main() {
	quick := flag.Bool("quick", false, "a small subset of the matrix, for a smoke test")
	only := flag.String("only", "", "run only 'broadcast', 'dups', 'p2p', 'history', 'realtime', 'files', 'fileservice' or 'conns'")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile to this file")
	flag.IntVar(&catchPackets, "catch", 0, "history benchmark (a): packets to catch up (default 1000000, 20000 with -quick)")
	flag.IntVar(&rtSize, "rt-size", 1000, "realtime benchmark: datagram payload bytes")
	flag.Float64Var(&rtSeconds, "rt-seconds", 5, "realtime benchmark: seconds of each measurement (1 with -quick)")
	flag.DurationVar(&rtTick, "rt-tick", time.Millisecond, "realtime benchmark: pacing period of the paced measurement (one burst per tick)")
	flag.IntVar(&fileMiB, "file-mib", 256, "files benchmark: size of the file in MiB (at most 32 with -quick)")
	flag.IntVar(&fsMiB, "fs-mib", 1024, "fileservice benchmark: size of the file in MiB (at most 64 with -quick)")
	flag.IntVar(&connMiB, "conn-mib", 512, "conns benchmark: MiB of each throughput transfer (at most 32 with -quick)")
	flag.IntVar(&connDials, "conn-dials", 1000, "conns benchmark: dials of the set-up measurement (at most 100 with -quick)")
	flag.IntVar(&connRounds, "conn-rounds", 3, "conns benchmark: throughput rounds, each measuring every system once (the median counts)")
	flag.StringVar(&matchFilter, "match", "", "run only broadcast workloads whose description contains this")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		must(err)
		must(pprof.StartCPUProfile(f))
		defer pprof.StopCPUProfile()
	}
	log.SetFlags(0)

	fmt.Printf("# Pipes benchmark, %s, GOMAXPROCS=%d\n\n", time.Now().UTC().Format(time.RFC3339), procs())
	if *only == "" || *only == "broadcast" {
		runBroadcastMatrix(*quick)
	}
	if *only == "" || *only == "dups" {
		runDuplicates(*quick)
	}
	if *only == "" || *only == "p2p" {
		runP2P(*quick)
	}
	if *only == "" || *only == "history" {
		runHistory(*quick)
	}
	if *only == "" || *only == "realtime" {
		runRealtime(*quick)
	}
	if *only == "" || *only == "files" {
		runFiles(*quick)
	}
	if *only == "" || *only == "fileservice" {
		runFileService(*quick)
	}
	if *only == "" || *only == "conns" {
		runConns(*quick)
	}
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}
