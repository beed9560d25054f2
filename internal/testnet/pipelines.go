package testnet

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pipesnet/pipes"
)

// WaitPipeline waits until m's node knows pipeline id and returns it.
func (m *Member) WaitPipeline(t testing.TB, id pipes.PipelineID) *pipes.Pipeline {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := m.N.WaitPipeline(ctx, id)
	if err != nil {
		t.Fatalf("%s: pipeline not known: %v", m.N.Location(), err)
	}
	return p
}

// Receive reads want packets from ch, failing after a generous limit.
func Receive(t testing.TB, ch <-chan *pipes.Packet, want int) []*pipes.Packet {
	t.Helper()
	var got []*pipes.Packet
	limit := time.After(60 * time.Second)
	for len(got) < want {
		select {
		case p, ok := <-ch:
			if !ok {
				t.Fatalf("subscription closed after %d packets", len(got))
			}
			got = append(got, p)
		case <-limit:
			t.Fatalf("received %d of %d packets", len(got), want)
		}
	}
	return got
}

// PutN puts n packets of type 3 on p, "prefix 0", "prefix 1", ..., and
// returns their ids.
func PutN(t testing.TB, p *pipes.Pipeline, n int, prefix string) []pipes.PacketID {
	t.Helper()
	var ids []pipes.PacketID
	for i := range n {
		id, err := p.Put(fmt.Appendf(nil, "%s %d", prefix, i), pipes.WithPacketType(3))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

// History returns every logged packet of p, checking that LogIDs run 0,
// 1, 2, ... and that each sender's packets are in sequence order.
func History(t testing.TB, p *pipes.Pipeline) []*pipes.Packet {
	t.Helper()
	var out []*pipes.Packet
	last := map[pipes.NodeID]uint64{}
	for pk, err := range p.PacketsSince(-1) {
		if err != nil {
			t.Fatal(err)
		}
		if pk.LogID() != int64(len(out)) {
			t.Fatalf("LogID %d at position %d", pk.LogID(), len(out))
		}
		if pk.Seq() != last[pk.Sender()]+1 {
			t.Fatalf("sender %s: seq %d after %d", pk.Sender().String()[:8], pk.Seq(), last[pk.Sender()])
		}
		last[pk.Sender()] = pk.Seq()
		out = append(out, pk)
	}
	return out
}

// IDSet returns the packet ids of pks.
func IDSet(pks []*pipes.Packet) map[pipes.PacketID]bool {
	s := map[pipes.PacketID]bool{}
	for _, pk := range pks {
		s[pk.ID()] = true
	}
	return s
}

// Converged waits until every member's log of id holds want packets, the
// same set everywhere.
func Converged(t testing.TB, ms []*Member, id pipes.PipelineID, want int) {
	t.Helper()
	Eventually(t, 90*time.Second, "logs converge", func() error {
		var counts []string
		ok := true
		for _, m := range ms {
			p, err := m.N.Pipeline(id)
			if err != nil {
				return err
			}
			s := p.Stats()
			counts = append(counts, fmt.Sprintf("%s: %d (syncing %v)", m.N.Location(), s.Logged, s.Synchronizing))
			ok = ok && s.Logged == int64(want)
		}
		if !ok {
			return fmt.Errorf("want %d packets everywhere, have %v", want, counts)
		}
		return nil
	})
	var ref map[pipes.PacketID]bool
	for _, m := range ms {
		p, _ := m.N.Pipeline(id)
		s := IDSet(History(t, p))
		if ref == nil {
			ref = s
			continue
		}
		for pid := range ref {
			if !s[pid] {
				t.Fatalf("%s lacks packet %s", m.N.Location(), pid)
			}
		}
	}
}
