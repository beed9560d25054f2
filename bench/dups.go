package main

import "fmt"

// runDuplicates reports payload transmissions per delivered packet (ideal
// 1.0) at 20 and 50 nodes, for Pipes and GossipSub on the same topology.
func runDuplicates(quick bool) {
	sizes := []int{20, 50}
	if quick {
		sizes = []int{20}
	}
	fmt.Println("## Duplicate payload transmissions per delivery (ideal 1.00)")
	fmt.Println()
	header("nodes", "topology", "Pipes", "GossipSub")
	for _, n := range sizes {
		for _, sparse := range []bool{true, false} {
			w := workload{nodes: n, sparse: sparse, publishers: 5, size: 100, rate: 500, messages: 1000}
			p, err := runPipesBroadcast(w)
			must(err)
			g, err := runGossipSub(w)
			must(err)
			topo := "full"
			if sparse {
				topo = "sparse (degree ~4)"
			}
			fmt.Printf("| %d | %s | %.3f (%d/%d delivered) | %.3f (%d/%d delivered) |\n", n, topo,
				p.sendsPerMsg, p.delivered, p.want, g.sendsPerMsg, g.delivered, g.want)
		}
	}
	fmt.Println()
}
