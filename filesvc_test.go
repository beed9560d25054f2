package pipes_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pipesnet/pipes"
	"github.com/pipesnet/pipes/internal/files"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/testnet"
)

// The file service's tests: real nodes on 127.0.0.1.

const testChunk = 256 << 10 // the chunk size of files under 4 GiB

func content(n int, seed uint64) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(seed), 7}).Read(b)
	return b
}

// readFile reads the whole of file id on n.
func readFile(t *testing.T, n *pipes.Node, id pipes.FileID) []byte {
	t.Helper()
	r, err := n.Files().Open(id)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// holders waits until n's Stat of id lists exactly want as holders.
func waitHolders(t *testing.T, n *pipes.Node, id pipes.FileID, want ...*testnet.Member) {
	t.Helper()
	var ws []pipes.NodeID
	for _, m := range want {
		ws = append(ws, m.N.ID())
	}
	slices.SortFunc(ws, func(a, b pipes.NodeID) int { return bytes.Compare(a[:], b[:]) })
	testnet.Eventually(t, 30*time.Second, "the holders are announced", func() error {
		st, err := n.Files().Stat(context.Background(), id)
		if len(ws) == 0 && errors.Is(err, pipes.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if !slices.Equal(st.Holders, ws) {
			return fmt.Errorf("holders %v, want %v", st.Holders, ws)
		}
		return nil
	})
}

// TestFileAddStat: the same content gives the same id on two nodes; a
// third learns both holders from their announcements and gets the name
// and size from one; bad input gets clear errors.
func TestFileAddStat(t *testing.T) {
	ms := cluster(t, "fadd", 3, nil)
	a, b, c := ms[0], ms[1], ms[2]
	ctx := context.Background()
	data := content(3*testChunk+12345, 1)

	ida, err := a.N.Files().AddReader(ctx, "report.bin", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "copy.bin")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	idb, err := b.N.Files().Add(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if ida != idb {
		t.Fatalf("the same content has ids %s and %s", ida, idb)
	}
	if p, err := pipes.ParseFileID(ida.String()); err != nil || p != ida {
		t.Fatalf("ParseFileID(String()) = %s, %v", p, err)
	}
	if _, err := pipes.ParseFileID("abc"); !errors.Is(err, pipes.ErrInvalidID) {
		t.Fatalf("ParseFileID(abc): %v", err)
	}

	waitHolders(t, c.N, ida, a, b)
	st, err := c.N.Files().Stat(ctx, ida)
	if err != nil {
		t.Fatal(err)
	}
	if st.Name != "report.bin" && st.Name != "copy.bin" || st.Size != int64(len(data)) || st.Local {
		t.Fatalf("Stat on the third node: %+v", st)
	}
	if l := a.N.Files().List(); len(l) != 1 || l[0].ID != ida || !l[0].Local || l[0].Name != "report.bin" {
		t.Fatalf("List: %+v", l)
	}
	if got := readFile(t, b.N, idb); !bytes.Equal(got, data) {
		t.Fatal("the holder reads other content")
	}
	// Adding the same content again on a holder is no error, and the
	// index keeps one entry.
	if id, err := a.N.Files().AddReader(ctx, "again.bin", bytes.NewReader(data)); err != nil || id != ida {
		t.Fatalf("adding again: %s %v", id, err)
	}

	// Bad input.
	if _, err := a.N.Files().Add(ctx, t.TempDir()); !errors.Is(err, pipes.ErrIsDir) {
		t.Errorf("Add of a directory: %v", err)
	}
	if _, err := a.N.Files().Add(ctx, filepath.Join(t.TempDir(), "nothing")); !errors.Is(err, pipes.ErrNotFound) {
		t.Errorf("Add of a missing file: %v", err)
	}
	unknown := pipes.FileID{1, 2, 3}
	if _, err := c.N.Files().Stat(ctx, unknown); !errors.Is(err, pipes.ErrNotFound) {
		t.Errorf("Stat of an unknown id: %v", err)
	}
	if err := c.N.Files().Fetch(ctx, unknown, nil); !errors.Is(err, pipes.ErrNotFound) {
		t.Errorf("Fetch of an unknown id: %v", err)
	}
	if _, err := c.N.Files().Open(ida); !errors.Is(err, pipes.ErrNotFound) {
		t.Errorf("Open before a fetch: %v", err)
	}
	if err := c.N.Files().Remove(ctx, ida); !errors.Is(err, pipes.ErrNotFound) {
		t.Errorf("Remove of a file not here: %v", err)
	}
	if _, err := a.N.Listen(files.ServiceName); err == nil {
		t.Error("a user listener took the file service's name")
	}
	if len(a.N.Files().List()) != 1 {
		t.Errorf("bad input changed the list: %+v", a.N.Files().List())
	}
}

// gate makes each of two holders, after its first chunk, wait until the
// other has served one: both serve, whatever their speed.
type gate struct {
	first [2]chan struct{}
	once  [2]sync.Once
	count [2]atomic.Int64
}

func newGate() *gate { return &gate{first: [2]chan struct{}{make(chan struct{}), make(chan struct{})}} }

func (g *gate) hook(k int) func(int) {
	return func(int) {
		if g.count[k].Add(1) == 1 {
			g.once[k].Do(func() { close(g.first[k]) })
			return
		}
		select {
		case <-g.first[1-k]:
		case <-time.After(30 * time.Second): // the test fails below rather than hangs
		}
	}
}

// TestFileFetchTwoHolders: a fetch takes chunks from both holders at
// once, verifies the content, and makes the fetcher a holder; Remove
// undoes it. No goroutine outlives the nodes.
func TestFileFetchTwoHolders(t *testing.T) {
	before := goleak.IgnoreCurrent()
	ms := cluster(t, "ftwo", 3, nil)
	a, b, c := ms[0], ms[1], ms[2]
	ctx := context.Background()
	data := content(24*testChunk+99, 2)
	id, err := a.N.Files().AddReader(ctx, "two.bin", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.N.Files().AddReader(ctx, "two.bin", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	g := newGate()
	pipes.FileService(a.N).SetHooks(files.Hooks{ServeChunk: g.hook(0)})
	pipes.FileService(b.N).SetHooks(files.Hooks{ServeChunk: g.hook(1)})
	waitHolders(t, c.N, id, a, b)

	var last, total atomic.Int64
	if err := c.N.Files().Fetch(ctx, id, func(done, tot int64) { last.Store(done); total.Store(tot) }); err != nil {
		t.Fatal(err)
	}
	sa, sb := pipes.FileService(a.N).Stats().Served, pipes.FileService(b.N).Stats().Served
	if sa == 0 || sb == 0 {
		t.Fatalf("chunks served: %d by one holder, %d by the other; want both", sa, sb)
	}
	if last.Load() != int64(len(data)) || total.Load() != int64(len(data)) {
		t.Fatalf("last progress %d of %d, want %d", last.Load(), total.Load(), len(data))
	}
	if got := readFile(t, c.N, id); !bytes.Equal(got, data) {
		t.Fatal("the fetched content differs")
	}
	st, err := c.N.Files().Stat(ctx, id)
	if err != nil || !st.Local || st.Name != "two.bin" {
		t.Fatalf("Stat after the fetch: %+v %v", st, err)
	}
	waitHolders(t, a.N, id, a, b, c)

	// Seek and read a range.
	r, err := c.N.Files().Open(id)
	if err != nil {
		t.Fatal(err)
	}
	off := int64(5*testChunk - 10)
	if _, err := r.Seek(off, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	part := make([]byte, 100)
	if _, err := io.ReadFull(r, part); err != nil || !bytes.Equal(part, data[off:off+100]) {
		t.Fatalf("range read: %v", err)
	}
	r.Close()

	if err := c.N.Files().Remove(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := c.N.Files().Open(id); !errors.Is(err, pipes.ErrNotFound) {
		t.Fatalf("Open after Remove: %v", err)
	}
	if len(c.N.Files().List()) != 0 {
		t.Fatalf("List after Remove: %+v", c.N.Files().List())
	}
	waitHolders(t, a.N, id, a, b)

	for _, m := range ms {
		if err := m.N.Shutdown(); err != nil {
			t.Fatal(err)
		}
		m.P.Close()
	}
	goleak.VerifyNone(t, before)
}

// TestFileCorruptHolder: a holder that serves corrupt chunks is dropped;
// the fetch completes from the other and the content verifies.
func TestFileCorruptHolder(t *testing.T) {
	ms := cluster(t, "fbad", 3, nil)
	bad, good, c := ms[0], ms[1], ms[2]
	ctx := context.Background()
	data := content(16*testChunk+7, 3)
	id, err := bad.N.Files().AddReader(ctx, "f", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := good.N.Files().AddReader(ctx, "f", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	dropped := make(chan struct{})
	var once sync.Once
	var droppedNode atomic.Value
	pipes.FileService(bad.N).SetHooks(files.Hooks{Corrupt: true})
	// The good holder serves only once the bad one was dropped, so the
	// bad one is asked for chunks whatever the holders' speeds.
	pipes.FileService(good.N).SetHooks(files.Hooks{ServeChunk: func(int) {
		select {
		case <-dropped:
		case <-time.After(30 * time.Second):
		}
	}})
	pipes.FileService(c.N).SetHooks(files.Hooks{Dropped: func(h ids.Node) {
		droppedNode.Store(pipes.NodeID(h))
		once.Do(func() { close(dropped) })
	}})
	waitHolders(t, c.N, id, bad, good)
	if err := c.N.Files().Fetch(ctx, id, nil); err != nil {
		t.Fatal(err)
	}
	st := pipes.FileService(c.N).Stats()
	if st.Dropped != 1 || st.BadChunks == 0 {
		t.Fatalf("fetcher's stats %+v: want one holder dropped for bad chunks", st)
	}
	if droppedNode.Load() != bad.N.ID() {
		t.Fatalf("dropped %v, not the corrupt holder", droppedNode.Load())
	}
	if got := readFile(t, c.N, id); !bytes.Equal(got, data) {
		t.Fatal("the fetched content differs")
	}
}

// TestFileResume: a fetch cancelled midway leaves the chunks it stored;
// the next one asks only for the others. Reading a part not fetched fails
// with ErrIncomplete when no fetch runs, and waits for it while one does.
func TestFileResume(t *testing.T) {
	ms := cluster(t, "fres", 2, nil)
	a, c := ms[0], ms[1]
	ctx := context.Background()
	const chunks = 20
	data := content(chunks*testChunk, 4)
	id, err := a.N.Files().AddReader(ctx, "r", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	// The holder serves 6 chunks, then waits until the first fetch is
	// over.
	release := make(chan struct{})
	var served atomic.Int64
	pipes.FileService(a.N).SetHooks(files.Hooks{ServeChunk: func(int) {
		if served.Add(1) > 6 {
			select {
			case <-release:
			case <-time.After(30 * time.Second):
			}
		}
	}})
	waitHolders(t, c.N, id, a)

	fctx, cancel := context.WithCancel(ctx)
	err = c.N.Files().Fetch(fctx, id, func(done, total int64) {
		if done >= 3*testChunk {
			cancel()
		}
	})
	close(release)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled fetch: %v", err)
	}
	present := pipes.FilePresent(c.N, id)
	if len(present) < 3 || len(present) == chunks {
		t.Fatalf("%d chunks present after the cancelled fetch, want some but not all", len(present))
	}
	// Open before the end: the chunks present read, the others fail.
	r, err := c.N.Files().Open(id)
	if err != nil {
		t.Fatal(err)
	}
	missing := -1
	for i := range chunks {
		if !slices.Contains(present, i) {
			missing = i
			break
		}
	}
	if _, err := r.Seek(int64(missing)*testChunk, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Read(make([]byte, 10)); !errors.Is(err, pipes.ErrIncomplete) {
		t.Fatalf("read of a chunk not here: %v", err)
	}
	r.Close()

	var mu sync.Mutex
	var asked []int
	pipes.FileService(c.N).SetHooks(files.Hooks{Requested: func(_ ids.Node, i int) {
		mu.Lock()
		asked = append(asked, i)
		mu.Unlock()
	}})
	// The second fetch: the holder waits before its first chunk until a
	// read of a missing chunk was started; that read waits for the chunk
	// while the fetch runs, and gets it.
	entered, release2 := make(chan struct{}), make(chan struct{})
	var enteredOnce sync.Once
	pipes.FileService(a.N).SetHooks(files.Hooks{ServeChunk: func(int) {
		enteredOnce.Do(func() { close(entered) })
		select {
		case <-release2:
		case <-time.After(30 * time.Second):
		}
	}})
	fetched := make(chan error, 1)
	go func() { fetched <- c.N.Files().Fetch(ctx, id, nil) }()
	<-entered
	r, err = c.N.Files().Open(id)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Seek(int64(missing)*testChunk, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	read := make(chan error, 1)
	part := make([]byte, 10)
	go func() { _, err := io.ReadFull(r, part); read <- err }()
	close(release2)
	if err := <-read; err != nil || !bytes.Equal(part, data[missing*testChunk:missing*testChunk+10]) {
		t.Fatalf("read of a chunk during the fetch: %v", err)
	}
	if err := <-fetched; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, i := range asked {
		if slices.Contains(present, i) {
			t.Errorf("chunk %d was present and asked for again", i)
		}
	}
	if len(asked) < chunks-len(present) {
		t.Errorf("asked for %d chunks, %d were missing", len(asked), chunks-len(present))
	}
	if got := readFile(t, c.N, id); !bytes.Equal(got, data) {
		t.Fatal("the resumed content differs")
	}
}
