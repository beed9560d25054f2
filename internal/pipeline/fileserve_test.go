package pipeline

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/pipesnet/pipes/internal/blob"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/testutil"
)

// TestFileServeRule: the engine lets the file transfer serve a file's
// chunks to any asker when a packet of a broadcast pipeline it knows
// carries the file, and, when only a point-to-point pipeline's packet
// does, to that pipeline's other node only; a file no packet carries, or
// one whose pipeline is gone, to nobody.
func TestFileServeRule(t *testing.T) {
	_, nodes := persistentNet(t, 1, nil)
	a := nodes[0].e
	peer, stranger := ids.Node{0x5a}, ids.Node{0x6b}
	ctx := t.Context()
	d, err := a.Create(ctx, "files", Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	p2p, _, err := newDef(testNet, a.self, "p2p", Options{ToNode: peer}, nil)
	if err != nil {
		t.Fatal(err)
	}
	a.Restore(p2p)
	put := func(pipe ids.Pipeline, text string) ids.Content {
		t.Helper()
		path := filepath.Join(t.TempDir(), "f")
		if err := os.WriteFile(path, bytes.Repeat([]byte(text), 1000), 0o600); err != nil {
			t.Fatal(err)
		}
		before := map[ids.Content]bool{}
		a.files.mu.Lock()
		for r := range a.files.owners {
			before[r] = true
		}
		a.files.mu.Unlock()
		if _, err := a.PutFile(ctx, pipe, path, 0); err != nil {
			t.Fatal(err)
		}
		a.files.mu.Lock()
		defer a.files.mu.Unlock()
		for r := range a.files.owners {
			if !before[r] {
				return r
			}
		}
		t.Fatal("PutFile recorded no file")
		return ids.Content{}
	}
	shared := put(d.ID, "broadcast ")
	private := put(p2p.ID, "point to point ")
	for _, c := range []struct {
		what  string
		root  ids.Content
		asker ids.Node
		want  bool
	}{
		{"a broadcast pipeline's file to its other node", shared, peer, true},
		{"a broadcast pipeline's file to any member", shared, stranger, true},
		{"a point-to-point pipeline's file to its other node", private, peer, true},
		{"a point-to-point pipeline's file to another node", private, stranger, false},
		{"an unknown file", ids.Content{0xf0}, peer, false},
	} {
		if got := a.mayServe(c.root, c.asker); got != c.want {
			t.Errorf("%s: served %v, want %v", c.what, got, c.want)
		}
	}
	// The pipeline gone (its file kept by another record): nobody.
	a.files.mu.Lock()
	a.files.owners[shared] = map[ids.Pipeline]bool{{0xee}: true}
	a.files.mu.Unlock()
	if a.mayServe(shared, peer) {
		t.Error("served a file whose only pipeline this node does not know")
	}
}

// fakeTransfer stands for the file service: it records the fetches asked
// of it, fails the first fail of them, and completes the others by
// copying the chunks from the blob store of the node named first.
type fakeTransfer struct {
	mu     sync.Mutex
	fail   int
	calls  [][]ids.Node
	auth   func(ids.Content, ids.Node) bool
	stores map[ids.Node]*blob.Store
	called chan struct{}
}

func (f *fakeTransfer) FetchBlob(ctx context.Context, m *blob.Manifest, holders []ids.Node, progress func(done, total int64)) error {
	f.mu.Lock()
	f.calls = append(f.calls, slices.Clone(holders))
	failing := len(f.calls) <= f.fail
	src := f.stores[holders[0]]
	dst := f.stores[ids.Node{}]
	f.mu.Unlock()
	defer func() {
		select {
		case f.called <- struct{}{}:
		default:
		}
	}()
	if failing {
		return errors.New("no holder could deliver the file")
	}
	if err := dst.Add(m); err != nil {
		return err
	}
	for i := range m.Chunks {
		c, err := src.ReadChunk(m.Root(), i)
		if err != nil {
			return err
		}
		if err := dst.WriteChunk(m.Root(), i, c); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeTransfer) SetAuthorizer(a func(ids.Content, ids.Node) bool) {
	f.mu.Lock()
	f.auth = a
	f.mu.Unlock()
}

func (f *fakeTransfer) fetches() [][]ids.Node {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// TestFilePacketFetchesOnTheTransfer: an engine fetches the content of a
// file packet it receives on its file transfer, from the sender first and
// then the other online nodes (the other node only, on a point-to-point
// pipeline), tries again after a fetch that failed, and registers its
// serving rule with the transfer while it runs.
func TestFilePacketFetchesOnTheTransfer(t *testing.T) {
	tr := make([]*fakeTransfer, 3)
	_, nodes := persistentNetWith(t, 3, nil, func(i int) FileTransfer {
		tr[i] = &fakeTransfer{called: make(chan struct{}, 1), stores: map[ids.Node]*blob.Store{}}
		return tr[i]
	})
	a, b, c := nodes[0], nodes[1], nodes[2]
	for i, n := range nodes {
		tr[i].mu.Lock()
		for _, o := range nodes {
			tr[i].stores[o.id] = o.e.cfg.Blobs
		}
		tr[i].stores[ids.Node{}] = n.e.cfg.Blobs
		if n.id == b.id {
			tr[i].fail = 1
		}
		tr[i].mu.Unlock()
		tr[i].mu.Lock()
		registered := tr[i].auth != nil
		tr[i].mu.Unlock()
		if !registered {
			t.Fatalf("engine %d did not register its serving rule with the transfer", i)
		}
	}
	ctx := t.Context()
	d, err := a.e.Create(ctx, "files", Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	wait(t, b.e, d.ID)
	wait(t, c.e, d.ID)
	got := collect(t, b.e, d.ID)
	content := bytes.Repeat([]byte("file packet "), 100000)
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := a.e.PutFile(ctx, d.ID, path, 0); err != nil {
		t.Fatal(err)
	}
	pk := got(1)[0]
	// b's first fetch fails; it is tried again, and a reader gets the
	// whole content.
	r, err := b.e.OpenFile(ctx, pk)
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(data, content) {
		t.Fatalf("read %d bytes (%v), want the file's %d", len(data), err, len(content))
	}
	calls := tr[1].fetches()
	if len(calls) < 2 {
		t.Fatalf("b fetched %d times, want a second try after the failure", len(calls))
	}
	for _, h := range calls {
		if len(h) != 2 || h[0] != a.id || h[1] != c.id {
			t.Fatalf("b fetched from %v; want the sender %v, then %v", h, a.id, c.id)
		}
	}

	// Point to point: the other node only.
	p2p, err := a.e.Create(ctx, "p2p", Options{ToNode: c.id}, nil)
	if err != nil {
		t.Fatal(err)
	}
	wait(t, c.e, p2p.ID)
	gotc := collect(t, c.e, p2p.ID)
	if _, err := a.e.PutFile(ctx, p2p.ID, path, 0); err != nil {
		t.Fatal(err)
	}
	pkc := gotc(1)[0]
	testutil.WaitFor(t, "c to fetch the point-to-point file", func() bool {
		have, total, err := c.e.FileProgress(pkc)
		return err == nil && total > 0 && have == total
	})
	calls = tr[2].fetches()
	if h := calls[len(calls)-1]; len(h) != 1 || h[0] != a.id {
		t.Fatalf("c fetched the point-to-point file from %v; want only %v", h, a.id)
	}

	// Closed, the engine no longer tells the transfer whom to serve.
	a.e.Close()
	tr[0].mu.Lock()
	defer tr[0].mu.Unlock()
	if tr[0].auth != nil {
		t.Fatal("the serving rule stayed registered after Close")
	}
}
