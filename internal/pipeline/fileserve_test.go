package pipeline

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/pipesnet/pipes/internal/ids"
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
