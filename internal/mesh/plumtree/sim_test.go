package plumtree

import (
	"container/heap"
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"math/rand/v2"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/pipesnet/pipes/internal/wire/pb"
)

// sim wires trees together with an in-memory network and a fake clock.
// Frames on a link take 1 ms, plus up to maxDelay drawn from a seeded
// generator; frames due at the same time are delivered in the order they
// were sent. Timers run when NextDeadline says, as a real owner would.
type sim struct {
	t        *testing.T
	now      time.Time
	trees    []*Tree
	ids      []PeerID
	index    map[PeerID]int
	queue    msgHeap
	seq      int
	rng      *rand.Rand
	maxDelay time.Duration
	// delivered[node][msg] counts application deliveries.
	delivered []map[MsgID]int
	payloads  int       // gossip frames carried
	trace     hash.Hash // if set, every frame handled is written to it
}

type msg struct {
	at       time.Time
	seq      int
	from, to int
	f        *pb.Frame
}

type msgHeap []msg

func (h msgHeap) Len() int { return len(h) }
func (h msgHeap) Less(i, j int) bool {
	if !h[i].at.Equal(h[j].at) {
		return h[i].at.Before(h[j].at)
	}
	return h[i].seq < h[j].seq
}
func (h msgHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *msgHeap) Push(x any)   { *h = append(*h, x.(msg)) }
func (h *msgHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func nodeID(i int) PeerID {
	var id PeerID
	binary.BigEndian.PutUint64(id[:], uint64(i)+1)
	return id
}

// newSim makes n nodes, each linked to degree random others (plus a ring,
// so the graph is connected).
func newSim(t *testing.T, n, degree int, seed uint64, maxDelay time.Duration) *sim {
	s := &sim{t: t, now: time.Unix(1000, 0), index: map[PeerID]int{}, rng: rand.New(rand.NewPCG(seed, 1)), maxDelay: maxDelay}
	for i := range n {
		s.trees = append(s.trees, New(Config{Seed: seed + uint64(i)}))
		s.ids = append(s.ids, nodeID(i))
		s.index[nodeID(i)] = i
		s.delivered = append(s.delivered, map[MsgID]int{})
	}
	for i := range n {
		s.link(i, (i+1)%n)
	}
	for i := range n {
		for len(s.trees[i].peers) < degree {
			s.link(i, s.rng.IntN(n))
		}
	}
	return s
}

func (s *sim) link(a, b int) {
	if a == b {
		return
	}
	s.trees[a].AddPeer(s.ids[b])
	s.trees[b].AddPeer(s.ids[a])
}

func (s *sim) unlink(a, b int) {
	s.trees[a].RemovePeer(s.ids[b])
	s.trees[b].RemovePeer(s.ids[a])
}

func (s *sim) linked(a, b int) bool {
	_, ok := s.trees[a].peers[s.ids[b]]
	return ok
}

// connected reports whether the overlay is one component.
func (s *sim) connected() bool {
	seen := map[int]bool{0: true}
	stack := []int{0}
	for len(stack) > 0 {
		a := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, p := range s.trees[a].peerList {
			if b := s.index[p]; !seen[b] {
				seen[b] = true
				stack = append(stack, b)
			}
		}
	}
	return len(seen) == len(s.trees)
}

func (s *sim) send(from int, out []Send) {
	for _, o := range out {
		to, ok := s.index[o.To]
		if !ok {
			s.t.Fatalf("send to unknown peer")
		}
		if !s.linked(to, from) {
			continue // the link is gone
		}
		d := time.Millisecond
		if s.maxDelay > 0 {
			d += time.Duration(s.rng.Int64N(int64(s.maxDelay)))
		}
		if _, ok := o.Frame.Body.(*pb.Frame_Gossip); ok {
			s.payloads++
		}
		s.seq++
		heap.Push(&s.queue, msg{at: s.now.Add(d), seq: s.seq, from: from, to: to, f: o.Frame})
	}
}

// quiet is how far ahead the next timer may be for the network to count
// as settled: past every IHAVE flush, graft timeout and graft retry.
const quiet = 5 * time.Second

// run delivers frames and runs timers until the network is quiet.
func (s *sim) run() {
	for {
		next, ok := time.Time{}, false
		if s.queue.Len() > 0 {
			next, ok = s.queue[0].at, true
		}
		for _, tr := range s.trees {
			if d, has := tr.NextDeadline(); has && (!ok || d.Before(next)) {
				next, ok = d, true
			}
		}
		if !ok || (s.queue.Len() == 0 && next.Sub(s.now) > quiet) {
			return
		}
		if next.After(s.now) {
			s.now = next
		}
		for s.queue.Len() > 0 && !s.queue[0].at.After(s.now) {
			m := heap.Pop(&s.queue).(msg)
			s.record(m.from, m.to, m.f)
			deliver, out, err := s.trees[m.to].HandleFrame(s.now, s.ids[m.from], m.f)
			if err != nil {
				s.t.Fatalf("node %d: %v", m.to, err)
			}
			if deliver != nil {
				s.delivered[m.to][MsgID(deliver.Id)]++
			}
			s.send(m.to, out)
		}
		for i, tr := range s.trees {
			if d, has := tr.NextDeadline(); has && !d.After(s.now) {
				s.send(i, tr.Tick(s.now))
				if d2, has := tr.NextDeadline(); has && !d2.After(s.now) {
					s.t.Fatalf("node %d: Tick(%v) left work due at %v", i, s.now, d2)
				}
			}
		}
	}
}

func (s *sim) record(from, to int, f *pb.Frame) {
	if s.trace == nil {
		return
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(f)
	if err != nil {
		s.t.Fatal(err)
	}
	var hdr [16]byte
	binary.BigEndian.PutUint64(hdr[:], uint64(s.now.UnixNano()))
	binary.BigEndian.PutUint32(hdr[8:], uint32(from))
	binary.BigEndian.PutUint32(hdr[12:], uint32(to))
	s.trace.Write(hdr[:])
	s.trace.Write(b)
}

func (s *sim) broadcast(origin int, n int) MsgID {
	payload := []byte{byte(n), byte(n >> 8), byte(origin)}
	id := sha256.Sum256(payload)
	s.delivered[origin][id]++
	s.send(origin, s.trees[origin].Broadcast(s.now, s.ids[origin], id, 7, payload))
	s.run()
	return id
}

// checkAll asserts every node delivered id exactly once.
func (s *sim) checkAll(id MsgID) {
	s.t.Helper()
	for i := range s.trees {
		if c := s.delivered[i][id]; c != 1 {
			s.t.Fatalf("node %d delivered message %x %d times", i, id[:4], c)
		}
	}
}

// testFormsTree warms up a random graph of n nodes of degree 6, then
// returns the payload transmissions per delivery over 100 broadcasts from
// random origins.
func testFormsTree(t *testing.T, n int, maxDelay time.Duration) float64 {
	s := newSim(t, n, 6, uint64(n), maxDelay)
	for k := range 2 * n { // warm-up: every origin's tree forms
		s.checkAll(s.broadcast(k%n, k))
		if k == n-1 {
			t.Logf("%d nodes: first broadcast of each origin: %.3f transmissions per delivery", n, float64(s.payloads)/float64(n*(n-1)))
		}
	}
	s.payloads = 0
	const rounds = 100
	for k := range rounds {
		s.checkAll(s.broadcast(s.rng.IntN(n), 1000+k))
	}
	ratio := float64(s.payloads) / float64(rounds*(n-1))
	t.Logf("%d nodes, link delay 1ms..%v: %.3f payload transmissions per delivery", n, maxDelay+time.Millisecond, ratio)
	return ratio
}

func TestTreeNearMinimalDuplicates(t *testing.T) {
	for _, n := range []int{20, 50} {
		if r := testFormsTree(t, n, 0); r > 1.2 {
			t.Errorf("%d nodes: %.3f transmissions per delivery, want <= 1.2", n, r)
		}
	}
}

func TestTreeWithRandomDelays(t *testing.T) {
	// Random delays reorder frames; delivery stays exactly once and the
	// trees still settle.
	for _, n := range []int{20, 50} {
		if r := testFormsTree(t, n, 20*time.Millisecond); r > 1.2 {
			t.Errorf("%d nodes: %.3f transmissions per delivery with random delays", n, r)
		}
	}
}

// TestDeterministic: the same run twice gives the same frames, in the same
// order, at the same times.
func TestDeterministic(t *testing.T) {
	var sums [2][]byte
	for i := range sums {
		s := newSim(t, 30, 6, 5, 20*time.Millisecond)
		s.trace = sha256.New()
		for k := range 60 {
			if k == 30 { // cut links so that grafts are in the trace too
				for a := range 5 {
					if pl := s.trees[a].peerList; len(pl) > 1 {
						s.unlink(a, s.index[pl[0]])
					}
				}
			}
			s.broadcast(s.rng.IntN(30), k)
		}
		sums[i] = s.trace.Sum(nil)
	}
	if string(sums[0]) != string(sums[1]) {
		t.Fatalf("two runs differ: %x, %x", sums[0][:8], sums[1][:8])
	}
}
