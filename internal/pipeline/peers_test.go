package pipeline

import (
	"context"
	"testing"

	"github.com/pipesnet/pipes/internal/kinds"
)

// defsSent counts the definition lists sent to new peers.
func (fn *fakeNet) defsSent() int {
	fn.mu.Lock()
	defer fn.mu.Unlock()
	n := 0
	for _, m := range fn.sent {
		if m.kind == kinds.Defs {
			n++
		}
	}
	return n
}

// A node that becomes a direct peer is told of the broadcast pipelines
// once per connection: again after it stopped being a peer, not on every
// event that says it still is one, and never by a closed engine.
func TestNodeChangedTellsNewPeersOnce(t *testing.T) {
	fn, nodes := newTestNet(t, 2)
	a, b := nodes[0], nodes[1]
	if _, err := a.e.Create(context.Background(), "shared", Options{}, nil); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		peer bool
		want int
	}{{true, 1}, {true, 1}, {false, 1}, {false, 1}, {true, 2}}
	for i, s := range steps {
		a.e.NodeChanged(b.id, s.peer)
		if got := fn.defsSent(); got != s.want {
			t.Fatalf("step %d (peer %v): %d definition lists sent, want %d", i, s.peer, got, s.want)
		}
	}
	a.e.NodeChanged(b.id, false)
	a.e.Close()
	a.e.NodeChanged(b.id, true)
	if got := fn.defsSent(); got != 2 {
		t.Fatalf("a closed engine sent definitions (%d lists)", got)
	}
}
