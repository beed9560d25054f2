package plumtree

import (
	"crypto/sha256"
	"testing"
	"time"
)

func (s *sim) grafts() (n uint64) {
	for _, tr := range s.trees {
		n += tr.Stats().GraftsSent
	}
	return n
}

func TestRepairAfterLinkLoss(t *testing.T) {
	s := newSim(t, 20, 4, 7, 0)
	for k := range 10 {
		s.checkAll(s.broadcast(0, k))
	}
	// Cut every eager (tree) link of a node that also has lazy links: it
	// can then only learn of messages by IHAVE, and must graft.
	victim := -1
	for i, tr := range s.trees {
		if e, l := tr.Peers(s.ids[0]); len(e) > 0 && len(l) > 0 && i != 0 {
			victim = i
			break
		}
	}
	if victim < 0 {
		t.Fatal("no node with both eager and lazy links")
	}
	eager, _ := s.trees[victim].Peers(s.ids[0])
	for _, p := range eager {
		s.unlink(victim, s.index[p])
	}
	if !s.connected() {
		t.Fatal("the cut disconnected the graph; pick another seed")
	}
	before := s.grafts()
	for k := range 10 {
		s.checkAll(s.broadcast(0, 100+k))
	}
	if s.grafts() == before {
		t.Fatal("the cut tree was not repaired by a graft")
	}
	// Once repaired, the tree is minimal again.
	s.payloads = 0
	for k := range 20 {
		s.checkAll(s.broadcast(0, 200+k))
	}
	if r := float64(s.payloads) / float64(20*19); r > 1.2 {
		t.Fatalf("after repair: %.3f transmissions per delivery", r)
	}
}

// TestRepairRandomCuts removes random tree links of random origins' trees
// (keeping the overlay connected) between broadcasts from random origins:
// every message still reaches every node once, and the trees settle again.
func TestRepairRandomCuts(t *testing.T) {
	for _, maxDelay := range []time.Duration{0, 20 * time.Millisecond} {
		const n = 50
		s := newSim(t, n, 6, 99, maxDelay)
		for k := range 2 * n {
			s.checkAll(s.broadcast(k%n, k))
		}
		before, cuts := s.grafts(), 0
		for round := range 30 {
			// A tree link: a pushes origin o's messages to b eagerly.
			a, o := s.rng.IntN(n), s.rng.IntN(n)
			eager, _ := s.trees[a].Peers(s.ids[o])
			if len(eager) > 0 {
				b := s.index[eager[s.rng.IntN(len(eager))]]
				s.unlink(a, b)
				if s.connected() && len(s.trees[a].peerList) > 1 && len(s.trees[b].peerList) > 1 {
					cuts++
				} else {
					s.link(a, b) // would isolate a part: keep it
				}
			}
			for k := range 3 {
				s.checkAll(s.broadcast(s.rng.IntN(n), 10000+3*round+k))
			}
		}
		if cuts < 10 {
			t.Fatalf("only %d links cut", cuts)
		}
		if s.grafts() == before {
			t.Fatal("no graft after cutting tree links")
		}
		for k := range 2 * n { // re-warm every origin's tree
			s.checkAll(s.broadcast(k%n, 20000+k))
		}
		s.payloads = 0
		for k := range 100 {
			s.checkAll(s.broadcast(s.rng.IntN(n), 30000+k))
		}
		r := float64(s.payloads) / float64(100*(n-1))
		t.Logf("delay 1ms..%v, %d links cut: %d grafts; then %.3f transmissions per delivery",
			maxDelay+time.Millisecond, cuts, s.grafts()-before, r)
		if r > 1.2 {
			t.Errorf("after repair: %.3f transmissions per delivery", r)
		}
	}
}

// TestNodeLeaves: a node with many tree links drops all its links; the
// others still receive everything.
func TestNodeLeaves(t *testing.T) {
	const n = 20
	s := newSim(t, n, 6, 3, 5*time.Millisecond)
	for k := range 2 * n {
		s.checkAll(s.broadcast(k%n, k))
	}
	gone := 4
	for _, p := range append([]PeerID(nil), s.trees[gone].peerList...) {
		s.unlink(gone, s.index[p])
	}
	for k := range 40 {
		o := (gone + 1 + k%(n-1)) % n
		id := s.broadcast(o, 1000+k)
		for i := range n {
			if want := map[bool]int{true: 0, false: 1}[i == gone]; s.delivered[i][id] != want {
				t.Fatalf("node %d delivered message %d %d times", i, k, s.delivered[i][id])
			}
		}
	}
}

// TestConcurrentOrigins: every node broadcasts at the same moment, round
// after round (like presence heartbeats). Per-origin trees keep the cost
// near one payload per delivery even with every message racing the others.
func TestConcurrentOrigins(t *testing.T) {
	const n = 30
	s := newSim(t, n, 6, 11, 5*time.Millisecond)
	round := func(r int) []MsgID {
		var ids []MsgID
		for o := range n {
			payload := []byte{byte(r), byte(r >> 8), byte(o)}
			id := sha256.Sum256(payload)
			s.delivered[o][id]++
			s.send(o, s.trees[o].Broadcast(s.now, s.ids[o], id, 1, payload))
			ids = append(ids, id)
		}
		s.run()
		return ids
	}
	for r := range 3 {
		for _, id := range round(r) {
			s.checkAll(id)
		}
	}
	s.payloads = 0
	const rounds = 10
	for r := range rounds {
		for _, id := range round(100 + r) {
			s.checkAll(id)
		}
	}
	ratio := float64(s.payloads) / float64(rounds*n*(n-1))
	t.Logf("%d concurrent origins: %.3f payload transmissions per delivery", n, ratio)
	if ratio > 1.2 {
		t.Fatalf("%.3f transmissions per delivery with concurrent origins", ratio)
	}
}
