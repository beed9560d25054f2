package pipeline

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/pipesnet/pipes/internal/blob"
	"github.com/pipesnet/pipes/internal/history"
	"github.com/pipesnet/pipes/internal/identity"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/store"
	"github.com/pipesnet/pipes/internal/testutil"
)

// persistentNet is a fake network of n engines, each with its own store.
// gate, if set, is every engine's writer gate (Config.testWriterGate).
func persistentNet(t *testing.T, n int, gate func(self, pipe [32]byte)) (*fakeNet, []testNode) {
	t.Helper()
	return persistentNetWith(t, n, gate, nil)
}

// persistentNetWith is persistentNet; transfer, if set, gives engine i
// its Config.Files.
func persistentNetWith(t *testing.T, n int, gate func(self, pipe [32]byte), transfer func(i int) FileTransfer) (*fakeNet, []testNode) {
	t.Helper()
	fn := &fakeNet{engines: map[[32]byte]*Engine{}, keys: map[[32]byte][]byte{}}
	ident, _ := identity.Generate()
	var nodes []testNode
	for i := range n {
		key, _ := identity.Generate()
		cert, err := identity.IssueCert(ident, fmt.Sprintf("n%d", i), key.Public, testNet, "", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		hk, _ := kem.GenerateKey()
		db, err := store.Open(t.TempDir(), store.Options{MinFreeBytes: -1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		blobs, err := blob.Open(t.TempDir(), [32]byte{byte(i)})
		if err != nil {
			t.Fatal(err)
		}
		id := cert.NodeID()
		cfg := Config{Network: testNet, Key: key, Cert: cert, HPKE: hk, Host: &fakeHost{net: fn, self: id}, DB: db, Blobs: blobs}
		if gate != nil {
			cfg.testWriterGate = func(pipe ids.Pipeline) { gate(id, pipe) }
		}
		if transfer != nil {
			cfg.Files = transfer(i)
		}
		e, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(e.Close)
		fn.mu.Lock()
		fn.engines[id] = e
		fn.keys[id] = hk.PublicKey().Bytes()
		fn.mu.Unlock()
		nodes = append(nodes, testNode{e: e, id: id, key: key, cert: cert})
	}
	return fn, nodes
}

// logHistory writes n packets of its own, one signed batch each, straight
// into e's log of pipeline id: the history e built while the other node
// was offline.
func logHistory(t *testing.T, n testNode, id [32]byte, count int) {
	t.Helper()
	l, err := n.e.Log(id)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := proto.Marshal(n.cert.Signed)
	var recs []*history.Record
	var proofs []history.Proof
	for s := uint64(1); s <= uint64(count); s++ {
		data := []byte(fmt.Sprintf("old %d", s))
		pid := packetID(id, n.id, s, int64(s), 0, [32]byte{}, false, data)
		recs = append(recs, &history.Record{ID: pid, Sender: n.id, Seq: s, HLC: int64(s), Data: data})
		pr := history.Proof{Sender: n.id, FirstSeq: s, LastSeq: s, Signature: signBatch(n.key, []ids.Packet{pid})}
		if s == 1 {
			pr.Cert = cert
		}
		proofs = append(proofs, pr)
	}
	if err := l.Append(recs, proofs); err != nil {
		t.Fatal(err)
	}
}

// TestCatchUpDoesNotStallOtherPipelines: node b catches up a long history
// of a persistent point-to-point pipeline (one signed batch per packet,
// more than a pipeline's writer queue holds) while its writer for that
// pipeline is held; packets of a live point-to-point pipeline, which come
// to b on the same routed path, must still arrive, and so must a file
// packet. Nothing is timed: the
// writer is let go only once the live packets have arrived, so a routed
// path that waits for the writer never delivers them.
func TestCatchUpDoesNotStallOtherPipelines(t *testing.T) {
	const history = 2 * writerQueue
	var catchUp atomic.Pointer[ids.Pipeline]
	release := make(chan struct{})
	var held atomic.Bool
	var gated atomic.Pointer[[32]byte] // b
	_, nodes := persistentNet(t, 2, func(self, pipe [32]byte) {
		// Only b's writer of the history pipeline is held.
		if id := catchUp.Load(); id != nil && *id == pipe && gated.Load() != nil && *gated.Load() == self {
			held.Store(true)
			<-release
		}
	})
	a, b := nodes[0], nodes[1]
	gated.Store(&b.id)
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	ctx := t.Context()

	// Both pipelines are created while b is offline: a logs the history.
	pd, err := a.e.Create(ctx, "history", Options{Persistent: true, ToNode: b.id}, nil)
	if err != nil {
		t.Fatal(err)
	}
	wait(t, b.e, pd.ID)
	logHistory(t, a, pd.ID, history)
	catchUp.Store(&pd.ID)
	ld, err := a.e.Create(ctx, "live", Options{ToNode: b.id}, nil)
	if err != nil {
		t.Fatal(err)
	}
	wait(t, b.e, ld.ID)
	got := collect(t, b.e, ld.ID)

	// b learns of a's history (a offers when it sees b online) and asks
	// for it; a serves it all. Once b has taken in the last of it, the
	// writer of the history pipeline is still held.
	bp, _ := b.e.pipeOf(pd.ID)
	testutil.WaitFor(t, "b to take in the whole catch-up, its writer held", func() bool { return answered(b.e, bp) && held.Load() })

	// Live packets travel while the catch-up is not finished.
	const live = 20
	for i := range live {
		if _, err := a.e.Put(ctx, ld.ID, []byte(fmt.Sprintf("live %d", i)), 0, [32]byte{}); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(got(live)); n != live {
		t.Fatalf("%d of %d live packets arrived while another pipeline caught up", n, live)
	}
	// So does a file packet. (Its chunks travel on the file service's data
	// connections, not the routed path: engines alone have none, and the
	// root package's tests move them between real nodes.)
	content := make([]byte, 600<<10)
	rand.Read(content)
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := a.e.PutFile(ctx, ld.ID, path, 0); err != nil {
		t.Fatal(err)
	}
	pks := got(live + 1)
	if len(pks) != live+1 || !pks[live].File {
		t.Fatalf("the file packet did not arrive while another pipeline caught up (%d packets)", len(pks))
	}
	bl, _ := b.e.Log(pd.ID)
	if h := bl.Head(a.id); h >= history {
		t.Fatalf("the catch-up finished (head %d) before the live packets were let through", h)
	}
	close(release)

	// And the catch-up completes.
	testutil.WaitFor(t, "the catch-up to complete", func() bool { return bl.Head(a.id) == history })
}

// answered reports whether a want of p has been answered in full (its last
// SyncData went through the routed worker).
func answered(e *Engine, p *pipe) bool {
	ch := make(chan bool, 1)
	e.syncer.do(func() {
		done := false
		for _, w := range p.sync.wants {
			done = done || w.done
		}
		ch <- done
	})
	select {
	case v := <-ch:
		return v
	case <-e.ctx.Done():
		return false
	}
}
