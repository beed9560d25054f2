package pipes_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pipesnet/pipes"
	"github.com/pipesnet/pipes/internal/testnet"
)

// chain starts n nodes that each know only the node before them as
// gateway (A-B-C-...), and returns as soon as every node lists every other
// in ConnectedNodes: the check is polled without pause, so that what
// follows runs at the first moment the nodes are listed.
func chain(t *testing.T, name string, n int) []*testnet.Member {
	t.Helper()
	netPath := testnet.Netfile(t, name)
	var ms []*testnet.Member
	for i := range n {
		m := testnet.NewMember(t, netPath, fmt.Sprintf("%s%c", name, 'a'+i))
		if i > 0 {
			m.Gateway(t, ms[i-1])
		}
		m.Start(t)
		ms = append(ms, m)
	}
	all := testnet.AllSeeAll(ms)
	deadline := time.Now().Add(60 * time.Second)
	for all() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("every node sees every other: %v", all())
		}
		time.Sleep(time.Millisecond)
	}
	return ms
}

// TestAddressableAtFirstListing: in a chain of five nodes, each node
// creates a point-to-point pipeline to every other at the first moment its
// ConnectedNodes lists it (nodes that dial each other after peer exchange
// are listed as soon as they connect): none fails for want of the
// destination's encryption key.
func TestAddressableAtFirstListing(t *testing.T) {
	netPath := testnet.Netfile(t, "af")
	ms := make([]*testnet.Member, 5)
	var wg sync.WaitGroup
	errs := make(chan error, len(ms)*len(ms))
	for i := range ms {
		m := testnet.NewMember(t, netPath, fmt.Sprintf("af%c", 'a'+i))
		if i > 0 {
			m.Gateway(t, ms[i-1])
		}
		m.Start(t)
		ms[i] = m
		wg.Add(1)
		go func() {
			defer wg.Done()
			done := map[pipes.NodeID]bool{}
			deadline := time.Now().Add(60 * time.Second)
			for len(done) < len(ms)-1 && time.Now().Before(deadline) {
				for _, r := range m.N.ConnectedNodes() {
					if done[r.ID()] {
						continue
					}
					done[r.ID()] = true
					if _, err := m.N.CreatePipeline("to-"+r.Location(), pipes.PipelineOptions{ToNode: r.ID()}); err != nil {
						errs <- fmt.Errorf("%s to %s, listed online: %w", m.N.Location(), r.Location(), err)
					}
				}
				time.Sleep(time.Millisecond)
			}
			if len(done) < len(ms)-1 {
				errs <- fmt.Errorf("%s lists %d nodes, want %d", m.N.Location(), len(done), len(ms)-1)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestAddressableWhenListed: in a chain of five nodes, a node that
// ConnectedNodes lists as online is addressable at once: a point-to-point
// pipeline to the far end is created and carries a packet, and Put on a
// realtime point-to-point pipeline does not fail for want of the
// destination's encryption key.
func TestAddressableWhenListed(t *testing.T) {
	ms := chain(t, "ad", 5)
	a, e := ms[0], ms[4]

	// Both pipelines are created at the first moment every node is listed.
	id, err := a.N.CreatePipeline("far", pipes.PipelineOptions{ToNode: e.N.ID()})
	if err != nil {
		t.Fatalf("point-to-point pipeline to a listed node: %v", err)
	}
	rid, err := e.N.CreatePipeline("far-voice", pipes.PipelineOptions{ToNode: a.N.ID(), Realtime: true})
	if err != nil {
		t.Fatalf("realtime pipeline to a listed node: %v", err)
	}
	pa, err := a.N.Pipeline(id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pa.Put([]byte("to the far end")); err != nil {
		t.Fatalf("Put to a listed node: %v", err)
	}
	pe, err := e.N.Pipeline(rid)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pe.Put([]byte("frame")); err != nil {
		t.Fatalf("realtime Put to a listed node: %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The far node gets the pipeline's definition; a live pipeline
	// delivers to subscribers of the moment, so a sends again until the
	// subscription made then has a packet, every Put succeeding.
	putUntilReceived(t, pa, e.WaitPipeline(t, id).Subscribe(ctx), "to the far end", a.N.ID())

	// Realtime packets are datagrams and may be lost: send until one
	// arrives, every Put succeeding. The first Put above carries the same
	// data, since it may arrive after the subscription is made.
	putUntilReceived(t, pe, a.WaitPipeline(t, rid).Subscribe(ctx), "frame", e.N.ID())
}

// putUntilReceived puts data on p until ch has a packet, failing if a Put
// fails or what arrives is not data from sender.
func putUntilReceived(t *testing.T, p *pipes.Pipeline, ch <-chan *pipes.Packet, data string, sender pipes.NodeID) {
	t.Helper()
	testnet.Eventually(t, 30*time.Second, "a packet reaches the far node", func() error {
		if _, err := p.Put([]byte(data)); err != nil {
			t.Fatalf("Put to a listed node: %v", err)
		}
		select {
		case got := <-ch:
			if d, _ := got.Data(); string(d) != data || got.Sender() != sender {
				t.Fatalf("far node got %q from %v", d, got.Sender())
			}
			return nil
		case <-time.After(50 * time.Millisecond):
			return errors.New("nothing yet")
		}
	})
}
