package plumtree

import (
	"crypto/sha256"
	"math/rand/v2"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/pipesnet/pipes/internal/wire/pb"
)

var t0 = time.Unix(0, 0)

func gossip(id MsgID, origin PeerID, payload string, hops uint32) *pb.Frame {
	return &pb.Frame{Body: &pb.Frame_Gossip{Gossip: &pb.Gossip{Id: id[:], Kind: 1, Payload: []byte(payload), Hops: hops, Origin: origin[:]}}}
}

func ihave(origin PeerID, ids ...MsgID) *pb.Frame {
	ih := &pb.IHave{}
	for _, id := range ids {
		ih.Messages = append(ih.Messages, &pb.Announcement{Id: id[:], Origin: origin[:]})
	}
	return &pb.Frame{Body: &pb.Frame_Ihave{Ihave: ih}}
}

func msgID(s string) MsgID { return sha256.Sum256([]byte(s)) }

// newStar returns a tree with neighbours nodeID(1)..nodeID(k).
func newStar(cfg Config, k int) *Tree {
	tr := New(cfg)
	for i := 1; i <= k; i++ {
		tr.AddPeer(nodeID(i))
	}
	return tr
}

func TestGossipPushesAndPrunesDuplicates(t *testing.T) {
	tr := newStar(Config{}, 3)
	o, id := nodeID(9), msgID("m")
	deliver, out, err := tr.HandleFrame(t0, nodeID(1), gossip(id, o, "m", 2))
	if err != nil || deliver == nil {
		t.Fatalf("first copy: %v %v", deliver, err)
	}
	if len(out) != 2 || out[0].To != nodeID(2) || out[1].To != nodeID(3) {
		t.Fatalf("pushed to %v, want peers 2 and 3", out)
	}
	if g := out[0].Frame.GetGossip(); g.Hops != 3 || string(g.Payload) != "m" {
		t.Fatalf("pushed %v", g)
	}
	// A second copy: not delivered; its sender is pruned, once.
	deliver, out, _ = tr.HandleFrame(t0, nodeID(2), gossip(id, o, "m", 1))
	if deliver != nil || len(out) != 1 || out[0].To != nodeID(2) || out[0].Frame.GetPrune() == nil {
		t.Fatalf("duplicate: deliver %v, out %v", deliver, out)
	}
	if _, out, _ = tr.HandleFrame(t0, nodeID(2), gossip(id, o, "m", 1)); len(out) != 0 {
		t.Fatalf("pruned twice: %v", out)
	}
	if eager, lazy := tr.Peers(o); len(eager) != 2 || len(lazy) != 1 || lazy[0] != nodeID(2) {
		t.Fatalf("eager %v lazy %v", eager, lazy)
	}
	st := tr.Stats()
	if st.Delivered != 1 || st.Duplicates != 2 || st.PrunesSent != 1 || st.EagerSent != 2 || st.LazyLinks != 1 {
		t.Fatalf("stats %+v", st)
	}
	// The next message of o: eager to 1 and 3, announced to 2 on Tick.
	_, out, _ = tr.HandleFrame(t0, nodeID(3), gossip(msgID("n"), o, "n", 0))
	if len(out) != 1 || out[0].To != nodeID(1) {
		t.Fatalf("pushed to %v, want peer 1", out)
	}
	d, ok := tr.NextDeadline()
	if !ok || !d.Equal(t0.Add(100*time.Millisecond)) {
		t.Fatalf("next deadline %v %v", d, ok)
	}
	if out := tr.Tick(d.Add(-1)); len(out) != 0 {
		t.Fatalf("flushed early: %v", out)
	}
	out = tr.Tick(d)
	if len(out) != 1 || out[0].To != nodeID(2) || len(out[0].Frame.GetIhave().GetMessages()) != 1 {
		t.Fatalf("announcements %v", out)
	}
	// A prune from 1 makes it lazy for o only.
	tr.HandleFrame(t0, nodeID(1), &pb.Frame{Body: &pb.Frame_Prune{Prune: &pb.Prune{Origin: o[:]}}})
	if _, lazy := tr.Peers(o); len(lazy) != 2 {
		t.Fatalf("lazy after prune: %v", lazy)
	}
	if _, lazy := tr.Peers(nodeID(8)); len(lazy) != 0 {
		t.Fatalf("another origin's tree changed: %v", lazy)
	}
}

func TestGraftResendsCached(t *testing.T) {
	a, b := New(Config{}), New(Config{})
	ida, idb := nodeID(1), nodeID(2)
	a.AddPeer(idb)
	b.AddPeer(ida)
	id := msgID("x")
	a.Broadcast(t0, ida, id, 1, []byte("x"))
	a.HandleFrame(t0, idb, &pb.Frame{Body: &pb.Frame_Prune{Prune: &pb.Prune{Origin: ida[:]}}})
	_, out, err := a.HandleFrame(t0, idb, &pb.Frame{Body: &pb.Frame_Graft{Graft: &pb.Graft{Id: id[:], Origin: ida[:]}}})
	if err != nil || len(out) != 1 || out[0].To != idb {
		t.Fatalf("graft: %v %v", out, err)
	}
	g := out[0].Frame.GetGossip()
	if g == nil || string(g.Payload) != "x" || g.Kind != 1 {
		t.Fatalf("graft answer: %v", out[0].Frame)
	}
	if eager, _ := a.Peers(ida); len(eager) != 1 {
		t.Fatal("the grafting peer is not eager again")
	}
	deliver, _, _ := b.HandleFrame(t0, ida, out[0].Frame)
	if deliver == nil {
		t.Fatal("not delivered")
	}
	if d, _, _ := b.HandleFrame(t0, ida, out[0].Frame); d != nil {
		t.Fatal("delivered twice")
	}
	// Once the payload expired, a graft still mends the link but sends
	// nothing.
	a.Tick(t0.Add(time.Minute))
	_, out, err = a.HandleFrame(t0.Add(time.Minute), idb, &pb.Frame{Body: &pb.Frame_Graft{Graft: &pb.Graft{Id: id[:], Origin: ida[:]}}})
	if err != nil || len(out) != 0 || a.Stats().Cached != 0 {
		t.Fatalf("graft for an expired message: %v %v", out, err)
	}
}

func TestGraftTimersTryAnnouncersInTurn(t *testing.T) {
	tr := newStar(Config{}, 4)
	o, id := nodeID(9), msgID("m")
	for _, p := range []int{2, 1, 2, 3} { // 2 twice: remembered once
		tr.HandleFrame(t0, nodeID(p), ihave(o, id))
	}
	tr.RemovePeer(nodeID(1)) // gone: never asked
	d, ok := tr.NextDeadline()
	if !ok || !d.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("deadline %v, want IHaveTimeout", d)
	}
	var asked []PeerID
	for range 5 {
		d, ok := tr.NextDeadline()
		if !ok {
			break
		}
		for _, s := range tr.Tick(d) {
			gr := s.Frame.GetGraft()
			if gr == nil || MsgID(gr.Id) != id || PeerID(gr.Origin) != o {
				t.Fatalf("not a graft for m: %v", s.Frame)
			}
			asked = append(asked, s.To)
		}
	}
	if len(asked) != 2 || asked[0] != nodeID(2) || asked[1] != nodeID(3) {
		t.Fatalf("grafted %v, want peers 2 then 3", asked)
	}
	if st := tr.Stats(); st.Missed != 0 || st.GraftsSent != 2 {
		t.Fatalf("stats %+v", st)
	}
	// The message arriving stops the timer; later announcements are ignored.
	tr.HandleFrame(t0, nodeID(2), ihave(o, id))
	tr.HandleFrame(t0, nodeID(3), gossip(id, o, "m", 0))
	tr.HandleFrame(t0, nodeID(4), ihave(o, id))
	if st := tr.Stats(); st.Missed != 0 {
		t.Fatalf("%d ids still missing", st.Missed)
	}
	if out := tr.Tick(t0.Add(time.Hour)); len(out) != 0 {
		t.Fatalf("grafted a message it has: %v", out)
	}
}

func TestExpiryAtDeadline(t *testing.T) {
	tr := New(Config{CacheTTL: time.Second, SeenTTL: 2 * time.Second, MaxCache: 2})
	o := nodeID(9)
	for i, s := range []string{"a", "b", "c"} {
		tr.Broadcast(t0.Add(time.Duration(i)*time.Millisecond), o, msgID(s), 1, []byte(s))
	}
	if st := tr.Stats(); st.Cached != 2 || !tr.Seen(msgID("a")) {
		t.Fatalf("cache bound: %+v", st)
	}
	for {
		d, ok := tr.NextDeadline()
		if !ok {
			break
		}
		tr.Tick(d)
		if d2, ok := tr.NextDeadline(); ok && !d2.After(d) {
			t.Fatalf("Tick(%v) left work due at %v", d, d2)
		}
	}
	if st := tr.Stats(); st.Cached != 0 || tr.Seen(msgID("c")) {
		t.Fatalf("after expiry: %+v", st)
	}
}

func TestMalformedFramesAreErrors(t *testing.T) {
	tr := New(Config{})
	p, id := nodeID(1), msgID("m")
	if _, _, err := tr.HandleFrame(t0, p, gossip(id, id, "m", 0)); err == nil {
		t.Fatal("frame from unknown peer accepted")
	}
	tr.AddPeer(p)
	bad := []*pb.Frame{
		nil,
		{},
		{Body: &pb.Frame_Gossip{}},
		{Body: &pb.Frame_Gossip{Gossip: &pb.Gossip{Id: []byte{1}, Origin: id[:]}}},
		{Body: &pb.Frame_Gossip{Gossip: &pb.Gossip{Id: id[:]}}},
		{Body: &pb.Frame_Graft{}},
		{Body: &pb.Frame_Graft{Graft: &pb.Graft{}}},
		{Body: &pb.Frame_Graft{Graft: &pb.Graft{Id: id[:], Origin: id[:31]}}},
		{Body: &pb.Frame_Prune{}},
		{Body: &pb.Frame_Prune{Prune: &pb.Prune{}}},
		{Body: &pb.Frame_Ihave{Ihave: &pb.IHave{Messages: []*pb.Announcement{{Id: []byte{1, 2}, Origin: id[:]}}}}},
		{Body: &pb.Frame_Ihave{Ihave: &pb.IHave{Messages: []*pb.Announcement{{Id: id[:], Origin: id[:]}, nil}}}},
		{Body: &pb.Frame_Peers{Peers: &pb.PeerList{}}},
		{Body: &pb.Frame_Goodbye{Goodbye: &pb.Goodbye{}}},
	}
	for i, f := range bad {
		if _, _, err := tr.HandleFrame(t0, p, f); err == nil {
			t.Errorf("bad frame %d accepted", i)
		}
	}
	// Rejected frames left no trace (the IHAVE with a valid announcement
	// before the bad one included).
	if st := tr.Stats(); st != (Stats{Peers: 1}) {
		t.Fatalf("state changed: %+v", st)
	}
	if _, ok := tr.NextDeadline(); ok {
		t.Fatal("a timer runs")
	}
}

func TestBoundsUnderIHaveFlood(t *testing.T) {
	const maxMissing = 1000
	tr := newStar(Config{MaxMissing: maxMissing}, 20)
	rng := rand.New(rand.NewPCG(1, 2))
	randomID := func() []byte {
		id := make([]byte, 32)
		for i := range id {
			id[i] = byte(rng.Uint32())
		}
		return id
	}
	for k := range 100 {
		ih := &pb.IHave{}
		for range 256 {
			id := randomID()
			ih.Messages = append(ih.Messages, &pb.Announcement{Id: id, Origin: id})
		}
		for p := 1; p <= 20; p++ { // every neighbour announces the same ids
			if _, _, err := tr.HandleFrame(t0.Add(time.Duration(k)*time.Millisecond), nodeID(p), &pb.Frame{Body: &pb.Frame_Ihave{Ihave: ih}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	st := tr.Stats()
	if st.Missed > maxMissing || st.Dropped == 0 || len(tr.timers) != st.Missed {
		t.Fatalf("missing table %d entries (%d timers), %d dropped", st.Missed, len(tr.timers), st.Dropped)
	}
	for _, m := range tr.missing {
		if len(m.announcers) > maxAnnouncers {
			t.Fatalf("%d announcers of one id", len(m.announcers))
		}
	}
	// Timers drain the table: each announcer is asked once, then given up.
	var grafts int
	for {
		d, ok := tr.NextDeadline()
		if !ok {
			break
		}
		grafts += len(tr.Tick(d))
	}
	if st := tr.Stats(); st.Missed != 0 || grafts != maxMissing*maxAnnouncers {
		t.Fatalf("%d missing ids left, %d grafts", st.Missed, grafts)
	}
}

func TestOtherBounds(t *testing.T) {
	// Lazy queues: a peer that is never flushed holds MaxLazyQueue.
	tr := newStar(Config{MaxLazyQueue: 10, MaxSeen: 50, MaxOrigins: 5, LazyFanout: 1}, 2)
	for o := range 8 { // peer 2 prunes every origin: it only gets IHAVEs
		origin := nodeID(100 + o)
		tr.HandleFrame(t0, nodeID(2), &pb.Frame{Body: &pb.Frame_Prune{Prune: &pb.Prune{Origin: origin[:]}}})
	}
	if st := tr.Stats(); st.Origins != 5 || st.Dropped != 3 {
		t.Fatalf("origins bound: %+v", st)
	}
	for i := range 100 {
		id := msgID(string(rune(i)))
		tr.HandleFrame(t0, nodeID(1), gossip(id, nodeID(107), "p", 0))
	}
	if q := len(tr.lazyQ[nodeID(2)]); q != 10 {
		t.Fatalf("lazy queue %d, want 10", q)
	}
	if st := tr.Stats(); len(tr.seen) != 50 || len(tr.seenFIFO) != 50 || st.Delivered != 100 {
		t.Fatalf("seen %d (fifo %d), %+v", len(tr.seen), len(tr.seenFIFO), st)
	}
	out := tr.Tick(t0.Add(time.Second))
	if len(out) != 1 || len(out[0].Frame.GetIhave().GetMessages()) != 10 {
		t.Fatalf("flush: %v", out)
	}
}

// FuzzHandleFrame: arbitrary frames from a known peer never panic, and
// the bounds hold.
func FuzzHandleFrame(f *testing.F) {
	id := msgID("seed")
	for _, fr := range []*pb.Frame{
		gossip(id, id, "p", 0),
		ihave(id, id, msgID("other")),
		{Body: &pb.Frame_Graft{Graft: &pb.Graft{Id: id[:], Origin: id[:]}}},
		{Body: &pb.Frame_Prune{Prune: &pb.Prune{Origin: id[:]}}},
		{Body: &pb.Frame_Peers{Peers: &pb.PeerList{}}},
	} {
		b, _ := proto.Marshal(fr)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var fr pb.Frame
		if proto.Unmarshal(data, &fr) != nil {
			return
		}
		tr := New(Config{MaxMissing: 4, MaxCache: 2})
		p := nodeID(1)
		tr.AddPeer(p)
		tr.AddPeer(nodeID(2))
		tr.Broadcast(t0, nodeID(3), id, 1, []byte("p"))
		for range 2 {
			deliver, _, err := tr.HandleFrame(t0, p, &fr)
			if deliver != nil && (err != nil || fr.GetGossip() == nil) {
				t.Fatalf("delivered %v with error %v", deliver, err)
			}
		}
		tr.RemovePeer(nodeID(2))
		for range 4 {
			d, ok := tr.NextDeadline()
			if !ok {
				break
			}
			tr.Tick(d)
		}
		if st := tr.Stats(); st.Missed > 4 || st.Cached > 2 {
			t.Fatalf("bounds: %+v", st)
		}
	})
}
