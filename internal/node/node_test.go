package node

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pipesnet/pipes/internal/identity"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/mesh"
	"github.com/pipesnet/pipes/internal/pipeline"
	"github.com/pipesnet/pipes/internal/portmap"
	"github.com/pipesnet/pipes/internal/store"
	"github.com/pipesnet/pipes/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// network is what the nodes of one test network share.
type network struct {
	id    ids.Network
	key   [32]byte
	ident *identity.KeyPair
}

func newNetwork(t *testing.T) *network {
	t.Helper()
	ident, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return &network{id: ids.Network{1, 2, 3}, key: [32]byte{4, 5, 6}, ident: ident}
}

// testNode is a node's configuration with what the test sees of it.
type testNode struct {
	cfg Config
	db  *store.DB

	mu        sync.Mutex
	pipelines []string     // names OnPipeline reported
	events    []mesh.Event // what OnEvent got
}

// config makes the configuration of a node of nw with its own store
// (real Pebble) in a directory of the test, listening on 127.0.0.1.
func (nw *network) config(t *testing.T, location string, gateways ...string) *testNode {
	t.Helper()
	key, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := identity.IssueCert(nw.ident, "tester", key.Public, nw.id, location, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	db, err := store.Open(filepath.Join(dir, "store"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	tn := &testNode{db: db}
	tn.cfg = Config{
		Key: key, Cert: cert, Network: nw.id, NetworkKey: nw.key, Incarnation: uint64(time.Now().UnixNano()),
		Version: "test", DB: db, StoreKey: [32]byte{7}, BlobDir: filepath.Join(dir, "blobs"),
		HPKEKeyPath: filepath.Join(dir, "hpke.key"), ListenAddrs: []string{"127.0.0.1:0"},
		OfflineAfter: 2 * time.Second, BackoffMin: 100 * time.Millisecond, BackoffMax: time.Second,
		Gateways: func() []string { return gateways },
		OnPipeline: func(d *pipeline.Def) {
			tn.mu.Lock()
			defer tn.mu.Unlock()
			tn.pipelines = append(tn.pipelines, d.Name)
		},
		OnEvent: func(e mesh.Event) {
			tn.mu.Lock()
			defer tn.mu.Unlock()
			tn.events = append(tn.events, e)
		},
	}
	return tn
}

func (tn *testNode) knows(name string) bool {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	return slices.Contains(tn.pipelines, name)
}

// sawOffline reports whether OnEvent told that node id is offline after
// having told it online.
func (tn *testNode) sawOffline(id ids.Node) bool {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	online := false
	for _, e := range tn.events {
		if e.Kind != mesh.EventNode || e.Node.ID != id {
			continue
		}
		if e.Node.Online {
			online = true
		} else if online {
			return true
		}
	}
	return false
}

func isPeer(n *Node, id ids.Node) bool {
	for _, p := range n.Mesh().Peers() {
		if p.ID == id {
			return true
		}
	}
	return false
}

// fakeMapper is a PortMapper that maps nothing at any router: it records
// what the node asks of it and reports a made-up external address.
type fakeMapper struct {
	mu      sync.Mutex
	bound   netip.AddrPort
	hooked  bool
	changed func()
	stopped bool
}

var fakeExternal = netip.MustParseAddrPort("203.0.113.7:4242")

func (f *fakeMapper) Start(bound netip.AddrPort, hook func(*portmap.Config), changed func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bound, f.changed = bound, changed
	if hook != nil {
		var c portmap.Config
		hook(&c)
		f.hooked = c.Description == "hooked"
	}
}

func (f *fakeMapper) External() netip.AddrPort { return fakeExternal }

func (f *fakeMapper) Stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stopped = true
}

// Two nodes started on 127.0.0.1 connect; a pipeline that the first
// defined before the second came reaches the second when it becomes a
// peer (the engine tells new peers, NodeChanged); Close stops the parts in
// the order written in shutdown (the engine is closed while the mesh
// still has its peer), stops the port mapping, and leaves no goroutine.
func TestStartConnectClose(t *testing.T) {
	nw := newNetwork(t)
	a := nw.config(t, "a")
	pm := &fakeMapper{}
	a.cfg.PortMap = pm
	SetTestHooks(a.cfg.Cert.NodeID(), func(h *TestHooks) {
		h.PortMap = func(c *portmap.Config) { c.Description = "hooked" }
	})
	t.Cleanup(func() { SetTestHooks(a.cfg.Cert.NodeID(), func(h *TestHooks) { *h = TestHooks{} }) })
	var readyEngine *pipeline.Engine
	a.cfg.Ready = func(n *Node) { readyEngine = n.Engine() }
	var order []string
	var na *Node
	var early *pipeline.Def
	a.cfg.EngineClosed = func() {
		_, err := na.Engine().Put(context.Background(), early.ID, []byte("late"), 0, [32]byte{})
		if !errors.Is(err, pipeline.ErrClosed) {
			order = append(order, "engine still open")
		}
		if !na.Mesh().Connected() {
			order = append(order, "mesh closed before the engine")
		}
		order = append(order, "engine closed")
	}
	ctx := context.Background()
	na, err := Start(ctx, a.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if readyEngine == nil || readyEngine != na.Engine() {
		t.Fatal("Ready was not called with the node's engine")
	}
	if early, err = na.Engine().Create(ctx, "early", pipeline.Options{}, nil); err != nil {
		t.Fatal(err)
	}
	addr := na.Transport().Addr()
	pm.mu.Lock()
	bound, hooked, changed := pm.bound, pm.hooked, pm.changed
	pm.mu.Unlock()
	if bound != addr || !hooked || changed == nil {
		t.Fatalf("port mapping started with %v, hook applied %v, changed set %v; want %v, true, true", bound, hooked, changed != nil, addr)
	}
	if got := na.advertise(addr); len(got) == 0 || got[0] != fakeExternal.String() {
		t.Fatalf("advertised %v, want the mapped address first", got)
	}

	b := nw.config(t, "b", addr.String())
	nb, err := Start(ctx, b.cfg)
	if err != nil {
		t.Fatal(err)
	}
	idA, idB := na.ID(), nb.ID()
	testutil.WaitFor(t, "the nodes to be peers", func() bool { return isPeer(na, idB) && isPeer(nb, idA) })
	testutil.WaitFor(t, "b to learn a's pipeline", func() bool { return b.knows("early") })

	if err := na.Close(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(order, []string{"engine closed"}) {
		t.Fatalf("shutdown: %v", order)
	}
	pm.mu.Lock()
	stopped := pm.stopped
	pm.mu.Unlock()
	if !stopped {
		t.Fatal("the port mapping was not stopped")
	}
	if err := na.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := nb.Close(); err != nil {
		t.Fatal(err)
	}
	a.db.Close()
	b.db.Close()
	goleak.VerifyNone(t)
}

// A killed node leaves without a word: the other notices it offline, and
// the killed node's goroutines are gone.
func TestKill(t *testing.T) {
	nw := newNetwork(t)
	a := nw.config(t, "a")
	ctx := context.Background()
	na, err := Start(ctx, a.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer na.Close()
	b := nw.config(t, "b", na.Transport().Addr().String())
	nb, err := Start(ctx, b.cfg)
	if err != nil {
		t.Fatal(err)
	}
	idB := nb.ID()
	testutil.WaitFor(t, "a to see b online", func() bool {
		return slices.ContainsFunc(na.Mesh().Nodes(), func(n mesh.NodeInfo) bool { return n.ID == idB })
	})
	if err := nb.Kill(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "a to see b offline", func() bool { return a.sawOffline(idB) })
	if err := nb.Close(); err != nil {
		t.Fatalf("Close after Kill: %v", err)
	}
}

// A start that fails at its last step (the mesh refuses its timings)
// closes what it built before, the engine and the socket among them, and
// leaves no goroutine; the node starts afterwards.
func TestStartFailsCleanly(t *testing.T) {
	nw := newNetwork(t)
	a := nw.config(t, "a")
	good := a.cfg
	a.cfg.Heartbeat = a.cfg.OfflineAfter // the mesh wants two heartbeats per offline period
	a.cfg.EngineClosed = func() { t.Error("EngineClosed called for a node that was never ready") }
	if _, err := Start(context.Background(), a.cfg); err == nil {
		t.Fatal("Start with bad timings succeeded")
	}
	n, err := Start(context.Background(), good)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	a.db.Close()
	goleak.VerifyNone(t)
}

// The read-only reader of a node's store reads the pipelines a run
// stored; on a node that never ran it creates nothing on disk.
func TestReader(t *testing.T) {
	nw := newNetwork(t)
	fresh := nw.config(t, "fresh")
	r0, err := OpenReader(fresh.cfg)
	if err != nil {
		t.Fatal(err)
	}
	r0.Close()
	for _, p := range []string{fresh.cfg.BlobDir, fresh.cfg.HPKEKeyPath} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("reading created %s (%v)", p, err)
		}
	}
	a := nw.config(t, "a")
	ctx := context.Background()
	na, err := Start(ctx, a.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := na.Engine().Create(ctx, "kept", pipeline.Options{Persistent: true}, nil); err != nil {
		t.Fatal(err)
	}
	if err := na.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := OpenReader(a.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var names []string
	for _, d := range r.Engine().Pipelines() {
		names = append(names, d.Name)
	}
	if !slices.Contains(names, "kept") {
		t.Fatalf("reader lists %v, want kept", names)
	}
}
