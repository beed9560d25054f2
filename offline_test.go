package pipes_test

import (
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/pipesnet/pipes"
	"github.com/pipesnet/pipes/internal/testnet"
)

// storedReads checks that p holds the packets ids, in order, with the data
// putN gave them: PacketsSince, PacketWithID, Data and Open.
func storedReads(t *testing.T, p *pipes.Pipeline, ids []pipes.PacketID, prefix string) {
	t.Helper()
	got := testnet.History(t, p)
	if len(got) != len(ids) {
		t.Fatalf("%q: %d packets stored, want %d", p.Name(), len(got), len(ids))
	}
	for i, pk := range got {
		want := fmt.Sprintf("%s %d", prefix, i)
		if pk.ID() != ids[i] {
			t.Fatalf("%q: LogID %d is %s, want %s", p.Name(), i, pk.ID(), ids[i])
		}
		if d, err := pk.Data(); err != nil || string(d) != want {
			t.Fatalf("%q: Data of LogID %d: %q, %v; want %q", p.Name(), i, d, err, want)
		}
		byID, err := p.PacketWithID(ids[i])
		if err != nil || byID.LogID() != int64(i) || byID.Type() != 3 {
			t.Fatalf("%q: PacketWithID(%s): %v %v", p.Name(), ids[i], byID, err)
		}
		r, err := byID.Open()
		if err != nil {
			t.Fatalf("%q: Open of LogID %d: %v", p.Name(), i, err)
		}
		d, err := io.ReadAll(r)
		r.Close()
		if err != nil || string(d) != want {
			t.Fatalf("%q: Open of LogID %d read %q, %v; want %q", p.Name(), i, d, err, want)
		}
	}
	if _, err := p.PacketWithID(pipes.PacketID{1}); !errors.Is(err, pipes.ErrNotFound) {
		t.Fatalf("%q: PacketWithID of nothing: %v", p.Name(), err)
	}
	n := 0
	for _, err := range p.PacketsSince(int64(len(ids) - 3)) { // the last two
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 2 {
		t.Fatalf("%q: PacketsSince(%d) gave %d packets, want 2", p.Name(), len(ids)-3, n)
	}
}

// TestStoredHistoryReadsWithoutStart: a platform reopened (after a restart
// or a crash) lists its node's stored pipelines and reads their history,
// an encrypted one's included, before the node is started; what needs the
// network still needs Start, and Start then finds the same data.
func TestStoredHistoryReadsWithoutStart(t *testing.T) {
	m := testnet.NewMember(t, testnet.Netfile(t, "offline"), "solo")
	m.Start(t)
	pid, err := m.N.CreatePipeline("notes", pipes.PipelineOptions{Persistent: true})
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("correct horse battery staple")
	eid, err := m.N.CreatePipeline("vault", pipes.PipelineOptions{Persistent: true, Encrypted: true, Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := m.N.Pipeline(pid)
	ep, _ := m.N.Pipeline(eid)
	ids := testnet.PutN(t, p, 20, "note")
	eids := testnet.PutN(t, ep, 5, "classified")
	if err := m.P.Close(); err != nil {
		t.Fatal(err)
	}

	m.Open(t) // the node is not started
	if m.N.IsActive() {
		t.Fatal("node active after reopening")
	}
	check := func(when string) {
		t.Helper()
		var names []string
		for _, pl := range m.N.Pipelines() {
			names = append(names, pl.Name())
		}
		if fmt.Sprint(names) != "[notes vault]" {
			t.Fatalf("%s: Pipelines() = %v, want [notes vault]", when, names)
		}
		p, err := m.N.Pipeline(pid)
		if err != nil || !p.Persistent() {
			t.Fatalf("%s: Pipeline(notes): %v", when, err)
		}
		storedReads(t, p, ids, "note")
		ep, err := m.N.Pipeline(eid)
		if err != nil || !ep.Encrypted() {
			t.Fatalf("%s: Pipeline(vault): %v", when, err)
		}
		if !ep.HasSecret() {
			t.Fatalf("%s: the stored pipeline key is not found", when)
		}
		storedReads(t, ep, eids, "classified")
	}
	check("not started")
	// What needs the network still needs Start.
	if _, err := p.Put([]byte("x")); !errors.Is(err, pipes.ErrNotActive) {
		t.Fatalf("Put on a node not started: %v", err)
	}
	if _, err := m.N.CreatePipeline("other", pipes.PipelineOptions{Persistent: true}); !errors.Is(err, pipes.ErrNotActive) {
		t.Fatalf("CreatePipeline on a node not started: %v", err)
	}

	m.Start(t)
	check("started")
	p, _ = m.N.Pipeline(pid)
	more := testnet.PutN(t, p, 1, "late")
	if pk, err := p.PacketWithID(more[0]); err != nil || pk.LogID() != int64(len(ids)) {
		t.Fatalf("packet put after Start: %v %v", pk, err)
	}
	// Stopped again: reading still works, and sees the new packet.
	if err := m.N.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if got := testnet.History(t, p); len(got) != len(ids)+1 {
		t.Fatalf("stopped: %d packets, want %d", len(got), len(ids)+1)
	}
	// Reopened once more and closed without starting: nothing stays open
	// (TestMain checks for goroutines left behind).
	if err := m.P.Close(); err != nil {
		t.Fatal(err)
	}
	m.Open(t)
	if len(m.N.Pipelines()) != 2 {
		t.Fatal("pipelines not listed after the second reopening")
	}
	if err := m.P.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.PacketWithID(ids[0]); err == nil {
		t.Fatal("read after Close succeeded")
	}
}
