package pipes_test

import (
	"bytes"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipesnet/pipes"
	"github.com/pipesnet/pipes/internal/testnet"
)

func TestLivePipelineBroadcast(t *testing.T) {
	ms := cluster(t, "live", 6, nil)
	sender := ms[1]
	var announced atomic.Int32
	ms[4].N.AddListener(&pipes.NodeListenerFuncs{Pipeline: func(p *pipes.Pipeline, _ *pipes.Node) {
		if p.Name() == "chat" {
			announced.Add(1)
		}
	}})
	id, err := sender.N.CreatePipeline("chat", pipes.PipelineOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if again, err := sender.N.CreatePipeline("chat", pipes.PipelineOptions{}); err != nil || again != id {
		t.Fatalf("create again: %v", err)
	}
	if _, err := sender.N.CreatePipeline("chat", pipes.PipelineOptions{Ephemeral: true}); !errors.Is(err, pipes.ErrConflict) {
		t.Fatalf("conflicting options: %v", err)
	}
	subs := map[*testnet.Member]<-chan *pipes.Packet{}
	for _, m := range ms {
		if m == sender {
			continue
		}
		p := m.WaitPipeline(t, id)
		if p.Name() != "chat" || !p.Live() || p.IsPointToPoint() {
			t.Fatalf("pipeline seen as %q live=%v", p.Name(), p.Live())
		}
		subs[m] = p.Subscribe(t.Context())
	}
	pl, _ := sender.N.Pipeline(id)
	const n = 300
	sent := map[pipes.PacketID]int{}
	for i := range n {
		pid, err := pl.Put([]byte(fmt.Sprintf("message %d", i)), pipes.WithPacketType(7))
		if err != nil {
			t.Fatal(err)
		}
		sent[pid] = i
	}
	for m, ch := range subs {
		seen := map[pipes.PacketID]bool{}
		for _, pk := range testnet.Receive(t, ch, n) {
			i, ok := sent[pk.ID()]
			if !ok || seen[pk.ID()] {
				t.Fatalf("%s: unknown or duplicate packet", m.N.Location())
			}
			seen[pk.ID()] = true
			data, _ := pk.Data()
			if string(data) != fmt.Sprintf("message %d", i) || pk.Type() != 7 || pk.Sender() != sender.N.ID() || pk.LogID() != -1 {
				t.Fatalf("%s: packet %d arrived as %q type %d", m.N.Location(), i, data, pk.Type())
			}
		}
		select {
		case extra := <-ch:
			t.Fatalf("%s: extra packet %s", m.N.Location(), extra.ID())
		case <-time.After(100 * time.Millisecond):
		}
	}
	if announced.Load() != 1 {
		t.Fatalf("HandlePipeline called %d times", announced.Load())
	}

	// WithDestination: only that node receives it, end to end encrypted.
	target := ms[3]
	if _, err := pl.Put([]byte("just for you"), pipes.WithDestination(target.N.ID())); err != nil {
		t.Fatal(err)
	}
	got := testnet.Receive(t, subs[target], 1)
	if d, _ := got[0].Data(); string(d) != "just for you" {
		t.Fatalf("destination got %q", d)
	}
	for m, ch := range subs {
		if m == target {
			continue
		}
		select {
		case pk := <-ch:
			d, _ := pk.Data()
			t.Fatalf("%s received a packet for another node: %q", m.N.Location(), d)
		case <-time.After(50 * time.Millisecond):
		}
	}
	if _, err := pl.Put(make([]byte, pipes.MaxPacketSize+1)); !errors.Is(err, pipes.ErrTooLarge) {
		t.Fatalf("oversized put: %v", err)
	}
}

func TestLateJoinerLearnsPipelines(t *testing.T) {
	ms := cluster(t, "late", 3, nil)
	id, err := ms[1].N.CreatePipeline("history-less", pipes.PipelineOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ms[2].WaitPipeline(t, id)
	late := testnet.NewMember(t, ms[0].Net, "latecomer")
	late.Gateway(t, ms[0])
	late.Start(t)
	p := late.WaitPipeline(t, id)
	ch := p.Subscribe(t.Context())
	src, _ := ms[2].N.Pipeline(id)
	// The latecomer subscribed after learning the pipeline; packets put now reach it.
	testnet.Eventually(t, 30*time.Second, "latecomer online everywhere", testnet.AllSeeAll(append(ms, late)))
	if _, err := src.Put([]byte("welcome")); err != nil {
		t.Fatal(err)
	}
	if d, _ := testnet.Receive(t, ch, 1)[0].Data(); string(d) != "welcome" {
		t.Fatalf("got %q", d)
	}
}

func TestPointToPointThroughRelay(t *testing.T) {
	a, r, b, relayed := relayLine(t, "p2p")
	for _, p := range a.N.ConnectedPeers() {
		if p.ID() == b.N.ID() {
			t.Fatal("alice and bob are peers: the test needs a relay between them")
		}
	}
	const name = "a-rather-private-conversation"
	id, err := a.N.CreatePipeline(name, pipes.PipelineOptions{ToNode: b.N.ID()})
	if err != nil {
		t.Fatal(err)
	}
	pb := b.WaitPipeline(t, id)
	if other, ok := pb.OtherNode(); !ok || other != a.N.ID() {
		t.Fatal("bob's pipeline does not point at alice")
	}
	ch := pb.Subscribe(t.Context())
	pa, _ := a.N.Pipeline(id)
	marker := []byte("the plaintext that no relay may see")
	if _, err := pa.Put(marker); err != nil {
		t.Fatal(err)
	}
	if d, _ := testnet.Receive(t, ch, 1)[0].Data(); !bytes.Equal(d, marker) {
		t.Fatalf("bob got %q", d)
	}
	for _, p := range r.N.Pipelines() {
		if p.ID() == id {
			t.Fatal("the relay learned of the point-to-point pipeline")
		}
	}
	forwarded := relayed()
	if len(forwarded) == 0 {
		var peers []string
		for _, p := range a.N.ConnectedPeers() {
			peers = append(peers, p.Name())
		}
		t.Fatalf("nothing went through the relay (routed %d, alice's peers %v)", r.N.Stats().Routed, peers)
	}
	for _, p := range forwarded {
		if bytes.Contains(p, marker) || bytes.Contains(p, []byte(name)) {
			t.Fatal("the relay forwarded plaintext")
		}
	}
}

// TestRouteRecovery: a - r1 - b is the short path, a - r2 - r3 - b the
// long one. Killing r1 moves the traffic to the long path.
func TestRouteRecovery(t *testing.T) {
	netPath := testnet.Netfile(t, "reroute")
	one := pipes.WithTargetDegree(1)
	b := testnet.NewMember(t, netPath, "b", one)
	b.Start(t)
	r1 := testnet.NewMember(t, netPath, "r1", one)
	r1.Gateway(t, b)
	r3 := testnet.NewMember(t, netPath, "r3", one)
	r3.Gateway(t, b)
	r1.Start(t)
	r3.Start(t)
	r2 := testnet.NewMember(t, netPath, "r2", one)
	r2.Gateway(t, r3)
	r2.Start(t)
	a := testnet.NewMember(t, netPath, "a", one)
	a.Gateway(t, r1)
	a.Gateway(t, r2)
	a.Start(t)
	all := []*testnet.Member{a, r1, r2, r3, b}
	testnet.Eventually(t, 30*time.Second, "all see all", testnet.AllSeeAll(all))

	id, err := a.N.CreatePipeline("reroute", pipes.PipelineOptions{ToNode: b.N.ID()})
	if err != nil {
		t.Fatal(err)
	}
	ch := b.WaitPipeline(t, id).Subscribe(t.Context())
	pa, _ := a.N.Pipeline(id)
	send := func(s string) { pa.Put([]byte(s)) }
	send("before")
	if d, _ := testnet.Receive(t, ch, 1)[0].Data(); string(d) != "before" {
		t.Fatalf("got %q", d)
	}
	if r1.N.Stats().Routed == 0 {
		t.Fatal("the short path through r1 was not used")
	}
	pipes.KillNode(r1.N)
	// Keep sending until packets arrive again over r2 and r3.
	deadline := time.Now().Add(60 * time.Second)
	for i := 0; ; i++ {
		send(fmt.Sprintf("after %d", i))
		select {
		case pk := <-ch:
			if d, _ := pk.Data(); bytes.HasPrefix(d, []byte("after")) {
				if r3.N.Stats().Routed == 0 {
					t.Fatal("arrived, but not through r3")
				}
				return
			}
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("traffic did not resume after the relay died")
		}
	}
}

// TestBurstIsDeliveredOrCounted: 10,000 packets put as fast as possible
// reach a reading subscriber in full; a subscriber that does not read
// holds or counts every one; neither slows the other.
func TestBurstIsDeliveredOrCounted(t *testing.T) {
	ms := cluster(t, "burst", 3, nil)
	id, err := ms[0].N.CreatePipeline("burst", pipes.PipelineOptions{})
	if err != nil {
		t.Fatal(err)
	}
	reader := ms[1].WaitPipeline(t, id).Subscribe(t.Context())
	lazy := ms[2].WaitPipeline(t, id)
	lazyCh := lazy.Subscribe(t.Context()) // never read until the end
	p, _ := ms[0].N.Pipeline(id)
	const n = 10000
	payload := bytes.Repeat([]byte("x"), 100)
	go func() {
		for range n {
			if _, err := p.Put(payload); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	got := testnet.Receive(t, reader, n)
	if len(got) != n {
		t.Fatalf("reader got %d", len(got))
	}
	testnet.Eventually(t, 60*time.Second, "the idle subscriber accounts for every packet", func() error {
		held, dropped := len(lazyCh), lazy.Stats().Dropped
		if uint64(held)+dropped != n {
			return fmt.Errorf("held %d + dropped %d != %d", held, dropped, n)
		}
		return nil
	})
}
