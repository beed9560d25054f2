package files

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pipesnet/pipes/internal/identity"
	"github.com/pipesnet/pipes/internal/ids"
)

func archiveDuty() *duty {
	return &duty{kind: dutyArchive, file: ids.Content{4}, setAt: 100, data: 3, parity: 2, compressed: true,
		restricted: true, size: 1000, payload: 700, shardSize: 234, name: "a.bin",
		shards: []ids.Content{{1}, {2}, {3}, {4}, {5}}}
}

// A duty decodes to what was encoded, and its setter is the key's node.
func TestDutyRoundTrip(t *testing.T) {
	k, node := keyPair(t)
	now := time.Unix(0, 1000)
	for _, d := range []*duty{{kind: dutyCopies, file: ids.Content{1}, setAt: 7, copies: 3}, archiveDuty()} {
		b := encodeDuty(k, testNetwork, d)
		got, err := decodeDuty(b, testNetwork, now)
		if err != nil {
			t.Fatal(err)
		}
		if got.setter != node || got.kind != d.kind || got.file != d.file || got.setAt != d.setAt ||
			got.copies != d.copies || got.data != d.data || got.parity != d.parity || got.compressed != d.compressed || got.restricted != d.restricted ||
			got.size != d.size || got.payload != d.payload || got.shardSize != d.shardSize || got.name != d.name ||
			len(got.shards) != len(d.shards) || !bytes.Equal(got.raw, b) {
			t.Fatalf("decoded %+v, encoded %+v", got, d)
		}
	}
}

// Altered, of another network, set in the future, malformed: refused.
func TestDutyRefused(t *testing.T) {
	k, _ := keyPair(t)
	now := time.Unix(0, 1000)
	b := encodeDuty(k, testNetwork, archiveDuty())
	bad := bytes.Clone(b)
	bad[len(bad)-70] ^= 1 // a shard id
	if _, err := decodeDuty(bad, testNetwork, now); !errors.Is(err, ErrForged) {
		t.Errorf("altered: %v", err)
	}
	if _, err := decodeDuty(b, [32]byte{1}, now); !errors.Is(err, ErrForged) {
		t.Errorf("of another network: %v", err)
	}
	future := &duty{kind: dutyCopies, file: ids.Content{1}, setAt: uint64(now.Add(time.Hour).UnixNano()), copies: 1}
	if _, err := decodeDuty(encodeDuty(k, testNetwork, future), testNetwork, now); !errors.Is(err, ErrMalformed) {
		t.Errorf("set in the future: %v", err)
	}
	many := &duty{kind: dutyCopies, file: ids.Content{1}, setAt: 1, copies: MaxCopies + 1}
	if _, err := decodeDuty(encodeDuty(k, testNetwork, many), testNetwork, now); !errors.Is(err, ErrOversize) {
		t.Errorf("too many copies: %v", err)
	}
	sizes := archiveDuty()
	sizes.shardSize++
	if _, err := decodeDuty(encodeDuty(k, testNetwork, sizes), testNetwork, now); !errors.Is(err, ErrMalformed) {
		t.Errorf("a shard size that does not follow: %v", err)
	}
	if _, err := decodeDuty(b[:len(b)-1], testNetwork, now); err == nil {
		t.Error("a truncated duty decoded")
	}
	if _, err := decodeDuty(make([]byte, maxDutyBytes+1), testNetwork, now); !errors.Is(err, ErrOversize) {
		t.Errorf("oversize: %v", err)
	}
}

// Last writer wins per file and kind; a full table refuses new files but
// takes updates.
func TestDutiesLastWriterWins(t *testing.T) {
	k, _ := keyPair(t)
	tb := newDuties()
	mk := func(at uint64, copies int) *duty {
		d := &duty{kind: dutyCopies, file: ids.Content{1}, setAt: at, copies: copies}
		encodeDuty(k, testNetwork, d)
		return d
	}
	if !tb.apply(mk(10, 2)) || tb.get(dutyCopies, ids.Content{1}).copies != 2 {
		t.Fatal("the first duty was not kept")
	}
	if tb.apply(mk(5, 4)) || tb.get(dutyCopies, ids.Content{1}).copies != 2 {
		t.Fatal("an older duty won")
	}
	if !tb.apply(mk(11, 0)) || tb.get(dutyCopies, ids.Content{1}) != nil || tb.slot(dutyCopies, ids.Content{1}) == nil {
		t.Fatal("the tombstone did not end the duty, or was not kept")
	}
	if got := tb.expired(time.Unix(0, 11).Add(tombstoneFor + time.Second)); len(got) != 1 {
		t.Fatalf("%d tombstones expired", len(got))
	}
	a := archiveDuty()
	encodeDuty(k, testNetwork, a)
	tb.apply(a)
	if d, i, ok := tb.shardOf(ids.Content{3}); !ok || i != 2 || d.file != a.file {
		t.Fatalf("shard 2: %v %d %v", d, i, ok)
	}
	for i := range MaxDuties {
		d := &duty{kind: dutyCopies, file: ids.Content{byte(i), byte(i >> 8), 7}, setAt: 1, copies: 1}
		encodeDuty(k, testNetwork, d)
		tb.apply(d)
	}
	if n := len(tb.all()); n != MaxDuties {
		t.Fatalf("%d duties kept, at most %d", n, MaxDuties)
	}
	upd := &duty{kind: dutyArchive, file: a.file, setAt: 200, data: 1, parity: 0, shardSize: 0, shards: []ids.Content{{9}}}
	encodeDuty(k, testNetwork, upd)
	if !tb.apply(upd) {
		t.Fatal("a full table refused an update")
	}
	if _, _, ok := tb.shardOf(ids.Content{3}); ok {
		t.Fatal("the replaced archive's shards are still known")
	}
}

// A duty set by Replicate is broadcast, stored, and found again by the
// service of the next run.
func TestDutyPersisted(t *testing.T) {
	h := newFakeHost(t)
	s := New(Config{})
	if err := s.Start(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	id, err := s.AddReader(ctx, "f", bytes.NewReader([]byte("kept")), AddOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Replicate(ctx, id, 1); err != nil {
		t.Fatal(err)
	}
	if err := s.Replicate(ctx, id, 2); !errors.Is(err, ErrTooFewNodes) {
		t.Fatalf("Replicate(2) on one node: %v", err)
	}
	var sent *duty
	for _, b := range h.broadcasts() {
		if d, err := decodeDuty(b, testNetwork, time.Now()); err == nil {
			sent = d
		}
	}
	if sent == nil || sent.copies != 2 || sent.file != id || sent.setter != h.Self() {
		t.Fatalf("broadcast duty %+v", sent)
	}
	s.Close()
	s2 := New(Config{})
	if err := s2.Start(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	st, err := s2.Stat(ctx, id)
	if err != nil || st.Copies != 2 {
		t.Fatalf("after a restart: copies %d, %v", st.Copies, err)
	}
	// Remove ends this node's duty to hold it, across a restart too,
	// until the user adds it again.
	if err := s2.Remove(ctx, id); err != nil {
		t.Fatal(err)
	}
	s2.Close()
	s3 := New(Config{})
	if err := s3.Start(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	defer s3.Close()
	if !s3.rep.isExcluded(id) {
		t.Fatal("the removal was forgotten in the restart")
	}
	if _, err := s3.AddReader(ctx, "f", bytes.NewReader([]byte("kept")), AddOptions{}); err != nil {
		t.Fatal(err)
	}
	if s3.rep.isExcluded(id) {
		t.Fatal("adding the file again did not end its exclusion")
	}
}

// The decoder never panics, and what it accepts encodes the same way.
func FuzzDecodeDuty(f *testing.F) {
	k, err := identity.Generate()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(encodeDuty(k, testNetwork, &duty{kind: dutyCopies, file: ids.Content{1}, setAt: 1, copies: 3}))
	f.Add(encodeDuty(k, testNetwork, archiveDuty()))
	f.Add([]byte{dutyVersion, dutyArchive})
	now := time.Unix(0, 1<<62)
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := decodeDuty(b, testNetwork, now)
		if err != nil {
			return
		}
		if !bytes.Equal(d.raw, b) || d.data+d.parity > MaxShards || len(d.name) > MaxName || d.copies > MaxCopies {
			t.Fatalf("accepted %+v", d)
		}
	})
}
