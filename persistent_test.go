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
	"github.com/pipesnet/pipes/internal/testnet"
)

func TestPersistentPipelineLogAndRestart(t *testing.T) {
	ms := cluster(t, "persist", 3, nil)
	id, err := ms[0].N.CreatePipeline("history", pipes.PipelineOptions{Persistent: true})
	if err != nil {
		t.Fatal(err)
	}
	p0, _ := ms[0].N.Pipeline(id)
	p1 := ms[1].WaitPipeline(t, id)
	ms[2].WaitPipeline(t, id)
	if !p0.Persistent() || p0.Live() {
		t.Fatal("not persistent")
	}
	// A slow subscriber on node 2 that reads nothing until the end.
	p2, _ := ms[2].N.Pipeline(id)
	slow := p2.Subscribe(t.Context())
	var wg sync.WaitGroup
	for i, p := range []*pipes.Pipeline{p0, p1} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			testnet.PutN(t, p, 300, fmt.Sprintf("node %d", i))
		}()
	}
	wg.Wait()
	testnet.Converged(t, ms, id, 600)
	got := testnet.Receive(t, slow, 600)
	for i, pk := range got {
		if pk.LogID() != int64(i) {
			t.Fatalf("subscription: LogID %d at %d", pk.LogID(), i)
		}
	}
	// PacketWithID, and the packet's fields.
	first := testnet.History(t, p2)[0]
	pk, err := p2.PacketWithID(first.ID())
	if err != nil || pk.Type() != 3 || pk.LogID() != 0 {
		t.Fatalf("PacketWithID: %v %v", pk, err)
	}
	if _, err := p2.PacketWithID(pipes.PacketID{1}); !errors.Is(err, pipes.ErrNotFound) {
		t.Fatalf("PacketWithID of nothing: %v", err)
	}
	// Restart node 2 with its platform: same log, same LogIDs.
	before := testnet.History(t, p2)
	m := ms[2]
	if err := m.P.Close(); err != nil {
		t.Fatal(err)
	}
	m.Open(t)
	m.Start(t)
	p2, err = m.N.Pipeline(id)
	if err != nil {
		t.Fatalf("pipeline not known after restart: %v", err)
	}
	after := testnet.History(t, p2)
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
	if r := testnet.Receive(t, ch, 2); r[0].LogID() != 598 || r[1].LogID() != 599 {
		t.Fatalf("SubscribeSince(597) gave %d, %d", r[0].LogID(), r[1].LogID())
	}
	// Live pipelines have no history.
	lid, _ := ms[0].N.CreatePipeline("live", pipes.PipelineOptions{})
	lp, _ := ms[0].N.Pipeline(lid)
	if _, err := lp.PacketWithID(first.ID()); !errors.Is(err, pipes.ErrNotPersistent) {
		t.Fatalf("PacketWithID on a live pipeline: %v", err)
	}
	if _, err := lp.Put([]byte("x"), pipes.WithDestination(ms[1].N.ID())); err != nil {
		t.Fatal(err)
	}
	if _, err := p0.Put([]byte("x"), pipes.WithDestination(ms[1].N.ID())); err == nil {
		t.Fatal("WithDestination on a persistent broadcast pipeline was accepted")
	}
}

// TestOfflineAndNewNodesCatchUp: a node that was offline and a node that
// joins later both get the whole history, and report synchronizing.
func TestOfflineAndNewNodesCatchUp(t *testing.T) {
	ms := cluster(t, "catchup", 3, nil)
	id, err := ms[0].N.CreatePipeline("log", pipes.PipelineOptions{Persistent: true})
	if err != nil {
		t.Fatal(err)
	}
	p0, _ := ms[0].N.Pipeline(id)
	ms[1].WaitPipeline(t, id)
	ms[2].WaitPipeline(t, id)
	testnet.PutN(t, p0, 100, "before")
	testnet.Converged(t, ms, id, 100)

	off := ms[2]
	var mu sync.Mutex
	var updates []bool
	p2, _ := off.N.Pipeline(id)
	p2.AddListener(&pipes.PipelineListenerFuncs{SyncUpdate: func(synced bool, _ *pipes.Pipeline) {
		mu.Lock()
		updates = append(updates, synced)
		mu.Unlock()
	}})
	if err := off.N.Shutdown(); err != nil {
		t.Fatal(err)
	}
	p1, _ := ms[1].N.Pipeline(id)
	testnet.PutN(t, p0, 3000, "while away 0")
	testnet.PutN(t, p1, 3000, "while away 1")
	off.Start(t)
	late := testnet.NewMember(t, ms[0].Net, "late")
	late.Gateway(t, ms[0])
	late.Start(t)
	testnet.Converged(t, append(ms, late), id, 6100)
	testnet.Eventually(t, 30*time.Second, "sync reported finished", func() error {
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
	netPath := testnet.Netfile(t, "heal")
	one := pipes.WithTargetDegree(1)
	g := testnet.NewMember(t, netPath, "g", one, pipes.WithListenAddr(loopback(testnet.FreePort(t)))) // the same address after a restart
	g.Start(t)
	a := testnet.NewMember(t, netPath, "a", one)
	b := testnet.NewMember(t, netPath, "b", one)
	a.Gateway(t, g)
	b.Gateway(t, g)
	a.Start(t)
	b.Start(t)
	all := []*testnet.Member{a, g, b}
	testnet.Eventually(t, 30*time.Second, "all see all", testnet.AllSeeAll(all))
	id, err := a.N.CreatePipeline("doc", pipes.PipelineOptions{Persistent: true})
	if err != nil {
		t.Fatal(err)
	}
	pa, _ := a.N.Pipeline(id)
	pb := b.WaitPipeline(t, id)
	g.WaitPipeline(t, id)
	testnet.PutN(t, pa, 10, "shared")
	testnet.Converged(t, all, id, 10)
	if err := g.N.Shutdown(); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 30*time.Second, "a and b apart", func() error {
		if a.N.IsConnected() || b.N.IsConnected() {
			return errors.New("still connected")
		}
		return nil
	})
	testnet.PutN(t, pa, 500, "a alone")
	testnet.PutN(t, pb, 700, "b alone")
	g.Start(t)
	testnet.Converged(t, all, id, 1210)
}

// TestPersistentPointToPointThroughRelay: stored at both ends only,
// synchronised through a relay that sees no plaintext, also after the
// receiver was offline.
func TestPersistentPointToPointThroughRelay(t *testing.T) {
	a, r, b, relayed := relayLine(t, "pp2p")
	id, err := a.N.CreatePipeline("diary", pipes.PipelineOptions{ToNode: b.N.ID(), Persistent: true})
	if err != nil {
		t.Fatal(err)
	}
	pa, _ := a.N.Pipeline(id)
	if pbob := b.WaitPipeline(t, id); !pbob.Persistent() || !pbob.IsPointToPoint() {
		t.Fatal("bob's pipeline is not a persistent point-to-point one")
	}
	testnet.PutN(t, pa, 20, "secret entry")
	testnet.Converged(t, []*testnet.Member{a, b}, id, 20)
	if err := b.N.Shutdown(); err != nil {
		t.Fatal(err)
	}
	testnet.PutN(t, pa, 200, "secret entry while bob is away")
	b.Start(t)
	pbob, _ := b.N.Pipeline(id)
	testnet.PutN(t, pbob, 5, "secret reply")
	testnet.Converged(t, []*testnet.Member{a, b}, id, 225)
	for _, p := range r.N.Pipelines() {
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
	if err := m.P.Close(); err != nil {
		t.Fatal(err)
	}
	found := 0
	filepath.WalkDir(m.Dir, func(path string, d fs.DirEntry, err error) error {
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
	acked := testnet.PutN(t, p, 50, "acked")
	pipes.SetDiskReserve(m.P, 1<<62)
	pl := p
	if _, err := pl.Put([]byte("refused")); !errors.Is(err, pipes.ErrDiskFull) {
		t.Fatalf("Put on a full disk: %v", err)
	}
	if got := pl.Stats().Logged; got != 50 {
		t.Fatalf("%d packets logged after the refused Put, want 50", got)
	}
	m.P.Close()
	m.Open(t)
	m.Start(t)
	pl, _ = m.N.Pipeline(id)
	hist := testnet.History(t, pl)
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
	id, err := ms[0].N.CreatePipeline("big", pipes.PipelineOptions{Persistent: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms[1:] {
		m.WaitPipeline(t, id)
	}
	late := ms[3]
	testnet.Eventually(t, 30*time.Second, "the late node has every other node as a peer", func() error {
		if n := len(late.N.ConnectedPeers()); n != 3 {
			return fmt.Errorf("%d peers", n)
		}
		return nil
	})
	if err := late.N.Shutdown(); err != nil {
		t.Fatal(err)
	}
	p0, _ := ms[0].N.Pipeline(id)
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
	testnet.Converged(t, ms[:3], id, n)
	late.Start(t)
	testnet.Converged(t, ms, id, n)
	// How the requests spread depends on when the peers' offers arrive;
	// TestScheduleSpreadsOverPeers (internal/pipeline) checks the spread
	// deterministically.
	pl, _ := late.N.Pipeline(id)
	t.Logf("sync requests per peer: %v", pipes.SyncSources(pl))
}

// TestPointToPointCreatedWhileOtherIsAway: the other node learns of a
// persistent point-to-point pipeline, and gets its packets, when it comes
// back online.
func TestPointToPointCreatedWhileOtherIsAway(t *testing.T) {
	ms := cluster(t, "away", 2, nil)
	a, b := ms[0], ms[1]
	bid := b.N.ID()
	if err := b.N.Shutdown(); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 30*time.Second, "b is seen offline", func() error {
		if len(a.N.ConnectedNodes()) != 0 {
			return errors.New("b still online")
		}
		return nil
	})
	id, err := a.N.CreatePipeline("letters", pipes.PipelineOptions{ToNode: bid, Persistent: true})
	if err != nil {
		t.Fatalf("creating a persistent pipeline with an offline node: %v", err)
	}
	pa, err := a.N.Pipeline(id)
	if err != nil {
		t.Fatal(err)
	}
	testnet.PutN(t, pa, 30, "letter")
	b.Start(t)
	b.WaitPipeline(t, id)
	testnet.Converged(t, ms, id, 30)
}

// TestLargePacketsFitFrames: concurrent Puts of 1 MiB packets are logged
// in one commit but signed in batches that fit a frame, so they reach the
// other node live and by sync without breaking the connection.
func TestLargePacketsFitFrames(t *testing.T) {
	ms := cluster(t, "large", 2, nil)
	id, err := ms[0].N.CreatePipeline("files", pipes.PipelineOptions{Persistent: true})
	if err != nil {
		t.Fatal(err)
	}
	ms[1].WaitPipeline(t, id)
	p0, _ := ms[0].N.Pipeline(id)
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
	testnet.Converged(t, ms, id, 12)
	if n := ms[0].N.Stats().Conns; n != 1 {
		t.Fatalf("%d connections: the link broke", n)
	}
}

// TestCorruptStoreIsReportedOnOpen: a damaged database is refused on Open
// with ErrStore and a message that names the directory.
func TestCorruptStoreIsReportedOnOpen(t *testing.T) {
	m, p := solo(t, "damage")
	testnet.PutN(t, p, 10, "note")
	if err := m.P.Close(); err != nil {
		t.Fatal(err)
	}
	manifests, _ := filepath.Glob(filepath.Join(m.Dir, "db", "MANIFEST-*"))
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
	_, err := pipes.Open(m.Dir, pipes.WithTestMode(true), pipes.WithLogger(testnet.Logger(t)))
	if !errors.Is(err, pipes.ErrStore) || !strings.Contains(err.Error(), m.Dir) {
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
	testnet.PutN(t, p, 200, "note")
	if err := m.N.Shutdown(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	cut := len(got)
	mu.Unlock()
	m.Start(t)
	testnet.Eventually(t, 30*time.Second, "the listener has every packet", func() error {
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
func solo(t *testing.T, network string) (*testnet.Member, *pipes.Pipeline) {
	t.Helper()
	m := testnet.NewMember(t, testnet.Netfile(t, network), "solo")
	m.Start(t)
	id, err := m.N.CreatePipeline("notes", pipes.PipelineOptions{Persistent: true})
	if err != nil {
		t.Fatal(err)
	}
	p, err := m.N.Pipeline(id)
	if err != nil {
		t.Fatal(err)
	}
	return m, p
}
