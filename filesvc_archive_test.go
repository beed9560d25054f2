package pipes_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/pipesnet/pipes"
	"github.com/pipesnet/pipes/internal/testnet"
)

// memberOf returns the member of ms with node id n.
func memberOf(ms []*testnet.Member, n pipes.NodeID) *testnet.Member {
	for _, m := range ms {
		if m.N.ID() == n {
			return m
		}
	}
	return nil
}

// shardHolders returns, per shard of id's archive as s sees it, the
// members of running that hold it.
func shardHolders(s *testnet.Member, running []*testnet.Member, id pipes.FileID) ([][]*testnet.Member, *pipes.FileArchive, error) {
	st, err := s.N.Files().Stat(context.Background(), id)
	if err != nil {
		return nil, nil, err
	}
	if st.Archive == nil {
		return nil, nil, errors.New("no archive")
	}
	out := make([][]*testnet.Member, len(st.Archive.Shards))
	for i, sh := range st.Archive.Shards {
		for _, h := range sh.Holders {
			if m := memberOf(running, h); m != nil && len(localOn([]*testnet.Member{m}, sh.ID)) == 1 {
				out[i] = append(out[i], m)
			}
		}
	}
	return out, st.Archive, nil
}

// TestFileArchive: Archive(3, 2) on six nodes puts five shards on five
// distinct nodes (compressed: the content pays); with two shard holders
// and every complete holder gone, another node's Fetch restores the file
// byte for byte, and the lost shards are rebuilt on the nodes left.
func TestFileArchive(t *testing.T) {
	ms := cluster(t, "farc", 6, nil)
	owner := ms[1]
	ctx := context.Background()
	data := []byte(hex.EncodeToString(content(3*testChunk/2+333, 12))) // hex: compresses to about half
	id, err := owner.N.Files().AddReader(ctx, "archived.txt", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][2]int{{0, 2}, {3, -1}, {200, 57}} {
		if err := owner.N.Files().Archive(ctx, id, bad[0], bad[1]); !errors.Is(err, pipes.ErrInvalid) {
			t.Fatalf("Archive(%d, %d): %v", bad[0], bad[1], err)
		}
	}
	if err := owner.N.Files().Archive(ctx, id, 5, 2); !errors.Is(err, pipes.ErrTooFewNodes) {
		t.Fatalf("Archive(5, 2) on six nodes: %v", err)
	}
	testnet.Eventually(t, 60*time.Second, "Archive(3, 2)", func() error {
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return owner.N.Files().Archive(actx, id, 3, 2)
	})
	var placed [][]*testnet.Member
	testnet.Eventually(t, 60*time.Second, "five shards on five nodes, one copy each", func() error {
		hs, a, err := shardHolders(owner, ms, id)
		if err != nil {
			return err
		}
		if a.Data != 3 || a.Parity != 2 || !a.Compressed || len(a.Shards) != 5 {
			return fmt.Errorf("archive %+v", a)
		}
		seen := map[*testnet.Member]bool{}
		for i, h := range hs {
			if len(h) != 1 || seen[h[0]] {
				return fmt.Errorf("shard %d on %d nodes", i, len(h))
			}
			seen[h[0]] = true
		}
		placed = hs
		return nil
	})

	// Every complete holder (the owner) and two shard holders go, the
	// gateway spared; the lower shards (data) first.
	gone := []*testnet.Member{owner}
	want := 3
	for _, h := range placed {
		if h[0] == owner {
			want = 2 // the owner holds a shard
		}
	}
	for _, h := range placed {
		if len(gone) < want && h[0] != ms[0] && h[0] != owner {
			gone = append(gone, h[0])
		}
	}
	for _, g := range gone {
		if err := g.N.Shutdown(); err != nil {
			t.Fatal(err)
		}
	}
	running := without(ms, gone...)
	if len(localOn(running, id)) != 0 {
		t.Fatal("a complete copy is left")
	}
	var fetcher *testnet.Member
	for _, m := range running {
		if m != ms[0] {
			fetcher = m
			break
		}
	}
	testnet.Eventually(t, 90*time.Second, "a fetch restores the file", func() error {
		fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return fetcher.N.Files().Fetch(fctx, id, nil)
	})
	if got := readFile(t, fetcher.N, id); !bytes.Equal(got, data) {
		t.Fatal("the restored content differs")
	}
	testnet.Eventually(t, 90*time.Second, "the lost shards are rebuilt", func() error {
		hs, _, err := shardHolders(fetcher, running, id)
		if err != nil {
			return err
		}
		for i, h := range hs {
			if len(h) == 0 {
				return fmt.Errorf("shard %d has no holder", i)
			}
		}
		return nil
	})
}
