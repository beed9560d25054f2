package main

import (
	"fmt"
	"slices"
	"strings"
)

// matchFilter limits the broadcast matrix (flag -match).
var matchFilter string

func runBroadcastMatrix(quick bool) {
	var ws []workload
	for _, nodes := range []int{10, 30} {
		for _, sparse := range []bool{false, true} {
			for _, pubs := range []int{1, 5} {
				for _, size := range []int{100, 4096} {
					for _, rate := range []int{0, 500} {
						msgs := 2000
						if rate > 0 {
							msgs = 1500 // 3 s at 500/s
						}
						ws = append(ws, workload{nodes: nodes, sparse: sparse, publishers: pubs, size: size, rate: rate, messages: msgs})
					}
				}
			}
		}
	}
	if matchFilter != "" {
		ws = slices.DeleteFunc(ws, func(w workload) bool { return !strings.Contains(w.String(), matchFilter) })
	}
	if quick {
		ws = []workload{
			{nodes: 10, sparse: true, publishers: 1, size: 100, rate: 0, messages: 1000},
			{nodes: 10, sparse: true, publishers: 1, size: 100, rate: 500, messages: 500},
		}
	}
	fmt.Println("## Broadcast: Pipes live pipeline vs GossipSub (go-libp2p-pubsub v0.19.0)")
	fmt.Println()
	header("workload", "system", "delivered", "msgs/s per subscriber", "p50", "p99", "payload bytes sent per delivery", "payload copies per delivery", "note")
	for _, w := range ws {
		p, err := runPipesBroadcast(w)
		must(err)
		g, err := runGossipSub(w)
		must(err)
		for _, r := range []struct {
			name string
			r    result
		}{{"Pipes", p}, {"GossipSub", g}} {
			fmt.Printf("| %s | %s | %d/%d | %s | %s | %s | %.0f | %.2f | %s |\n", w, r.name, r.r.delivered, r.r.want,
				fmtRate(r.r.perSub), fmtDur(r.r.p50), fmtDur(r.r.p99), r.r.bytesPerMsg, r.r.sendsPerMsg, r.r.note)
		}
		ratio := func(a, b float64) string {
			if b == 0 {
				return "-"
			}
			return fmt.Sprintf("%.2fx", a/b)
		}
		fmt.Printf("| %s | Pipes/GossipSub | | %s | %s | %s | %s | %s | |\n", w, ratio(p.perSub, g.perSub),
			ratio(float64(p.p50), float64(g.p50)), ratio(float64(p.p99), float64(g.p99)), ratio(p.bytesPerMsg, g.bytesPerMsg), ratio(p.sendsPerMsg, g.sendsPerMsg))
	}
	fmt.Println()
}
