package pipeline

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/pipesnet/pipes/internal/identity"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/kinds"
	"github.com/pipesnet/pipes/internal/store"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

// FuzzSync feeds arbitrary sync messages to an engine with a persistent
// pipeline: nothing may panic.
func FuzzSync(f *testing.F) {
	e, d, ident := persistentEngine(f)
	// Another member's signed packets, as a peer would serve them.
	okey, _ := identity.Generate()
	ocert, _ := identity.IssueCert(ident, "o", okey.Public, testNet, "", time.Now())
	var pids []ids.Packet
	var pks []*pb.Packet
	for s := uint64(1); s <= 3; s++ {
		pks = append(pks, &pb.Packet{Seq: s, Hlc: int64(s), Data: []byte{byte(s)}})
		pids = append(pids, packetID(d.ID, ocert.NodeID(), s, int64(s), 0, [32]byte{}, false, []byte{byte(s)}))
	}
	seg := &pb.SyncSegment{FirstSeq: 1, PrefixIds: [][]byte{pids[0][:]}, Packets: pks[1:], Signature: signBatch(okey, pids)}
	for _, m := range []*pb.Sync{
		{Body: &pb.Sync_Data{Data: &pb.SyncData{Pipeline: d.ID[:], NodeCert: ocert.Signed, Segments: []*pb.SyncSegment{seg}, Last: true, Head: 3}}},
		{Body: &pb.Sync_Offer{Offer: &pb.SyncOffer{Pipeline: d.ID[:], Heads: []*pb.SyncHead{{Sender: pids[0][:], Seq: 9}}, WantReply: true}}},
		{Body: &pb.Sync_Want{Want: &pb.SyncWant{Pipeline: d.ID[:], Sender: pids[0][:], From: 1, To: 9, Request: 1}}},
		{Body: &pb.Sync_Digest{Digest: &pb.SyncDigest{Pipelines: []*pb.SyncHash{{Pipeline: d.ID[:], Hash: pids[1][:]}}}}},
	} {
		b, _ := proto.Marshal(m)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		e.handleRouted(routedMsg{src: ocert.NodeID(), kind: kinds.Sync, payload: data})
	})
}

// TestSyncDataIsVerified: a served segment is logged only if the batch
// signature covers it; a tampered or re-numbered one is refused and
// counted.
func TestSyncDataIsVerified(t *testing.T) {
	e, d, ident := persistentEngine(t)
	okey, _ := identity.Generate()
	ocert, _ := identity.IssueCert(ident, "o", okey.Public, testNet, "", time.Now())
	segment := func() *pb.SyncSegment {
		var pids []ids.Packet
		var pks []*pb.Packet
		for s := uint64(1); s <= 3; s++ {
			pks = append(pks, &pb.Packet{Seq: s, Hlc: int64(s), Data: []byte{byte(s)}})
			pids = append(pids, packetID(d.ID, ocert.NodeID(), s, int64(s), 0, [32]byte{}, false, []byte{byte(s)}))
		}
		return &pb.SyncSegment{FirstSeq: 1, Packets: pks, Signature: signBatch(okey, pids)}
	}
	send := func(seg *pb.SyncSegment) error {
		b, _ := proto.Marshal(&pb.Sync{Body: &pb.Sync_Data{Data: &pb.SyncData{Pipeline: d.ID[:], NodeCert: ocert.Signed, Segments: []*pb.SyncSegment{seg}}}})
		return e.handleRouted(routedMsg{src: ocert.NodeID(), kind: kinds.Sync, payload: b})
	}
	tampered := segment()
	tampered.Packets[1].Data = []byte("forged")
	renumbered := segment()
	renumbered.FirstSeq = 2
	for name, seg := range map[string]*pb.SyncSegment{"tampered": tampered, "renumbered": renumbered} {
		if err := send(seg); err == nil {
			t.Fatalf("%s segment accepted", name)
		}
	}
	if s := e.PipelineStats(d.ID); s.Rejected != 2 {
		t.Fatalf("rejected %d, want 2", s.Rejected)
	}
	if err := send(segment()); err != nil {
		t.Fatal(err)
	}
	l, _ := e.Log(d.ID)
	deadline := time.Now().Add(10 * time.Second)
	for l.Next() < 3 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if l.Next() != 3 || l.Head(ocert.NodeID()) != 3 {
		t.Fatalf("logged %d packets, head %d; want 3", l.Next(), l.Head(ocert.NodeID()))
	}
}

// TestScheduleSpreadsOverPeers: with three peers that have a long history
// the node lacks, the chunks it asks for go to all three, least loaded
// first, at most wantsPerPeer at a time each.
func TestScheduleSpreadsOverPeers(t *testing.T) {
	e, d, _ := persistentEngine(t)
	p, _ := e.pipeOf(d.ID)
	sender := [32]byte{42}
	const total = 20 * wantChunk
	peers := [][32]byte{{1}, {2}, {3}}
	done := make(chan struct{})
	e.syncer.do(func() { // on the sync loop, which owns the state
		defer close(done)
		for _, peer := range peers {
			p.sync.peers[peer] = map[ids.Node]uint64{sender: total}
		}
		e.syncer.schedule(p, time.Now())
	})
	<-done
	src := e.SyncSources(d.ID)
	if len(src) != 3 {
		t.Fatalf("asked %d peers, want 3: %v", len(src), src)
	}
	for _, peer := range peers {
		if src[peer] != wantsPerPeer {
			t.Fatalf("asked %x %d times, want %d", peer[:1], src[peer], wantsPerPeer)
		}
	}
	if !e.Synchronizing(d.ID) {
		t.Fatal("not synchronizing with chunks in flight")
	}
}

// persistentEngine starts an engine with a store and a persistent
// pipeline "p", both closed when tb ends. It returns the identity that
// issued the engine's certificate, for other members' certificates.
func persistentEngine(tb testing.TB) (*Engine, *Def, *identity.KeyPair) {
	tb.Helper()
	ident, _ := identity.Generate()
	key, _ := identity.Generate()
	cert, _ := identity.IssueCert(ident, "a", key.Public, testNet, "", time.Now())
	hk, _ := kem.GenerateKey()
	db, err := store.Open(tb.TempDir(), store.Options{MinFreeBytes: -1})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	fn := &fakeNet{engines: map[[32]byte]*Engine{}, keys: map[[32]byte][]byte{}}
	e, err := New(Config{Network: testNet, Key: key, Cert: cert, HPKE: hk, Host: &fakeHost{net: fn, self: cert.NodeID()}, DB: db})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(e.Close)
	d, err := e.Create(tb.Context(), "p", Options{Persistent: true}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return e, d, ident
}
