package pipes_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipesnet/pipes"
	"github.com/pipesnet/pipes/internal/testnet"
)

// known reports whether m's node lists pipeline id.
func known(m *testnet.Member, id pipes.PipelineID) bool {
	for _, p := range m.N.Pipelines() {
		if p.ID() == id {
			return true
		}
	}
	return false
}

// TestEphemeralShutdown: Shutdown removes an ephemeral pipeline from every
// node, the one that was away included (when it comes back), ends
// subscriptions and tells listeners; the pipeline can be created again.
// Other pipelines refuse Shutdown.
func TestEphemeralShutdown(t *testing.T) {
	ms := cluster(t, "eph", 3, nil)
	a, b, c := ms[0], ms[1], ms[2]
	live, err := a.N.CreatePipeline("call", pipes.PipelineOptions{Ephemeral: true})
	if err != nil {
		t.Fatal(err)
	}
	kept, err := a.N.CreatePipeline("room", pipes.PipelineOptions{Ephemeral: true, Persistent: true})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := a.N.CreatePipeline("forever", pipes.PipelineOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var pair pipes.PipelineID
	testnet.Eventually(t, 30*time.Second, "a point-to-point ephemeral pipeline", func() (err error) {
		pair, err = a.N.CreatePipeline("whisper", pipes.PipelineOptions{Ephemeral: true, ToNode: c.N.ID()})
		return err
	})
	c.WaitPipeline(t, pair)
	pk, _ := a.N.Pipeline(kept)
	testnet.PutN(t, pk, 30, "soon gone")
	path, _ := writeRandomFile(t, 3<<20, 9)
	if _, err := pk.PutFile(path); err != nil {
		t.Fatal(err)
	}
	testnet.Converged(t, ms, kept, 31)
	blobs := filepath.Join(b.Dir, "blobs", b.N.ID().String())
	testnet.Eventually(t, 60*time.Second, "b stores the file", func() error {
		if n := countFiles(blobs); n != 1 {
			return fmt.Errorf("%d files", n)
		}
		return nil
	})
	c.WaitPipeline(t, live)
	pf, _ := a.N.Pipeline(plain)
	if err := pf.Shutdown(); !errors.Is(err, pipes.ErrNotEphemeral) {
		t.Fatalf("shutdown of a non-ephemeral pipeline: %v", err)
	}

	// c goes away and misses the shutdown.
	if err := c.N.Shutdown(); err != nil {
		t.Fatal(err)
	}
	pbl := b.WaitPipeline(t, live)
	var updates atomic.Int32
	pbl.AddListener(&pipes.PipelineListenerFuncs{StatusUpdate: func(p *pipes.Pipeline) {
		if p.Closed() {
			updates.Add(1)
		}
	}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub := b.WaitPipeline(t, kept).Subscribe(ctx)

	pl, _ := a.N.Pipeline(live)
	if err := pl.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := pk.Shutdown(); err != nil {
		t.Fatal(err)
	}
	pp, _ := a.N.Pipeline(pair)
	if err := pp.Shutdown(); err != nil {
		t.Fatalf("shutdown of a point-to-point pipeline whose other node is away: %v", err)
	}
	for _, id := range []pipes.PipelineID{live, kept} {
		if known(a, id) {
			t.Fatal("the shut down pipeline is still listed where it was shut down")
		}
		testnet.Eventually(t, 30*time.Second, "b drops the pipeline", func() error {
			if known(b, id) {
				return errors.New("still listed")
			}
			return nil
		})
	}
	testnet.Eventually(t, 30*time.Second, "b's listener is told", func() error {
		if updates.Load() == 0 {
			return errors.New("no status update")
		}
		return nil
	})
	select {
	case _, ok := <-sub:
		for ok {
			_, ok = <-sub
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the subscription of the shut down pipeline did not end")
	}
	if _, err := pl.Put([]byte("late")); !errors.Is(err, pipes.ErrClosedPipeline) {
		t.Fatalf("put after shutdown: %v", err)
	}
	if _, err := b.N.Pipeline(kept); !errors.Is(err, pipes.ErrNotFound) {
		t.Fatalf("lookup after shutdown: %v", err)
	}
	testnet.Eventually(t, 30*time.Second, "b deletes the pipeline's file", func() error {
		if n := countFiles(blobs); n != 0 {
			return fmt.Errorf("%d files left", n)
		}
		return nil
	})

	// c comes back: it learns of the shutdown from its peers and drops
	// the pipelines it had stored, without reviving them elsewhere.
	c.Start(t)
	testnet.Eventually(t, 30*time.Second, "c drops the pipelines", func() error {
		if known(c, live) || known(c, kept) || known(c, pair) {
			return errors.New("still listed on c")
		}
		return nil
	})
	time.Sleep(500 * time.Millisecond) // give a revival a chance to show
	if known(a, kept) || known(b, kept) {
		t.Fatal("the pipeline came back")
	}

	// Created again: a new pipeline of the same id, empty.
	again, err := b.N.CreatePipeline("room", pipes.PipelineOptions{Ephemeral: true, Persistent: true})
	if err != nil || again != kept {
		t.Fatalf("create again: %v (same id %v)", err, again == kept)
	}
	for _, m := range ms {
		testnet.Eventually(t, 30*time.Second, fmt.Sprintf("%s learns the new pipeline", m.N.Location()), func() error {
			p, err := m.N.Pipeline(kept)
			if err != nil {
				return err
			}
			if n := p.Stats().Logged; n != 0 {
				return fmt.Errorf("%d packets of the old pipeline", n)
			}
			return nil
		})
	}
}

// countFiles counts the regular files in dir (0 if it does not exist).
func countFiles(dir string) int {
	es, _ := os.ReadDir(dir)
	n := 0
	for _, e := range es {
		if e.Type().IsRegular() {
			n++
		}
	}
	return n
}

// TestEphemeralCreatedAgainAtOnce: a pipeline created again right after
// its shutdown is a new, empty pipeline that keeps what it is given,
// also across a restart (the deletion of the old one cannot take it).
func TestEphemeralCreatedAgainAtOnce(t *testing.T) {
	m := testnet.NewMember(t, testnet.Netfile(t, "again"), "solo")
	m.Start(t)
	opts := pipes.PipelineOptions{Ephemeral: true, Persistent: true}
	for round := range 3 {
		id, err := m.N.CreatePipeline("scratch", opts)
		if err != nil {
			t.Fatal(err)
		}
		p, _ := m.N.Pipeline(id)
		if n := p.Stats().Logged; n != 0 {
			t.Fatalf("round %d: the new pipeline has %d packets of the old one", round, n)
		}
		testnet.PutN(t, p, 3+round, "scratch")
		if round < 2 {
			if err := p.Shutdown(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := m.N.Shutdown(); err != nil {
		t.Fatal(err)
	}
	m.Start(t)
	for _, p := range m.N.Pipelines() {
		if p.Name() == "scratch" {
			if n := p.Stats().Logged; n != 5 {
				t.Fatalf("after a restart the pipeline has %d packets, want 5", n)
			}
			return
		}
	}
	t.Fatal("the pipeline created again is gone after a restart")
}
