package pipeline

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/pipesnet/pipes/internal/history"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/keys"
	"github.com/pipesnet/pipes/internal/kinds"
	"github.com/pipesnet/pipes/internal/store"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

// notesFake is the engine and the mesh as the notes part sees them
// (notesEnv, notesHost).
type notesFake struct {
	mu      sync.Mutex
	pipes   map[[32]byte]*pipe
	notes   []*pb.PipelineNotes // sendNotes
	applied []*pb.Tombstone     // applyTomb
	sealed  [][32]byte          // sendSealed destinations
	sealErr error
	sent    []*pb.PipelineNotes // Send (kinds.Notes)
	online  map[[32]byte]bool
}

func (f *notesFake) pipeOf(id ids.Pipeline) (*pipe, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.pipes[id]
	return p, p != nil
}

func (f *notesFake) pipesNow() []*pipe {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*pipe
	for _, p := range f.pipes {
		out = append(out, p)
	}
	return out
}

func (f *notesFake) applyTomb(t *pb.Tombstone) {
	f.mu.Lock()
	f.applied = append(f.applied, t)
	f.mu.Unlock()
}

func (f *notesFake) sendNotes(d *Def, n *pb.PipelineNotes) error {
	f.mu.Lock()
	f.notes = append(f.notes, n)
	f.mu.Unlock()
	return nil
}

func (f *notesFake) sendSealed(ctx context.Context, dst ids.Node, body []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sealErr != nil {
		return f.sealErr
	}
	f.sealed = append(f.sealed, dst)
	return nil
}

func (f *notesFake) Send(ctx context.Context, dst ids.Node, kind uint32, payload []byte) error {
	if kind != kinds.Notes {
		return errors.New("not notes")
	}
	var n pb.PipelineNotes
	if err := proto.Unmarshal(payload, &n); err != nil {
		return err
	}
	f.mu.Lock()
	f.sent = append(f.sent, &n)
	f.mu.Unlock()
	return nil
}

func (f *notesFake) HPKEKey(node ids.Node) ([]byte, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return []byte{1}, f.online[node]
}

// testDB opens a store in dir, closed when t ends.
func testDB(t *testing.T, dir string) *store.DB {
	t.Helper()
	db, err := store.Open(dir, store.Options{MinFreeBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// newTestNotes makes the notes part of node self on db (nil: nothing
// stored), with the at-rest keys derived from storeKey.
func newTestNotes(t *testing.T, self [32]byte, db *store.DB, storeKey [32]byte) (*notesPart, *notesFake) {
	f := &notesFake{pipes: map[[32]byte]*pipe{}, online: map[[32]byte]bool{}}
	n := (&notesPart{self: self, ctx: t.Context(), log: slog.New(slog.DiscardHandler), env: f, host: f, db: db,
		secretsKey: history.DeriveKey(storeKey, keys.PipelineKeys, nil),
		tombsKey:   history.DeriveKey(storeKey, keys.Definitions, nil), rejected: &atomic.Uint64{}}).init()
	n.load()
	return n, f
}

func unknown(ids.Pipeline) bool { return false }

// TestNotesTombstonesStoredAndReloaded: tombstones stored by the notes
// part are there after the store is reopened (this node's point-to-point
// ones queued again for their other node), not under another store key,
// and gone once forgotten.
func TestNotesTombstonesStoredAndReloaded(t *testing.T) {
	dir := t.TempDir()
	self, other := [32]byte{1}, [32]byte{2}
	sk := [32]byte{3}
	db := testDB(t, dir)
	n, _ := newTestNotes(t, self, db, sk)
	bcast := &pb.Tombstone{Pipeline: bytesOf(10), TimeMs: 100, Node: other[:]}
	mine := &pb.Tombstone{Pipeline: bytesOf(11), TimeMs: 200, Node: self[:], Peer: other[:]}
	theirs := &pb.Tombstone{Pipeline: bytesOf(12), TimeMs: 300, Node: other[:], Peer: self[:]}
	for _, tb := range []*pb.Tombstone{bcast, mine, theirs} {
		if stale, refused := n.recordTomb(tb, unknown); stale || refused {
			t.Fatalf("tombstone not recorded: stale %v refused %v", stale, refused)
		}
		n.storeTomb(tb)
	}
	db.Close()

	db = testDB(t, dir)
	n2, _ := newTestNotes(t, self, db, sk)
	for _, tb := range []*pb.Tombstone{bcast, mine, theirs} {
		got := n2.tomb([32]byte(tb.Pipeline))
		if got == nil || !proto.Equal(got, tb) {
			t.Fatalf("tombstone %x after reopening: %v, want %v", tb.Pipeline[:1], got, tb)
		}
	}
	if len(n2.mu.tombsOut) != 1 || n2.mu.tombsOut[[32]byte(mine.Pipeline)] == nil {
		t.Fatalf("%d tombstones queued for their other node, want only this node's point-to-point one", len(n2.mu.tombsOut))
	}
	if wrong, _ := newTestNotes(t, self, db, [32]byte{4}); wrong.tomb([32]byte(bcast.Pipeline)) != nil {
		t.Fatal("a tombstone opened under another store key")
	}
	if otherNode, _ := newTestNotes(t, other, db, sk); otherNode.tomb([32]byte(bcast.Pipeline)) != nil {
		t.Fatal("another node's records were loaded")
	}

	n2.forgetTomb([32]byte(bcast.Pipeline))
	n3, _ := newTestNotes(t, self, db, sk)
	if n3.tomb([32]byte(bcast.Pipeline)) != nil || n3.tomb([32]byte(mine.Pipeline)) == nil {
		t.Fatal("forgetTomb deleted the wrong tombstones")
	}
}

func bytesOf(b byte) []byte { id := [32]byte{b}; return id[:] }

// TestNotesTombstoneBounds: an older tombstone than the one kept is
// stale; tombstones of unknown pipelines stop at maxUnknownTombs, while
// those of known pipelines, and newer ones of pipelines already
// tombstoned, are still taken.
func TestNotesTombstoneBounds(t *testing.T) {
	n, _ := newTestNotes(t, [32]byte{1}, nil, [32]byte{})
	id := func(i int) []byte { b := [32]byte{byte(i), byte(i >> 8), 0xaa}; return b[:] }
	if stale, _ := n.recordTomb(&pb.Tombstone{Pipeline: id(0), TimeMs: 50}, unknown); stale {
		t.Fatal("first tombstone stale")
	}
	if stale, _ := n.recordTomb(&pb.Tombstone{Pipeline: id(0), TimeMs: 50}, unknown); !stale {
		t.Fatal("a tombstone as old as the one kept was taken")
	}
	for i := 1; i < maxUnknownTombs; i++ {
		if _, refused := n.recordTomb(&pb.Tombstone{Pipeline: id(i), TimeMs: 1}, unknown); refused {
			t.Fatalf("tombstone %d of %d refused", i, maxUnknownTombs)
		}
	}
	if _, refused := n.recordTomb(&pb.Tombstone{Pipeline: id(maxUnknownTombs), TimeMs: 1}, unknown); !refused {
		t.Fatal("a tombstone beyond maxUnknownTombs was taken")
	}
	known := id(maxUnknownTombs + 1)
	if _, refused := n.recordTomb(&pb.Tombstone{Pipeline: known, TimeMs: 1}, func(p ids.Pipeline) bool { return p == [32]byte(known) }); refused {
		t.Fatal("the tombstone of a known pipeline was refused")
	}
	if stale, refused := n.recordTomb(&pb.Tombstone{Pipeline: id(0), TimeMs: 60}, unknown); stale || refused {
		t.Fatal("a newer tombstone of a tombstoned pipeline was not taken")
	}
	if n.tomb([32]byte(id(0))).TimeMs != 60 {
		t.Fatal("the newer tombstone does not replace the older")
	}
}

// encPipe is an encrypted broadcast pipeline's state with a random key,
// and that key.
func encPipe(t *testing.T, idByte byte) (*pipe, *pipeKey) {
	var raw [32]byte
	rand.Read(raw[:])
	k := keyFromRaw(raw)
	d := &Def{ID: [32]byte{idByte, 0xcc}, Name: "enc", Opts: Options{Encrypted: true}, SecretKey: k.public()}
	return newPipe(t.Context(), d), k
}

// TestNotesSecretStoredAndLoaded: a key given to the part is stored
// sealed and loaded again, announced once with a proof that checks, and
// makes this node a holder; forgetKey forgets it.
func TestNotesSecretStoredAndLoaded(t *testing.T) {
	dir := t.TempDir()
	self := [32]byte{1}
	sk := [32]byte{3}
	db := testDB(t, dir)
	n, f := newTestNotes(t, self, db, sk)
	p, k := encPipe(t, 1)
	n.setKey(p, k, true)
	n.setKey(p, k, true)
	if got, ok := n.storedKey(p.def.ID); !ok || got != k.raw {
		t.Fatal("the key is not kept")
	}
	if len(f.notes) != 1 || len(f.notes[0].Proofs) != 1 {
		t.Fatalf("%d announcements, want 1 with one proof", len(f.notes))
	}
	if pr := f.notes[0].Proofs[0]; [32]byte(pr.Node) != self || !checkProof(p.def, self, pr.Signature) {
		t.Fatal("the announced proof does not check")
	}
	if h := n.holdersOf(p); len(h) != 1 || h[0] != self {
		t.Fatalf("holders %v, want this node", h)
	}
	db.Close()

	db = testDB(t, dir)
	n2, _ := newTestNotes(t, self, db, sk)
	if got, ok := n2.storedKey(p.def.ID); !ok || got != k.raw {
		t.Fatal("the stored key is not loaded after reopening")
	}
	if wrong, _ := newTestNotes(t, self, db, [32]byte{4}); len(wrong.mu.secrets) != 0 {
		t.Fatal("a key opened under another store key")
	}
	n2.forgetKey(p.def.ID)
	if _, ok := n2.storedKey(p.def.ID); ok {
		t.Fatal("forgetKey kept the key")
	}
}

// TestNotesPendingProofsBounded: proofs for pipelines not defined yet are
// kept up to maxPendingProofs, handed over once (takeProofs), and then
// make holders only if they check.
func TestNotesPendingProofsBounded(t *testing.T) {
	n, f := newTestNotes(t, [32]byte{1}, nil, [32]byte{})
	p, k := encPipe(t, 7)
	other := [32]byte{9}
	good := &pb.SecretProof{Pipeline: p.def.ID[:], Node: other[:], Signature: k.proveFor(p.def.ID, other)}
	forged := &pb.SecretProof{Pipeline: p.def.ID[:], Node: bytesOf(8), Signature: k.proveFor(p.def.ID, other)}
	filler := func(id [32]byte, count int) *pb.PipelineNotes {
		var in pb.PipelineNotes
		for range count {
			in.Proofs = append(in.Proofs, &pb.SecretProof{Pipeline: id[:], Node: other[:], Signature: make([]byte, 64)})
		}
		return &in
	}
	n.handle(other, &pb.PipelineNotes{Proofs: []*pb.SecretProof{good, forged}}, false)
	n.handle(other, filler([32]byte{5}, maxPendingProofs-10), false)
	n.handle(other, filler([32]byte{6}, 20), false)
	if n.mu.nproofs != maxPendingProofs {
		t.Fatalf("%d proofs kept, want the bound %d", n.mu.nproofs, maxPendingProofs)
	}
	if got := len(n.takeProofs([32]byte{6})); got != 8 {
		t.Fatalf("%d proofs of the last pipeline kept, want the 8 that fit", got)
	}
	proofs := n.takeProofs(p.def.ID)
	if len(proofs) != 2 || len(n.takeProofs(p.def.ID)) != 0 {
		t.Fatalf("proofs of the pipeline: %d, then again: want 2, then 0", len(proofs))
	}
	if n.mu.nproofs != maxPendingProofs-10 {
		t.Fatalf("%d proofs counted after taking, want %d", n.mu.nproofs, maxPendingProofs-10)
	}

	f.pipes[p.def.ID] = p
	for _, pr := range proofs {
		n.addProof(p, pr)
	}
	if h := n.holdersOf(p); len(h) != 1 || h[0] != other || n.rejected.Load() != 1 {
		t.Fatalf("holders %v, rejected %d: want the good proof's node, and the forged one rejected", h, n.rejected.Load())
	}
	// A proof for a known pipeline goes to it at once.
	third := [32]byte{10}
	n.handle(third, &pb.PipelineNotes{Proofs: []*pb.SecretProof{{Pipeline: p.def.ID[:], Node: third[:], Signature: k.proveFor(p.def.ID, third)}}}, false)
	if len(n.holdersOf(p)) != 2 || len(n.takeProofs(p.def.ID)) != 0 {
		t.Fatal("a proof of a known pipeline was not applied at once")
	}
}

// TestNotesTombstoneSources: a point-to-point tombstone is applied only
// sealed, from the pipeline's other node, and addressed to this node; a
// broadcast one is not applied to a point-to-point pipeline.
func TestNotesTombstoneSources(t *testing.T) {
	self, other, stranger := [32]byte{1}, [32]byte{2}, [32]byte{3}
	n, f := newTestNotes(t, self, nil, [32]byte{})
	p2p := newPipe(t.Context(), &Def{ID: [32]byte{20}, Opts: Options{Ephemeral: true, ToNode: other}, A: self, B: other})
	f.pipes[p2p.def.ID] = p2p
	tomb := func(node, peer [32]byte) *pb.Tombstone {
		tb := &pb.Tombstone{Pipeline: p2p.def.ID[:], TimeMs: 5, Node: node[:]}
		if peer != ([32]byte{}) {
			tb.Peer = peer[:]
		}
		return tb
	}
	cases := []struct {
		what   string
		src    [32]byte
		t      *pb.Tombstone
		sealed bool
	}{
		{"not sealed", other, tomb(other, self), false},
		{"from a stranger", stranger, tomb(stranger, self), true},
		{"naming another sender", other, tomb(stranger, self), true},
		{"for another node", other, tomb(other, stranger), true},
		{"broadcast, on a point-to-point pipeline", other, tomb(other, [32]byte{}), true},
	}
	for _, c := range cases {
		n.handle(c.src, &pb.PipelineNotes{Tombstones: []*pb.Tombstone{c.t}}, c.sealed)
		if len(f.applied) != 0 {
			t.Fatalf("tombstone %s applied", c.what)
		}
	}
	n.handle(other, &pb.PipelineNotes{Tombstones: []*pb.Tombstone{tomb(other, self)}}, true)
	if len(f.applied) != 1 {
		t.Fatal("the other node's sealed tombstone was not applied")
	}
}

// TestNotesPendingTombstones: this node's point-to-point tombstone waits
// until its other node is online and the sealed send succeeds, and is
// then sent once.
func TestNotesPendingTombstones(t *testing.T) {
	self, other := [32]byte{1}, [32]byte{2}
	n, f := newTestNotes(t, self, nil, [32]byte{})
	n.queueTomb(&pb.Tombstone{Pipeline: bytesOf(30), TimeMs: 1, Node: self[:], Peer: other[:]})
	n.sendPending()
	if len(f.sealed) != 0 || len(n.mu.tombsOut) != 1 {
		t.Fatal("sent to a node that is not online, or forgotten")
	}
	f.online[other] = true
	f.sealErr = errors.New("busy")
	n.sendPending()
	if len(n.mu.tombsOut) != 1 {
		t.Fatal("forgotten although the send failed")
	}
	f.sealErr = nil
	n.sendPending()
	n.sendPending()
	if len(f.sealed) != 1 || f.sealed[0] != other || len(n.mu.tombsOut) != 0 {
		t.Fatalf("sent %d times, %d still queued: want once, to the other node, none", len(f.sealed), len(n.mu.tombsOut))
	}
}

// TestNotesSentToNewPeer: a new peer gets the broadcast tombstones (not
// the point-to-point ones) and the proofs of the broadcast encrypted
// pipelines' holders, this node's own included.
func TestNotesSentToNewPeer(t *testing.T) {
	self, other := [32]byte{1}, [32]byte{2}
	n, f := newTestNotes(t, self, nil, [32]byte{})
	n.recordTomb(&pb.Tombstone{Pipeline: bytesOf(40), TimeMs: 1, Node: other[:]}, unknown)
	n.recordTomb(&pb.Tombstone{Pipeline: bytesOf(41), TimeMs: 1, Node: other[:], Peer: self[:]}, unknown)
	p, k := encPipe(t, 42)
	f.pipes[p.def.ID] = p
	n.setKey(p, k, false)
	n.addProof(p, &pb.SecretProof{Pipeline: p.def.ID[:], Node: other[:], Signature: k.proveFor(p.def.ID, other)})
	n.sendTo([32]byte{7})
	if len(f.sent) != 1 {
		t.Fatalf("%d messages sent, want 1", len(f.sent))
	}
	m := f.sent[0]
	if len(m.Tombstones) != 1 || [32]byte(m.Tombstones[0].Pipeline) != [32]byte(bytesOf(40)) {
		t.Fatalf("tombstones sent: %v, want the broadcast one only", m.Tombstones)
	}
	nodes := map[[32]byte]bool{}
	for _, pr := range m.Proofs {
		if checkProof(p.def, [32]byte(pr.Node), pr.Signature) {
			nodes[[32]byte(pr.Node)] = true
		}
	}
	if len(m.Proofs) != 2 || !nodes[self] || !nodes[other] {
		t.Fatalf("%d proofs sent, checking for %d nodes: want this node's and the other's", len(m.Proofs), len(nodes))
	}
}
