package pipes_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pipesnet/pipes"
	"github.com/pipesnet/pipes/internal/testnet"
)

func TestOpenLockAndClose(t *testing.T) {
	dir := t.TempDir()
	p, err := pipes.Open(dir, pipes.WithLogger(testnet.Logger(t)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pipes.Open(dir); !errors.Is(err, pipes.ErrLocked) {
		t.Fatalf("second open: %v", err)
	}
	if p.Version() == "" || p.Dir() != dir {
		t.Fatal("version or dir")
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if _, err := p.AddIdentity("x"); !errors.Is(err, pipes.ErrClosed) {
		t.Fatalf("use after close: %v", err)
	}
	p2, err := pipes.Open(dir)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	p2.Close()
}

func TestIdentitiesNetworksNodesPersist(t *testing.T) {
	dir := t.TempDir()
	netPath := testnet.Netfile(t, "persist")
	p, err := pipes.Open(dir, pipes.WithLogger(testnet.Logger(t)))
	if err != nil {
		t.Fatal(err)
	}
	if p.HasLocalIdentity() {
		t.Fatal("new platform has an identity")
	}
	if _, err := p.LocalIdentity(); !errors.Is(err, pipes.ErrNoIdentity) {
		t.Fatalf("LocalIdentity: %v", err)
	}
	alice, err := p.AddIdentity("alice")
	if err != nil {
		t.Fatal(err)
	}
	nw, err := p.AddNetwork(netPath)
	if err != nil {
		t.Fatal(err)
	}
	if nw.HasSecret() || nw.Name() != "persist" || nw.IsBootstrap() {
		t.Fatal("network state")
	}
	n, err := p.AddNode(nw, alice, "desk")
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); !errors.Is(err, pipes.ErrNoSecret) {
		t.Fatalf("start without secret: %v", err)
	}
	if ok, err := nw.SetSecret("wrong"); ok || err != nil {
		t.Fatalf("wrong secret: %v %v", ok, err)
	}
	if ok, err := nw.SetSecret(testnet.Secret); !ok || err != nil {
		t.Fatalf("right secret: %v %v", ok, err)
	}
	if _, err := p.AddNode(nw, alice, "desk"); !errors.Is(err, pipes.ErrExists) {
		t.Fatalf("duplicate node: %v", err)
	}
	if err := nw.AddGateway("example.invalid", 7420); err != nil {
		t.Fatal(err)
	}
	if err := nw.AddGateway("h", 0); err == nil {
		t.Fatal("port 0 accepted")
	}
	p.Close()

	p, err = pipes.Open(dir, pipes.WithLogger(testnet.Logger(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	id, err := p.LocalIdentity()
	if err != nil || id.ID() != alice.ID() || id.Name() != "alice" {
		t.Fatalf("identity after reopen: %v", err)
	}
	nw2, err := p.Network(nw.ID())
	if err != nil || !nw2.HasSecret() {
		t.Fatalf("network after reopen: %v", err)
	}
	if gws := nw2.Gateways(); len(gws) != 1 || gws[0].Host != "example.invalid" || gws[0].Port != 7420 || gws[0].NetworkID != nw.ID() {
		t.Fatalf("gateways: %+v", gws)
	}
	n2, err := p.Node(n.ID())
	if err != nil || n2.Location() != "desk" || n2.Identity().ID() != alice.ID() || n2.Network().ID() != nw.ID() {
		t.Fatalf("node after reopen: %v", err)
	}
	if _, err := p.Node(pipes.NodeID{1}); !errors.Is(err, pipes.ErrNotFound) {
		t.Fatalf("unknown node: %v", err)
	}
	if _, err := p.BootstrapNetwork(); !errors.Is(err, pipes.ErrNotFound) {
		t.Fatalf("bootstrap network: %v", err)
	}
}

// TestSecretsAtRest: the secret is in no file of the data directory, and
// every key file is private.
func TestSecretsAtRest(t *testing.T) {
	m := testnet.NewMember(t, testnet.Netfile(t, "rest"), "keeper")
	m.Start(t)
	m.P.Close()
	err := filepath.WalkDir(m.Dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte(testnet.Secret)) {
			t.Errorf("%s contains the network secret", path)
		}
		if strings.HasSuffix(path, ".key") {
			info, _ := d.Info()
			if info.Mode().Perm() != 0o600 {
				t.Errorf("%s has mode %v", path, info.Mode().Perm())
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := filepath.Glob(filepath.Join(m.Dir, "keys", "*.key"))
	if len(keys) != 4 { // identity, node, node encryption (HPKE), network
		t.Fatalf("key files: %v", keys)
	}
}

func TestBadNetfiles(t *testing.T) {
	p, err := pipes.Open(t.TempDir(), pipes.WithLogger(testnet.Logger(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	path := testnet.Netfile(t, "bad")
	raw, _ := os.ReadFile(path)
	trunc := filepath.Join(t.TempDir(), "truncated.net")
	os.WriteFile(trunc, raw[:len(raw)-7], 0o644)
	tampered := filepath.Join(t.TempDir(), "tampered.net")
	b := bytes.Clone(raw)
	b[len(b)/2] ^= 1
	os.WriteFile(tampered, b, 0o644)
	junk := filepath.Join(t.TempDir(), "junk.net")
	os.WriteFile(junk, []byte("hello"), 0o644)
	for _, f := range []string{trunc, tampered, junk} {
		_, err := p.AddNetwork(f)
		if !errors.Is(err, pipes.ErrBadNetfile) || !strings.Contains(err.Error(), f) {
			t.Errorf("%s: %v", filepath.Base(f), err)
		}
	}
	if _, err := p.AddNetwork(filepath.Join(t.TempDir(), "missing.net")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing netfile: %v", err)
	}
	if len(p.Networks()) != 0 {
		t.Fatal("a bad netfile was added")
	}
	if _, err := pipes.CreateNetwork(path, pipes.NetworkSpec{Name: "again", Secret: "s", KDF: pipes.FastKDF}); !errors.Is(err, pipes.ErrExists) {
		t.Fatalf("overwrite netfile: %v", err)
	}
}

func TestIDs(t *testing.T) {
	var id pipes.NodeID
	id[0], id[31] = 0xab, 0x01
	s := id.String()
	if len(s) != 64 || !strings.HasPrefix(s, "ab") {
		t.Fatal(s)
	}
	back, err := pipes.ParseNodeID(s)
	if err != nil || back != id {
		t.Fatalf("parse: %v", err)
	}
	for _, bad := range []string{"", "ab", strings.Repeat("g", 64)} {
		if _, err := pipes.ParseNodeID(bad); !errors.Is(err, pipes.ErrInvalidID) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func TestBootstrapNetwork(t *testing.T) {
	dir := t.TempDir()
	bootPath := filepath.Join(dir, "boot.net")
	if _, err := pipes.CreateNetwork(bootPath, pipes.NetworkSpec{Name: "lobby", Secret: testnet.Secret, Bootstrap: true, KDF: pipes.FastKDF}); err != nil {
		t.Fatal(err)
	}
	listedPath := testnet.Netfile(t, "listed")
	a := testnet.NewMember(t, bootPath, "a")
	b := testnet.NewMember(t, bootPath, "b")
	listed, err := a.P.AddNetwork(listedPath)
	if err != nil {
		t.Fatal(err)
	}
	if bn, err := a.P.BootstrapNetwork(); err != nil || bn.Name() != "lobby" {
		t.Fatalf("BootstrapNetwork: %v", err)
	}
	if err := a.N.AddBootstrapNetwork(listed.ID()); err != nil {
		t.Fatal(err)
	}
	a.Start(t)
	b.Gateway(t, a)
	b.Start(t)
	testnet.Eventually(t, 30*time.Second, "b sees the listed network", func() error {
		infos, err := b.N.BootstrapNetworks()
		if err != nil {
			return err
		}
		if len(infos) != 1 || infos[0].ID != listed.ID() || infos[0].Name != "listed" {
			return errors.New("not listed yet")
		}
		return nil
	})
	// An ordinary network has no bootstrap list.
	o := testnet.NewMember(t, listedPath, "o")
	if _, err := o.N.BootstrapNetworks(); !errors.Is(err, pipes.ErrNotBootstrap) {
		t.Fatalf("ordinary network: %v", err)
	}
}

func TestConnectionUpdatesAndStubs(t *testing.T) {
	netPath := testnet.Netfile(t, "updates")
	a := testnet.NewMember(t, netPath, "a")
	b := testnet.NewMember(t, netPath, "b")
	updates := make(chan bool, 8)
	b.N.AddListener(&pipes.NodeListenerFuncs{ConnectionUpdate: func(c bool, _ *pipes.Node) { updates <- c }})
	if err := b.N.Shutdown(); err != nil {
		t.Fatalf("shutdown of a stopped node: %v", err)
	}
	a.Start(t)
	b.Gateway(t, a)
	b.Start(t)
	if err := b.N.Start(context.Background()); !errors.Is(err, pipes.ErrActive) {
		t.Fatalf("second start: %v", err)
	}
	select {
	case c := <-updates:
		if !c {
			t.Fatal("first update says disconnected")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no connection update")
	}
	if !b.N.IsActive() || !b.N.IsConnected() {
		t.Fatal("active and connected")
	}
	a.N.Shutdown()
	select {
	case c := <-updates:
		if c {
			t.Fatal("second update says connected")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no disconnection update")
	}
	// a is gone: dialing it says so at once.
	if _, err := b.N.Dial(context.Background(), a.N.ID(), "svc"); !errors.Is(err, pipes.ErrNotConnected) {
		t.Fatalf("Dial: %v", err)
	}
}
