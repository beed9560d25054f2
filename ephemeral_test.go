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
)

// known reports whether m's node lists pipeline id.
func known(m *member, id pipes.PipelineID) bool {
	for _, p := range m.n.Pipelines() {
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
	live, err := a.n.CreatePipeline("call", pipes.PipelineOptions{Ephemeral: true})
	if err != nil {
		t.Fatal(err)
	}
	kept, err := a.n.CreatePipeline("room", pipes.PipelineOptions{Ephemeral: true, Persistent: true})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := a.n.CreatePipeline("forever", pipes.PipelineOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var pair pipes.PipelineID
	eventually(t, 30*time.Second, "a point-to-point ephemeral pipeline", func() (err error) {
		pair, err = a.n.CreatePipeline("whisper", pipes.PipelineOptions{Ephemeral: true, ToNode: c.n.ID()})
		return err
	})
	waitPipeline(t, c, pair)
	pk, _ := a.n.Pipeline(kept)
	putN(t, pk, 30, "soon gone")
	path, _ := writeRandomFile(t, 3<<20, 9)
	if _, err := pk.PutFile(path); err != nil {
		t.Fatal(err)
	}
	converged(t, ms, kept, 31)
	blobs := filepath.Join(b.dir, "blobs", b.n.ID().String())
	eventually(t, 60*time.Second, "b stores the file", func() error {
		if n := countFiles(blobs); n != 1 {
			return fmt.Errorf("%d files", n)
		}
		return nil
	})
	waitPipeline(t, c, live)
	pf, _ := a.n.Pipeline(plain)
	if err := pf.Shutdown(); !errors.Is(err, pipes.ErrNotEphemeral) {
		t.Fatalf("shutdown of a non-ephemeral pipeline: %v", err)
	}

	// c goes away and misses the shutdown.
	if err := c.n.Shutdown(); err != nil {
		t.Fatal(err)
	}
	pbl := waitPipeline(t, b, live)
	var updates atomic.Int32
	pbl.AddListener(&pipes.PipelineListenerFuncs{StatusUpdate: func(p *pipes.Pipeline) {
		if p.Closed() {
			updates.Add(1)
		}
	}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub := waitPipeline(t, b, kept).Subscribe(ctx)

	pl, _ := a.n.Pipeline(live)
	if err := pl.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := pk.Shutdown(); err != nil {
		t.Fatal(err)
	}
	pp, _ := a.n.Pipeline(pair)
	if err := pp.Shutdown(); err != nil {
		t.Fatalf("shutdown of a point-to-point pipeline whose other node is away: %v", err)
	}
	for _, id := range []pipes.PipelineID{live, kept} {
		if known(a, id) {
			t.Fatal("the shut down pipeline is still listed where it was shut down")
		}
		eventually(t, 30*time.Second, "b drops the pipeline", func() error {
			if known(b, id) {
				return errors.New("still listed")
			}
			return nil
		})
	}
	eventually(t, 30*time.Second, "b's listener is told", func() error {
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
	if _, err := b.n.Pipeline(kept); !errors.Is(err, pipes.ErrNotFound) {
		t.Fatalf("lookup after shutdown: %v", err)
	}
	eventually(t, 30*time.Second, "b deletes the pipeline's file", func() error {
		if n := countFiles(blobs); n != 0 {
			return fmt.Errorf("%d files left", n)
		}
		return nil
	})

	// c comes back: it learns of the shutdown from its peers and drops
	// the pipelines it had stored, without reviving them elsewhere.
	c.start(t)
	eventually(t, 30*time.Second, "c drops the pipelines", func() error {
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
	again, err := b.n.CreatePipeline("room", pipes.PipelineOptions{Ephemeral: true, Persistent: true})
	if err != nil || again != kept {
		t.Fatalf("create again: %v (same id %v)", err, again == kept)
	}
	for _, m := range ms {
		eventually(t, 30*time.Second, fmt.Sprintf("%s learns the new pipeline", m.n.Location()), func() error {
			p, err := m.n.Pipeline(kept)
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
	m := newMember(t, testNetfile(t, "again"), "solo")
	m.start(t)
	opts := pipes.PipelineOptions{Ephemeral: true, Persistent: true}
	for round := range 3 {
		id, err := m.n.CreatePipeline("scratch", opts)
		if err != nil {
			t.Fatal(err)
		}
		p, _ := m.n.Pipeline(id)
		if n := p.Stats().Logged; n != 0 {
			t.Fatalf("round %d: the new pipeline has %d packets of the old one", round, n)
		}
		putN(t, p, 3+round, "scratch")
		if round < 2 {
			if err := p.Shutdown(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := m.n.Shutdown(); err != nil {
		t.Fatal(err)
	}
	m.start(t)
	for _, p := range m.n.Pipelines() {
		if p.Name() == "scratch" {
			if n := p.Stats().Logged; n != 5 {
				t.Fatalf("after a restart the pipeline has %d packets, want 5", n)
			}
			return
		}
	}
	t.Fatal("the pipeline created again is gone after a restart")
}
