package pipes_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pipesnet/pipes"
)

func TestMain(m *testing.M) {
	if os.Getenv(writerEnv) != "" {
		os.Exit(runWriter())
	}
	goleak.VerifyTestMain(m)
}

const testSecret = "correct horse battery staple"

// testNetfile writes a netfile with the cheap KDF and returns its path.
func testNetfile(t testing.TB, name string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name+".net")
	if _, err := pipes.CreateNetwork(path, pipes.NetworkSpec{Name: name, Secret: testSecret, KDF: pipes.FastKDF}); err != nil {
		t.Fatal(err)
	}
	return path
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("PIPES_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// member is one platform with one node.
type member struct {
	net string // netfile path
	dir string
	p   *pipes.Platform
	n   *pipes.Node
}

// newMember opens a test-mode platform in its own directory, joins the
// network of netPath with secret, and adds a node.
func newMember(t testing.TB, netPath, name string, opts ...pipes.NodeOption) *member {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	m := &member{dir: dir, net: netPath}
	m.open(t)
	nw, err := m.p.AddNetwork(netPath)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := nw.SetSecret(testSecret); err != nil || !ok {
		t.Fatalf("SetSecret: %v %v", ok, err)
	}
	id, err := m.p.AddIdentity(name)
	if err != nil {
		t.Fatal(err)
	}
	if m.n, err = m.p.AddNode(nw, id, name+"-loc", opts...); err != nil {
		t.Fatal(err)
	}
	return m
}

// open (re)opens the member's platform; the node is looked up again.
func (m *member) open(t testing.TB) {
	t.Helper()
	p, err := pipes.Open(m.dir, pipes.WithTestMode(true), pipes.WithLogger(testLogger(t)), pipes.WithLogTag(filepath.Base(m.dir)))
	if err != nil {
		t.Fatal(err)
	}
	m.p = p
	t.Cleanup(func() { p.Close() })
	if m.n != nil {
		if m.n, err = p.Node(m.n.ID()); err != nil {
			t.Fatal(err)
		}
	}
}

func (m *member) start(t testing.TB) {
	t.Helper()
	if err := m.n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func (m *member) addr(t testing.TB) (string, int) {
	t.Helper()
	a := m.n.ListenAddrs()
	if len(a) == 0 {
		t.Fatal("node has no listen address")
	}
	return a[0].Addr().String(), int(a[0].Port())
}

func (m *member) gateway(t testing.TB, gw *member) {
	t.Helper()
	h, p := gw.addr(t)
	if err := m.n.Network().AddGateway(h, p); err != nil {
		t.Fatal(err)
	}
}

// eventually polls cond until it holds or the limit passes. The limit is a
// safety net against hangs, not a performance assertion: it is far above
// what the condition needs.
func eventually(t testing.TB, limit time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not true after %v: %v", what, limit, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// seesOnline checks that m sees exactly the others online.
func seesOnline(m *member, others []*member) error {
	got := map[pipes.NodeID]bool{}
	for _, r := range m.n.ConnectedNodes() {
		got[r.ID()] = true
	}
	for _, o := range others {
		if o != m && !got[o.n.ID()] {
			return fmt.Errorf("%s does not see %s", m.n.Location(), o.n.Location())
		}
	}
	want := 0
	for _, o := range others {
		if o != m {
			want++
		}
	}
	if len(got) != want {
		return fmt.Errorf("%s sees %d nodes online, want %d", m.n.Location(), len(got), want)
	}
	return nil
}

func allSeeAll(ms []*member) func() error {
	return func() error {
		for _, m := range ms {
			if err := seesOnline(m, ms); err != nil {
				return err
			}
		}
		return nil
	}
}

// freePort returns a UDP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

func loopback(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// cluster starts a gateway and n-1 nodes that know only the gateway, and
// waits until every node sees every other. gwOpts apply to the gateway,
// opts to every node.
func cluster(t testing.TB, name string, n int, gwOpts []pipes.NodeOption, opts ...pipes.NodeOption) []*member {
	t.Helper()
	netPath := testNetfile(t, name)
	gw := newMember(t, netPath, name+"-gw", append(gwOpts, opts...)...)
	gw.start(t)
	ms := []*member{gw}
	for i := 1; i < n; i++ {
		m := newMember(t, netPath, fmt.Sprintf("%s%d", name, i), opts...)
		m.gateway(t, gw)
		m.start(t)
		ms = append(ms, m)
	}
	eventually(t, 60*time.Second, "every node sees every other", allSeeAll(ms))
	return ms
}

// testNetfileOf returns the netfile m joined with.
func testNetfileOf(t testing.TB, m *member) string { return m.net }

// relayLine starts alice and bob that know only a relay (target degree 1,
// so they stay apart), waits until all see all, and returns them with a
// function that lists the payloads the relay forwarded for others.
func relayLine(t testing.TB, name string) (a, r, b *member, relayed func() [][]byte) {
	t.Helper()
	return relayLineWith(t, name, false)
}

// relayLineWith is relayLine; noPunch keeps alice and bob from punching a
// direct connection after a relayed data connection (so that their data
// connections stay relayed).
func relayLineWith(t testing.TB, name string, noPunch bool) (a, r, b *member, relayed func() [][]byte) {
	t.Helper()
	netPath := testNetfile(t, name)
	one := pipes.WithTargetDegree(1)
	r = newMember(t, netPath, "relay", one)
	var mu sync.Mutex
	var seen [][]byte
	pipes.SetForwardTap(r.n, func(dst, src [32]byte, payload []byte) {
		mu.Lock()
		seen = append(seen, payload)
		mu.Unlock()
	})
	r.start(t)
	a = newMember(t, netPath, "alice", one)
	b = newMember(t, netPath, "bob", one)
	a.gateway(t, r)
	b.gateway(t, r)
	if noPunch {
		pipes.DisablePunching(a.n)
		pipes.DisablePunching(b.n)
	}
	a.start(t)
	b.start(t)
	eventually(t, 30*time.Second, "all see all", allSeeAll([]*member{a, r, b}))
	return a, r, b, func() [][]byte {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seen)
	}
}
