package pipes_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/pipesnet/pipes"
	"github.com/pipesnet/pipes/internal/testnet"
)

// localOn returns the members of ms that hold file id complete, by their
// own account.
func localOn(ms []*testnet.Member, id pipes.FileID) []*testnet.Member {
	var out []*testnet.Member
	for _, m := range ms {
		for _, f := range m.N.Files().List() {
			if f.ID == id && f.Local {
				out = append(out, m)
			}
		}
	}
	return out
}

// waitCopies waits until exactly n of ms hold id complete.
func waitCopies(t *testing.T, ms []*testnet.Member, id pipes.FileID, n int) []*testnet.Member {
	t.Helper()
	var got []*testnet.Member
	testnet.Eventually(t, 90*time.Second, fmt.Sprintf("%d copies", n), func() error {
		if got = localOn(ms, id); len(got) != n {
			return fmt.Errorf("%d copies", len(got))
		}
		return nil
	})
	return got
}

// restart starts m again, knowing every running member as a gateway (its
// first gateway may be gone).
func restart(t *testing.T, m *testnet.Member, running []*testnet.Member) {
	t.Helper()
	for _, r := range running {
		if r != m {
			m.Gateway(t, r)
		}
	}
	m.Start(t)
}

func without(ms []*testnet.Member, drop ...*testnet.Member) []*testnet.Member {
	return slices.DeleteFunc(slices.Clone(ms), func(m *testnet.Member) bool { return slices.Contains(drop, m) })
}

// TestFileReplicate: Replicate(3) on five nodes makes three holders; two
// holders closed for good are replaced; one of them coming back leaves
// four copies, and one taken for the duty is released (never the user's);
// the duty survives a restart of the node that set it.
func TestFileReplicate(t *testing.T) {
	ms := cluster(t, "frep", 5, nil)
	setter := ms[1]
	ctx := context.Background()
	data := content(3*testChunk+17, 11)
	id, err := setter.N.Files().AddReader(ctx, "kept.bin", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if err := setter.N.Files().Replicate(ctx, id, -1); !errors.Is(err, pipes.ErrInvalid) {
		t.Fatalf("Replicate(-1): %v", err)
	}
	if err := setter.N.Files().Replicate(ctx, pipes.FileID{9}, 2); !errors.Is(err, pipes.ErrNotFound) {
		t.Fatalf("Replicate of an unknown file: %v", err)
	}
	testnet.Eventually(t, 60*time.Second, "Replicate(3)", func() error {
		rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		return setter.N.Files().Replicate(rctx, id, 3)
	})
	holders := waitCopies(t, ms, id, 3)
	if !slices.Contains(holders, setter) {
		t.Fatal("the setter's own copy is gone")
	}
	for _, m := range ms {
		testnet.Eventually(t, 30*time.Second, "the duty is known everywhere", func() error {
			st, err := m.N.Files().Stat(ctx, id)
			if err != nil {
				return err
			}
			if st.Copies != 3 {
				return fmt.Errorf("%s: copies %d", m.N.Location(), st.Copies)
			}
			return nil
		})
	}
	for _, h := range holders {
		if got := readFile(t, h.N, id); !bytes.Equal(got, data) {
			t.Fatalf("%s holds other content", h.N.Location())
		}
	}

	// The two holders that took copies for the duty leave for good.
	gone := without(holders, setter)
	for _, g := range gone {
		if err := g.N.Shutdown(); err != nil {
			t.Fatal(err)
		}
	}
	running := without(ms, gone...)
	now := waitCopies(t, running, id, 3)
	for _, h := range now {
		if got := readFile(t, h.N, id); !bytes.Equal(got, data) {
			t.Fatalf("%s holds other content after the repair", h.N.Location())
		}
	}

	// One comes back with its copy (not the gateway, whose address
	// would change): four copies, until one taken for the duty is
	// released.
	back := gone[0]
	if back == ms[0] {
		back = gone[1]
	}
	restart(t, back, running)
	running = append(running, back)
	if len(localOn([]*testnet.Member{back}, id)) != 1 {
		t.Fatal("the returning holder lost its copy in the restart")
	}
	testnet.Eventually(t, 60*time.Second, "the returning holder is seen", testnet.AllSeeAll(running))
	after := waitCopies(t, running, id, 3)
	if !slices.Contains(after, setter) {
		t.Fatal("the user's copy was released")
	}

	// The duty survives a restart of its setter.
	if err := setter.N.Shutdown(); err != nil {
		t.Fatal(err)
	}
	restart(t, setter, running)
	if st, err := setter.N.Files().Stat(ctx, id); err != nil || st.Copies != 3 {
		t.Fatalf("after a restart the setter has copies %d (%v)", st.Copies, err)
	}

	// More copies than nodes: ErrTooFewNodes, the duty stays.
	small, err := setter.N.Files().AddReader(ctx, "small.bin", bytes.NewReader([]byte("few nodes")))
	if err != nil {
		t.Fatal(err)
	}
	if err := setter.N.Files().Replicate(ctx, small, 9); !errors.Is(err, pipes.ErrTooFewNodes) {
		t.Fatalf("Replicate(9) on %d nodes: %v", len(running), err)
	}
	if st, _ := setter.N.Files().Stat(ctx, small); st.Copies != 9 {
		t.Fatalf("copies %d after ErrTooFewNodes, want the duty kept", st.Copies)
	}
}
