package files

import (
	"bytes"
	"context"
	"net"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/service"
)

// ranked returns n node ids in their rank order for file.
func ranked(file ids.Content, n int) []ids.Node {
	out := make([]ids.Node, n)
	for i := range out {
		out[i] = ids.Node{byte(i + 1), 0xaa}
	}
	rank(file, out)
	return out
}

// mkView builds a view from nodes: holds[i] says whether nodes[i] holds
// file, off[i] for how long it has been offline (0: online).
func mkView(self ids.Node, file ids.Content, nodes []ids.Node, holds []bool, off []time.Duration) *view {
	now := time.Unix(1000, 0)
	v := &view{self: self, now: now, repairAfter: 10 * time.Minute}
	for i, n := range nodes {
		p := peer{node: n, files: map[ids.Content]struct{}{}}
		if holds[i] {
			p.files[file] = struct{}{}
		}
		if off != nil && off[i] > 0 {
			p.offlineSince = now.Add(-off[i])
		}
		v.peers = append(v.peers, p)
	}
	return v
}

func TestDecideCopies(t *testing.T) {
	f := ids.Content{1}
	n := ranked(f, 6) // n[0] ranks first
	long, short := 20*time.Minute, time.Minute
	settle := 30 * time.Second
	cases := []struct {
		name     string
		self     int
		holds    []bool
		off      []time.Duration
		c        copiesCase
		want     act
		def, exc bool
	}{
		{"lacking two: the first non-holder fetches", 1, []bool{true, false, false, false, false, false}, nil,
			copiesCase{copies: 3}, actFetch, true, false},
		{"lacking two: the second non-holder fetches", 2, []bool{true, false, false, false, false, false}, nil,
			copiesCase{copies: 3}, actFetch, true, false},
		{"lacking two: the third does not", 3, []bool{true, false, false, false, false, false}, nil,
			copiesCase{copies: 3}, actNone, true, false},
		{"a long deficit widens", 3, []bool{true, false, false, false, false, false}, nil,
			copiesCase{copies: 3, deficitAge: 11 * time.Minute}, actFetch, true, false},
		{"removed by its user: no copy", 1, []bool{true, false, false, false, false, false}, nil,
			copiesCase{copies: 3, excluded: true}, actNone, true, false},
		{"a holder offline briefly still counts", 3, []bool{true, true, true, false, false, false},
			[]time.Duration{0, short, 0, 0, 0, 0}, copiesCase{copies: 3}, actNone, false, false},
		{"a holder gone long is replaced", 3, []bool{true, true, true, false, false, false},
			[]time.Duration{0, long, 0, 0, 0, 0}, copiesCase{copies: 3}, actFetch, true, false},
		{"no holder online: nothing to fetch from", 3, []bool{true, false, false, false, false, false},
			[]time.Duration{long, 0, 0, 0, 0, 0}, copiesCase{copies: 1}, actNone, true, false},
		{"no holder online but an archive: restore", 1, []bool{true, false, false, false, false, false},
			[]time.Duration{long, 0, 0, 0, 0, 0}, copiesCase{copies: 1, restorable: true}, actFetch, true, false},
		{"an offline node is no candidate", 4, []bool{true, true, false, false, false, false},
			[]time.Duration{0, 0, short, 0, 0, 0}, copiesCase{copies: 3}, actNone, true, false},
		{"excess: the lowest duty copy goes after settle", 5, []bool{true, true, true, false, false, true}, nil,
			copiesCase{copies: 3, selfDuty: true, settle: settle, excessAge: settle}, actRelease, false, true},
		{"excess: not before settle", 5, []bool{true, true, true, false, false, true}, nil,
			copiesCase{copies: 3, selfDuty: true, settle: settle, excessAge: settle / 2}, actNone, false, true},
		{"excess: the user's copy stays", 5, []bool{true, true, true, false, false, true}, nil,
			copiesCase{copies: 3, settle: settle, excessAge: time.Hour}, actNone, false, true},
		{"excess: a higher one waits while the lowest may go", 2, []bool{true, true, true, false, false, true}, nil,
			copiesCase{copies: 3, selfDuty: true, settle: settle, excessAge: settle}, actNone, false, true},
		{"excess: it goes when the excess lasts (the lowest is kept)", 2, []bool{true, true, true, false, false, true}, nil,
			copiesCase{copies: 3, selfDuty: true, settle: settle, excessAge: 2 * settle}, actRelease, false, true},
		{"excess: never the top-ranked", 0, []bool{true, true, false, false, false, false}, nil,
			copiesCase{copies: 1, selfDuty: true, settle: settle, excessAge: time.Hour}, actNone, false, true},
		{"an offline holder is no excess", 2, []bool{true, true, true, true, false, false},
			[]time.Duration{0, short, 0, 0, 0, 0}, copiesCase{copies: 3, selfDuty: true, settle: settle, excessAge: time.Hour},
			actNone, false, false},
	}
	for _, tc := range cases {
		v := mkView(n[tc.self], f, n, tc.holds, tc.off)
		tc.c.file = f
		a, def, exc := decideCopies(v, tc.c)
		if a != tc.want || def != tc.def || exc != tc.exc {
			t.Errorf("%s: act %d deficit %v excess %v, want %d %v %v", tc.name, a, def, exc, tc.want, tc.def, tc.exc)
		}
	}
}

// Every node of the same view comes to the same placement: with one
// holder and a duty of three, exactly two fetch; with five, exactly two
// release (the lowest duty copies).
func TestDecideCopiesAgree(t *testing.T) {
	for seed := range 20 {
		f := ids.Content{byte(seed), 3}
		n := ranked(ids.Content{}, 8)
		holds := make([]bool, len(n))
		holds[seed%len(n)] = true
		fetch := 0
		for i := range n {
			if a, _, _ := decideCopies(mkView(n[i], f, n, holds, nil), copiesCase{file: f, copies: 3}); a == actFetch {
				fetch++
			}
		}
		if fetch != 2 {
			t.Fatalf("seed %d: %d fetch, want 2", seed, fetch)
		}
		for i := range holds {
			holds[i] = i < 5
		}
		release := 0
		for i := range n {
			c := copiesCase{file: f, copies: 3, selfDuty: true, settle: time.Second, excessAge: time.Second}
			if a, _, _ := decideCopies(mkView(n[i], f, n, holds, nil), c); a == actRelease {
				release++
			}
		}
		if release != 2 {
			t.Fatalf("seed %d: %d release, want 2", seed, release)
		}
	}
}

// Shards go to distinct nodes, stay with their holders, and a lost one
// goes to a node that holds no other.
func TestAssignShards(t *testing.T) {
	shards := []ids.Content{{1}, {2}, {3}, {4}, {5}}
	nodes := ranked(ids.Content{}, 7)
	v := &view{self: nodes[0], now: time.Unix(1000, 0), repairAfter: time.Minute}
	for _, n := range nodes {
		p := peer{node: n, files: map[ids.Content]struct{}{}}
		if n == nodes[0] { // the archiving node holds every shard
			for _, s := range shards {
				p.files[s] = struct{}{}
			}
		}
		v.peers = append(v.peers, p)
	}
	to := assignShards(v, shards)
	if to[0] != nodes[0] {
		t.Fatalf("shard 0 left its holder for %v", to[0])
	}
	seen := map[ids.Node]bool{}
	for i, n := range to {
		if seen[n] || n == (ids.Node{}) {
			t.Fatalf("shard %d on %v, given twice or to nobody: %v", i, n, to)
		}
		seen[n] = true
	}
	// Each takes its shard; the archiving node keeps shard 0 only.
	for i := range v.peers {
		p := &v.peers[i]
		p.files = map[ids.Content]struct{}{}
		for k, n := range to {
			if n == p.node {
				p.files[shards[k]] = struct{}{}
			}
		}
	}
	if again := assignShards(v, shards); !slices.Equal(again, to) {
		t.Fatalf("placement moved: %v then %v", to, again)
	}
	// The holder of shard 3 is gone for long: shard 3 goes to a node
	// holding none; the others stay.
	for i := range v.peers {
		if v.peers[i].node == to[3] {
			v.peers[i].offlineSince = v.now.Add(-time.Hour)
		}
	}
	moved := assignShards(v, shards)
	for k := range shards {
		switch {
		case k != 3 && moved[k] != to[k]:
			t.Fatalf("shard %d moved", k)
		case k == 3 && (seen[moved[k]]):
			t.Fatalf("shard 3 went to %v, which holds another or is gone", moved[k])
		}
	}
	v.self = moved[3]
	if a, _ := decideShard(v, shardCase{shard: shards[3], to: moved[3], available: 4, data: 3}); a != actRebuild {
		t.Fatalf("the new node of a lost shard: act %d, want a rebuild", a)
	}
	if a, _ := decideShard(v, shardCase{shard: shards[3], to: moved[3], available: 2, data: 3}); a != actNone {
		t.Fatalf("too few shards to rebuild: act %d", a)
	}
}

// The loop, under synctest: a copy taken for a duty, with two other
// holders online and a duty of one, is released only once the excess has
// lasted for the settle delay; the user's copy never is.
func TestLoopReleasesAfterSettle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newFakeHost(t)
		s := New(Config{RepairAfter: 8 * time.Second}) // evaluations every second, settle 2 s
		if err := s.Start(context.Background(), h); err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		ctx := context.Background()
		id, err := s.AddReader(ctx, "f", bytes.NewReader([]byte("duty copy")), AddOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.save(id, &record{name: "f", size: 9, complete: true, duty: true}); err != nil {
			t.Fatal(err)
		}
		if err := s.Replicate(ctx, id, 1); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Second)
		synctest.Wait()
		// Two other holders that rank above this node come.
		var others []ids.Node
		for i := 0; len(others) < 2; i++ {
			n := ids.Node{byte(i), 0x55}
			if a, b := score(id, n), score(id, h.Self()); bytes.Compare(a[:], b[:]) > 0 {
				others = append(others, n)
			}
		}
		for _, n := range others {
			s.idx.apply(&holdings{node: n, seq: 1, files: []ids.Content{id}})
		}
		s.rep.poke()
		time.Sleep(1500 * time.Millisecond)
		synctest.Wait()
		if _, ok := s.recordOf(id); !ok {
			t.Fatal("released before the excess lasted for the settle delay")
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if _, ok := s.recordOf(id); ok {
			t.Fatal("the copy taken for the duty is kept despite the excess")
		}
		// The user adds it again: kept, however long the excess lasts.
		if _, err := s.AddReader(ctx, "f", bytes.NewReader([]byte("duty copy")), AddOptions{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if r, ok := s.recordOf(id); !ok || !r.complete || r.duty {
			t.Fatal("the user's copy was released")
		}
	})
}

// dialHost is a fakeHost that counts the dials of fetches.
type dialHost struct {
	*fakeHost
	dials chan ids.Node
}

func (h *dialHost) Dial(_ context.Context, n ids.Node, _ string) (net.Conn, error) {
	select {
	case h.dials <- n:
	default:
	}
	return nil, service.ErrUnavailable
}

// The loop, under synctest: a holder offline for less than the repair
// delay still counts (a restart is no loss); once it is gone for longer,
// this node, the one candidate online, takes a copy (it dials the holder
// left).
func TestLoopRepairsAfterDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &dialHost{fakeHost: newFakeHost(t), dials: make(chan ids.Node, 16)}
		s := New(Config{RepairAfter: 8 * time.Second})
		if err := s.Start(context.Background(), h); err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		id := ids.Content{5, 5}
		a, b := ids.Node{1, 1}, ids.Node{2, 2}
		s.idx.apply(&holdings{node: a, seq: 1, files: []ids.Content{id}})
		s.idx.apply(&holdings{node: b, seq: 1, files: []ids.Content{id}})
		k := h.Keys()
		d := &duty{kind: dutyCopies, file: id, setAt: uint64(time.Now().UnixNano()), copies: 2}
		encodeDuty(k.Node, k.Cert.NetworkID, d)
		s.keepDuty(d)
		s.idx.presence(b, false, time.Now())
		s.rep.poke()
		time.Sleep(6 * time.Second)
		synctest.Wait()
		if len(h.dials) != 0 {
			t.Fatal("a copy was taken while the holder offline was within the repair delay")
		}
		time.Sleep(4 * time.Second)
		synctest.Wait()
		if len(h.dials) == 0 {
			t.Fatal("no copy was taken after the repair delay")
		}
	})
}
