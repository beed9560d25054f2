package pipes_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pipesnet/pipes"
	"github.com/pipesnet/pipes/internal/blob"
	"github.com/pipesnet/pipes/internal/files"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/testnet"
)

// TestFilePacketTwoHolders: a file packet's content is fetched from two
// holders at once, its sender and a member that has it already. c sees
// both online when the packet comes; its requests are held until b has
// the whole file (c's Requested hook runs before the request is sent),
// and then each holder, after its first chunk, waits for the other to
// serve one: both serve c, whatever their speed.
func TestFilePacketTwoHolders(t *testing.T) {
	ms := cluster(t, "fp2", 3, nil)
	a, b, c := ms[0], ms[1], ms[2]
	path, sum := writeRandomFile(t, 24*testChunk+777, 4)
	id, err := a.N.CreatePipeline("two", pipes.PipelineOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pa, _ := a.N.Pipeline(id)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	chb := b.WaitPipeline(t, id).Subscribe(ctx)
	chc := c.WaitPipeline(t, id).Subscribe(ctx)

	release := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(release) }) }
	defer open()
	var mu sync.Mutex
	asked := map[ids.Node]int{}
	pipes.FileService(c.N).SetHooks(files.Hooks{Requested: func(h ids.Node, _ int) {
		select {
		case <-release:
		case <-time.After(60 * time.Second): // the test fails below rather than hangs
		}
		mu.Lock()
		asked[h]++
		mu.Unlock()
	}})

	if _, err := pa.PutFile(path); err != nil {
		t.Fatal(err)
	}
	pkb := testnet.Receive(t, chb, 1)[0]
	pkc := testnet.Receive(t, chc, 1)[0]
	testnet.Eventually(t, 60*time.Second, "b has the whole file", func() error {
		if pipes.FileComplete(b.N, pkb) {
			return nil
		}
		return errors.New("not yet")
	})
	if have, _ := pipes.FileProgress(c.N, pkc); have != 0 {
		t.Fatalf("c has %d chunks before its requests were let go", have)
	}
	servedA := pipes.FileService(a.N).Stats().Served
	g := newGate()
	pipes.FileService(a.N).SetHooks(files.Hooks{ServeChunk: g.hook(0)})
	pipes.FileService(b.N).SetHooks(files.Hooks{ServeChunk: g.hook(1)})
	open()

	out := filepath.Join(t.TempDir(), "out.bin")
	if err := pkc.WriteDataToPath(out); err != nil {
		t.Fatal(err)
	}
	if fileSum(t, out) != sum {
		t.Fatal("the file fetched from two holders differs")
	}
	fromA := pipes.FileService(a.N).Stats().Served - servedA
	fromB := pipes.FileService(b.N).Stats().Served
	if fromA == 0 || fromB == 0 {
		t.Fatalf("chunks served to c: %d by the sender, %d by the other member; want both", fromA, fromB)
	}
	mu.Lock()
	defer mu.Unlock()
	if asked[ids.Node(a.N.ID())] == 0 || asked[ids.Node(b.N.ID())] == 0 {
		t.Fatalf("c asked the sender for %d chunks, the member for %d; want both", asked[ids.Node(a.N.ID())], asked[ids.Node(b.N.ID())])
	}
}

// TestFilePacketPointToPointRefused: the chunks of a file packet of a
// point-to-point pipeline go to its other node only; a third node that
// asks its sender for them (it learnt the manifest) gets none, while the
// same request for a broadcast pipeline's file is served.
func TestFilePacketPointToPointRefused(t *testing.T) {
	ms := cluster(t, "fpp", 3, nil)
	a, b, c := ms[0], ms[1], ms[2]
	path, sum := writeRandomFile(t, 3*testChunk+5, 5)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	id, err := a.N.CreatePipeline("private", pipes.PipelineOptions{ToNode: b.N.ID()})
	if err != nil {
		t.Fatal(err)
	}
	pa, _ := a.N.Pipeline(id)
	chb := b.WaitPipeline(t, id).Subscribe(ctx)
	if _, err := pa.PutFile(path); err != nil {
		t.Fatal(err)
	}
	pkb := testnet.Receive(t, chb, 1)[0]
	out := filepath.Join(t.TempDir(), "b.bin")
	if err := pkb.WriteDataToPath(out); err != nil {
		t.Fatal(err)
	}
	if fileSum(t, out) != sum {
		t.Fatal("the other node's copy differs")
	}
	m, err := blob.ParseManifest(pipes.FileManifest(pkb))
	if err != nil {
		t.Fatal(err)
	}
	served := pipes.FileService(a.N).Stats().Served
	fc := pipes.FileService(c.N)
	err = fc.FetchBlob(ctx, m, []ids.Node{ids.Node(a.N.ID()), ids.Node(b.N.ID())}, nil)
	if !errors.Is(err, files.ErrNoSource) {
		t.Fatalf("a stranger's fetch of a point-to-point file: %v, want ErrNoSource", err)
	}
	if n := pipes.FileService(a.N).Stats().Served - served; n != 0 {
		t.Fatalf("the sender served %d chunks to a node not of the pipeline", n)
	}
	if n := pipes.FileService(b.N).Stats().Served; n != 0 {
		t.Fatalf("the other node served %d chunks to a node not of the pipeline", n)
	}

	// The same request for a file of a broadcast pipeline is served.
	bid, err := a.N.CreatePipeline("public", pipes.PipelineOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pba, _ := a.N.Pipeline(bid)
	chc := c.WaitPipeline(t, bid).Subscribe(ctx)
	if _, err := pba.PutFile(path); err != nil {
		t.Fatal(err)
	}
	pkc := testnet.Receive(t, chc, 1)[0]
	mb, err := blob.ParseManifest(pipes.FileManifest(pkc))
	if err != nil {
		t.Fatal(err)
	}
	if err := fc.FetchBlob(ctx, mb, []ids.Node{ids.Node(a.N.ID())}, nil); err != nil {
		t.Fatalf("fetch of a broadcast pipeline's file: %v", err)
	}
}
