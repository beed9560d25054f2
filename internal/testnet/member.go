// Package testnet holds what the tests of the root package and of
// integrationtests share to run networks of nodes: members (a platform
// with one node each), netfiles with the cheap KDF, and checks that wait
// for presence, pipelines and logs. Only test files import it.
package testnet

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/pipesnet/pipes"
)

// Secret is the network secret of every netfile Netfile writes.
const Secret = "correct horse battery staple"

// Netfile writes a netfile of network name with the cheap KDF and
// returns its path.
func Netfile(t testing.TB, name string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name+".net")
	if _, err := pipes.CreateNetwork(path, pipes.NetworkSpec{Name: name, Secret: Secret, KDF: pipes.FastKDF}); err != nil {
		t.Fatal(err)
	}
	return path
}

// Logger discards, unless PIPES_TEST_LOG is set: then it writes every
// level to standard error.
func Logger(t testing.TB) *slog.Logger {
	if os.Getenv("PIPES_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// Member is one platform with one node.
type Member struct {
	Net string // netfile path
	Dir string // data directory
	P   *pipes.Platform
	N   *pipes.Node
}

// NewMember opens a test-mode platform in its own directory, joins the
// network of netPath with Secret, and adds a node.
func NewMember(t testing.TB, netPath, name string, opts ...pipes.NodeOption) *Member {
	t.Helper()
	m := &Member{Dir: filepath.Join(t.TempDir(), name), Net: netPath}
	m.Open(t)
	nw, err := m.P.AddNetwork(netPath)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := nw.SetSecret(Secret); err != nil || !ok {
		t.Fatalf("SetSecret: %v %v", ok, err)
	}
	id, err := m.P.AddIdentity(name)
	if err != nil {
		t.Fatal(err)
	}
	if m.N, err = m.P.AddNode(nw, id, name+"-loc", opts...); err != nil {
		t.Fatal(err)
	}
	return m
}

// Open (re)opens the member's platform, closed when the test ends; the
// node is looked up again.
func (m *Member) Open(t testing.TB) {
	t.Helper()
	p, err := pipes.Open(m.Dir, pipes.WithTestMode(true), pipes.WithLogger(Logger(t)), pipes.WithLogTag(filepath.Base(m.Dir)))
	if err != nil {
		t.Fatal(err)
	}
	m.P = p
	t.Cleanup(func() { p.Close() })
	if m.N != nil {
		if m.N, err = p.Node(m.N.ID()); err != nil {
			t.Fatal(err)
		}
	}
}

// Start starts the member's node.
func (m *Member) Start(t testing.TB) {
	t.Helper()
	if err := m.N.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// Addr returns the host and port of the node's first listen address.
func (m *Member) Addr(t testing.TB) (string, int) {
	t.Helper()
	a := m.N.ListenAddrs()
	if len(a) == 0 {
		t.Fatal("node has no listen address")
	}
	return a[0].Addr().String(), int(a[0].Port())
}

// Gateway adds gw's listen address to the gateways of m's network.
func (m *Member) Gateway(t testing.TB, gw *Member) {
	t.Helper()
	h, p := gw.Addr(t)
	if err := m.N.Network().AddGateway(h, p); err != nil {
		t.Fatal(err)
	}
}
