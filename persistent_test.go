package pipes_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pipesnet/pipes"
)

// history returns every logged packet of p, checking that LogIDs run 0, 1,
// 2, ... and that each sender's packets are in sequence order.
func history(t *testing.T, p *pipes.Pipeline) []*pipes.Packet {
	t.Helper()
	var out []*pipes.Packet
	last := map[pipes.NodeID]uint64{}
	for pk, err := range p.PacketsSince(-1) {
		if err != nil {
			t.Fatal(err)
		}
		if pk.LogID() != int64(len(out)) {
			t.Fatalf("LogID %d at position %d", pk.LogID(), len(out))
		}
		if pk.Seq() != last[pk.Sender()]+1 {
			t.Fatalf("sender %s: seq %d after %d", pk.Sender().String()[:8], pk.Seq(), last[pk.Sender()])
		}
		last[pk.Sender()] = pk.Seq()
		out = append(out, pk)
	}
	return out
}

// idSet returns the packet ids of pks.
func idSet(pks []*pipes.Packet) map[pipes.PacketID]bool {
	s := map[pipes.PacketID]bool{}
	for _, pk := range pks {
		s[pk.ID()] = true
	}
	return s
}

// converged waits until every member's log of id holds want packets, the
// same set everywhere.
func converged(t *testing.T, ms []*member, id pipes.PipelineID, want int) {
	t.Helper()
	eventually(t, 90*time.Second, "logs converge", func() error {
		var counts []string
		ok := true
		for _, m := range ms {
			p, err := m.n.Pipeline(id)
			if err != nil {
				return err
			}
			s := p.Stats()
			counts = append(counts, fmt.Sprintf("%s: %d (syncing %v)", m.n.Location(), s.Logged, s.Synchronizing))
			ok = ok && s.Logged == int64(want)
		}
		if !ok {
			return fmt.Errorf("want %d packets everywhere, have %v", want, counts)
		}
		return nil
	})
	var ref map[pipes.PacketID]bool
	for _, m := range ms {
		p, _ := m.n.Pipeline(id)
		s := idSet(history(t, p))
		if ref == nil {
			ref = s
			continue
		}
		for pid := range ref {
			if !s[pid] {
				t.Fatalf("%s lacks packet %s", m.n.Location(), pid)
			}
		}
	}
}

func putN(t *testing.T, p *pipes.Pipeline, n int, prefix string) []pipes.PacketID {
	t.Helper()
	var ids []pipes.PacketID
	for i := range n {
		id, err := p.Put(fmt.Appendf(nil, "%s %d", prefix, i), pipes.WithPacketType(3))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

func TestPersistentPipelineLogAndRestart(t *testing.T) {
	ms := cluster(t, "persist", 3, nil)
	id, err := ms[0].n.CreatePipeline("history", pipes.PipelineOptions{Persistent: true})
	if err != nil {
		t.Fatal(err)
	}
	p0, _ := ms[0].n.Pipeline(id)
	p1 := waitPipeline(t, ms[1], id)
	waitPipeline(t, ms[2], id)
	if !p0.Persistent() || p0.Live() {
		t.Fatal("not persistent")
	}
	// A slow subscriber on node 2 that reads nothing until the end.
	p2, _ := ms[2].n.Pipeline(id)
	slow := p2.Subscribe(t.Context())
	var wg sync.WaitGroup
	for i, p := range []*pipes.Pipeline{p0, p1} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			putN(t, p, 300, fmt.Sprintf("node %d", i))
		}()
	}
	wg.Wait()
	converged(t, ms, id, 600)
	got := receive(t, slow, 600)
	for i, pk := range got {
		if pk.LogID() != int64(i) {
			t.Fatalf("subscription: LogID %d at %d", pk.LogID(), i)
		}
	}
	// PacketWithID, and the packet's fields.
	first := history(t, p2)[0]
	pk, err := p2.PacketWithID(first.ID())
	if err != nil || pk.Type() != 3 || pk.LogID() != 0 {
		t.Fatalf("PacketWithID: %v %v", pk, err)
	}
	if _, err := p2.PacketWithID(pipes.PacketID{1}); !errors.Is(err, pipes.ErrNotFound) {
		t.Fatalf("PacketWithID of nothing: %v", err)
	}
	// Restart node 2 with its platform: same log, same LogIDs.
	before := history(t, p2)
	m := ms[2]
	if err := m.p.Close(); err != nil {
		t.Fatal(err)
	}
	m.open(t)
	m.start(t)
	p2, err = m.n.Pipeline(id)
	if err != nil {
		t.Fatalf("pipeline not known after restart: %v", err)
	}
	after := history(t, p2)
	if len(after) != len(before) {
		t.Fatalf("%d packets after restart, %d before", len(after), len(before))
	}
	for i := range before {
		if after[i].ID() != before[i].ID() {
			t.Fatalf("LogID %d changed across restart", i)
		}
	}
	// Resume a subscription from a LogID.
	ch, err := p2.SubscribeSince(t.Context(), 597)
	if err != nil {
		t.Fatal(err)
	}
	if r := receive(t, ch, 2); r[0].LogID() != 598 || r[1].LogID() != 599 {
		t.Fatalf("SubscribeSince(597) gave %d, %d", r[0].LogID(), r[1].LogID())
	}
	// Live pipelines have no history.
	lid, _ := ms[0].n.CreatePipeline("live", pipes.PipelineOptions{})
	lp, _ := ms[0].n.Pipeline(lid)
	if _, err := lp.PacketWithID(first.ID()); !errors.Is(err, pipes.ErrNotPersistent) {
		t.Fatalf("PacketWithID on a live pipeline: %v", err)
	}
	if _, err := lp.Put([]byte("x"), pipes.WithDestination(ms[1].n.ID())); err != nil {
		t.Fatal(err)
	}
	if _, err := p0.Put([]byte("x"), pipes.WithDestination(ms[1].n.ID())); err == nil {
		t.Fatal("WithDestination on a persistent broadcast pipeline was accepted")
	}
}

// TestOfflineAndNewNodesCatchUp: a node that was offline and a node that
// joins later both get the whole history, and report synchronizing.
func TestOfflineAndNewNodesCatchUp(t *testing.T) {
	ms := cluster(t, "catchup", 3, nil)
	id, err := ms[0].n.CreatePipeline("log", pipes.PipelineOptions{Persistent: true})
	if err != nil {
		t.Fatal(err)
	}
	p0, _ := ms[0].n.Pipeline(id)
	waitPipeline(t, ms[1], id)
	waitPipeline(t, ms[2], id)
	putN(t, p0, 100, "before")
	converged(t, ms, id, 100)

	off := ms[2]
	var mu sync.Mutex
	var updates []bool
	p2, _ := off.n.Pipeline(id)
	p2.AddListener(&pipes.PipelineListenerFuncs{SyncUpdate: func(synced bool, _ *pipes.Pipeline) {
		mu.Lock()
		updates = append(updates, synced)
		mu.Unlock()
	}})
	if err := off.n.Shutdown(); err != nil {
		t.Fatal(err)
	}
	p1, _ := ms[1].n.Pipeline(id)
	putN(t, p0, 3000, "while away 0")
	putN(t, p1, 3000, "while away 1")
	off.start(t)
	late := newMember(t, testNetfileOf(t, ms[0]), "late")
	late.gateway(t, ms[0])
	late.start(t)
	converged(t, append(ms, late), id, 6100)
	eventually(t, 30*time.Second, "sync reported finished", func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(updates) < 2 || updates[0] || !updates[len(updates)-1] {
			return fmt.Errorf("sync updates %v", updates)
		}
		if p2.IsSynchronizing() {
			return errors.New("still synchronizing")
		}
		return nil
	})
}

// TestPartitionHeals: a and b reach each other only through g. With g
// down both write; once g is back all three hold every packet.
func TestPartitionHeals(t *testing.T) {
	netPath := testNetfile(t, "heal")
	one := pipes.WithTargetDegree(1)
	g := newMember(t, netPath, "g", one, pipes.WithListenAddr(loopback(freePort(t)))) // the same address after a restart
	g.start(t)
	a := newMember(t, netPath, "a", one)
	b := newMember(t, netPath, "b", one)
	a.gateway(t, g)
	b.gateway(t, g)
	a.start(t)
	b.start(t)
	all := []*member{a, g, b}
	eventually(t, 30*time.Second, "all see all", allSeeAll(all))
	id, err := a.n.CreatePipeline("doc", pipes.PipelineOptions{Persistent: true})
	if err != nil {
		t.Fatal(err)
	}
	pa, _ := a.n.Pipeline(id)
	pb := waitPipeline(t, b, id)
	waitPipeline(t, g, id)
	putN(t, pa, 10, "shared")
	converged(t, all, id, 10)
	if err := g.n.Shutdown(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "a and b apart", func() error {
		if a.n.IsConnected() || b.n.IsConnected() {
			return errors.New("still connected")
		}
		return nil
	})
	putN(t, pa, 500, "a alone")
	putN(t, pb, 700, "b alone")
	g.start(t)
	converged(t, all, id, 1210)
}

// TestPersistentPointToPointThroughRelay: stored at both ends only,
// synchronised through a relay that sees no plaintext, also after the
// receiver was offline.
func TestPersistentPointToPointThroughRelay(t *testing.T) {
	a, r, b, relayed := relayLine(t, "pp2p")
	id, err := a.n.CreatePipeline("diary", pipes.PipelineOptions{ToNode: b.n.ID(), Persistent: true})
	if err != nil {
		t.Fatal(err)
	}
	pa, _ := a.n.Pipeline(id)
	if pbob := waitPipeline(t, b, id); !pbob.Persistent() || !pbob.IsPointToPoint() {
		t.Fatal("bob's pipeline is not a persistent point-to-point one")
	}
	putN(t, pa, 20, "secret entry")
	converged(t, []*member{a, b}, id, 20)
	if err := b.n.Shutdown(); err != nil {
		t.Fatal(err)
	}
	putN(t, pa, 200, "secret entry while bob is away")
	b.start(t)
	pbob, _ := b.n.Pipeline(id)
	putN(t, pbob, 5, "secret reply")
	converged(t, []*member{a, b}, id, 225)
	for _, p := range r.n.Pipelines() {
		if p.ID() == id {
			t.Fatal("the relay learned of the pipeline")
		}
	}
	forwarded := relayed()
	if len(forwarded) == 0 {
		t.Fatal("nothing went through the relay")
	}
	for _, p := range forwarded {
		if bytes.Contains(p, []byte("secret")) {
			t.Fatal("the relay forwarded plaintext")
		}
	}
}

// TestNoPlaintextAtRest: nothing under the data directory holds packet
// data in clear.
func TestNoPlaintextAtRest(t *testing.T) {
	m, p := solo(t, "rest")
	marker := "a-very-recognisable-plaintext-marker"
	for i := range 200 {
		if _, err := p.Put(fmt.Appendf(nil, "%s %d", marker, i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.p.Close(); err != nil {
		t.Fatal(err)
	}
	found := 0
	filepath.WalkDir(m.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := os.ReadFile(path)
		if bytes.Contains(b, []byte(marker)) {
			t.Errorf("%s holds packet plaintext", path)
		}
		found++
		return nil
	})
	if found == 0 {
		t.Fatal("no files scanned")
	}
}

// TestDiskFullIsAnError: with the disk "full" (a reserve larger than the
// free space) Put fails with ErrDiskFull and logs nothing; the packets
// acknowledged before are all there after a reopen.
func TestDiskFullIsAnError(t *testing.T) {
	m, p := solo(t, "full")
	id := p.ID()
	acked := putN(t, p, 50, "acked")
	pipes.SetDiskReserve(m.p, 1<<62)
	pl := p
	if _, err := pl.Put([]byte("refused")); !errors.Is(err, pipes.ErrDiskFull) {
		t.Fatalf("Put on a full disk: %v", err)
	}
	if got := pl.Stats().Logged; got != 50 {
		t.Fatalf("%d packets logged after the refused Put, want 50", got)
	}
	m.p.Close()
	m.open(t)
	m.start(t)
	pl, _ = m.n.Pipeline(id)
	hist := history(t, pl)
	if len(hist) != 50 {
		t.Fatalf("%d packets after reopen, want 50", len(hist))
	}
	for i, id := range acked {
		if hist[i].ID() != id {
			t.Fatalf("acknowledged packet %d lost or moved", i)
		}
	}
	if _, err := pl.Put([]byte("accepted again")); err != nil {
		t.Fatal(err)
	}
}

// TestCatchUpDrawsOnSeveralPeers: a node that was away catches up a long
// history of one sender with three peers that have it.
func TestCatchUpDrawsOnSeveralPeers(t *testing.T) {
	ms := cluster(t, "parallel", 4, nil)
	id, err := ms[0].n.CreatePipeline("big", pipes.PipelineOptions{Persistent: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms[1:] {
		waitPipeline(t, m, id)
	}
	late := ms[3]
	eventually(t, 30*time.Second, "the late node has every other node as a peer", func() error {
		if n := len(late.n.ConnectedPeers()); n != 3 {
			return fmt.Errorf("%d peers", n)
		}
		return nil
	})
	if err := late.n.Shutdown(); err != nil {
		t.Fatal(err)
	}
	p0, _ := ms[0].n.Pipeline(id)
	const n = 20000 // five chunks of sync requests
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 16 {
				if _, err := p0.Put([]byte{byte(i), byte(i >> 8)}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	converged(t, ms[:3], id, n)
	late.start(t)
	converged(t, ms, id, n)
	// How the requests spread depends on when the peers' offers arrive;
	// TestScheduleSpreadsOverPeers (internal/pipeline) checks the spread
	// deterministically.
	pl, _ := late.n.Pipeline(id)
	t.Logf("sync requests per peer: %v", pipes.SyncSources(pl))
}

// TestPointToPointCreatedWhileOtherIsAway: the other node learns of a
// persistent point-to-point pipeline, and gets its packets, when it comes
// back online.
func TestPointToPointCreatedWhileOtherIsAway(t *testing.T) {
	ms := cluster(t, "away", 2, nil)
	a, b := ms[0], ms[1]
	bid := b.n.ID()
	if err := b.n.Shutdown(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "b is seen offline", func() error {
		if len(a.n.ConnectedNodes()) != 0 {
			return errors.New("b still online")
		}
		return nil
	})
	id, err := a.n.CreatePipeline("letters", pipes.PipelineOptions{ToNode: bid, Persistent: true})
	if err != nil {
		t.Fatalf("creating a persistent pipeline with an offline node: %v", err)
	}
	pa, err := a.n.Pipeline(id)
	if err != nil {
		t.Fatal(err)
	}
	putN(t, pa, 30, "letter")
	b.start(t)
	waitPipeline(t, b, id)
	converged(t, ms, id, 30)
}

// TestLargePacketsFitFrames: concurrent Puts of 1 MiB packets are logged
// in one commit but signed in batches that fit a frame, so they reach the
// other node live and by sync without breaking the connection.
func TestLargePacketsFitFrames(t *testing.T) {
	ms := cluster(t, "large", 2, nil)
	id, err := ms[0].n.CreatePipeline("files", pipes.PipelineOptions{Persistent: true})
	if err != nil {
		t.Fatal(err)
	}
	waitPipeline(t, ms[1], id)
	p0, _ := ms[0].n.Pipeline(id)
	big := bytes.Repeat([]byte{7}, pipes.MaxPacketSize)
	var wg sync.WaitGroup
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 2 {
				if _, err := p0.Put(big); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	converged(t, ms, id, 12)
	if n := ms[0].n.Stats().Conns; n != 1 {
		t.Fatalf("%d connections: the link broke", n)
	}
}

// TestCorruptStoreIsReportedOnOpen: a damaged database is refused on Open
// with ErrStore and a message that names the directory.
func TestCorruptStoreIsReportedOnOpen(t *testing.T) {
	m, p := solo(t, "damage")
	putN(t, p, 10, "note")
	if err := m.p.Close(); err != nil {
		t.Fatal(err)
	}
	manifests, _ := filepath.Glob(filepath.Join(m.dir, "db", "MANIFEST-*"))
	if len(manifests) == 0 {
		t.Fatal("no manifest")
	}
	for _, f := range manifests {
		b, _ := os.ReadFile(f)
		for i := range b {
			b[i] ^= 0x5a
		}
		os.WriteFile(f, b, 0o600)
	}
	_, err := pipes.Open(m.dir, pipes.WithTestMode(true), pipes.WithLogger(testLogger(t)))
	if !errors.Is(err, pipes.ErrStore) || !strings.Contains(err.Error(), m.dir) {
		t.Fatalf("Open of a damaged store: %v", err)
	}
}

// TestPutContext: PutContext gives up with the context's error, and works
// like Put otherwise.
func TestPutContext(t *testing.T) {
	_, p := solo(t, "putctx")
	if _, err := p.PutContext(t.Context(), []byte("kept")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := p.PutContext(ctx, []byte("given up")); !errors.Is(err, context.Canceled) {
		t.Fatalf("PutContext with an ended context: %v", err)
	}
}

// TestPersistentListenerResumesAfterRestart: a slow listener that was cut
// off by Shutdown gets the rest of the packets, in order and once, after
// Start.
func TestPersistentListenerResumesAfterRestart(t *testing.T) {
	m, p := solo(t, "resume")
	var mu sync.Mutex
	var got []int64
	p.AddListener(&pipes.PipelineListenerFuncs{Packet: func(pk *pipes.Packet, _ *pipes.Pipeline) {
		time.Sleep(2 * time.Millisecond) // a slow consumer
		mu.Lock()
		got = append(got, pk.LogID())
		mu.Unlock()
	}})
	putN(t, p, 200, "note")
	if err := m.n.Shutdown(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	cut := len(got)
	mu.Unlock()
	m.start(t)
	eventually(t, 30*time.Second, "the listener has every packet", func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(got) < 200 {
			return fmt.Errorf("%d of 200", len(got))
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	for i, id := range got {
		if id != int64(i) {
			t.Fatalf("packet %d has LogID %d (cut off after %d)", i, id, cut)
		}
	}
	if len(got) != 200 {
		t.Fatalf("%d packets handled, want 200", len(got))
	}
}

// solo starts a node alone on a network of its own, with a persistent
// pipeline "notes".
func solo(t *testing.T, network string) (*member, *pipes.Pipeline) {
	t.Helper()
	m := newMember(t, testNetfile(t, network), "solo")
	m.start(t)
	id, err := m.n.CreatePipeline("notes", pipes.PipelineOptions{Persistent: true})
	if err != nil {
		t.Fatal(err)
	}
	p, err := m.n.Pipeline(id)
	if err != nil {
		t.Fatal(err)
	}
	return m, p
}
