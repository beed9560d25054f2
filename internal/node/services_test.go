package node

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"testing"

	"github.com/quic-go/quic-go"

	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/service"
	"github.com/pipesnet/pipes/internal/testutil"
)

// protoProbe is a stream protocol of the probe service only (tests).
const protoProbe uint16 = 0x7465

// probe is a service of the test: it echoes the streams of protoProbe and
// records the presence events it is told and its life.
type probe struct {
	host service.Host
	stop func()

	mu     sync.Mutex
	events []service.PresenceEvent
	log    *[]string
}

func (p *probe) Name() string { return "probe" }

func (p *probe) Register(r service.Registrar) error {
	return r.HandleStream(protoProbe, func(_ ids.Node, st *quic.Stream) {
		go func() { // an echo, owned by the stream: it ends when the stream does
			io.Copy(st, st)
			st.Close()
		}()
	})
}

func (p *probe) Start(_ context.Context, h service.Host) error {
	p.host = h
	p.stop = h.Presence(func(e service.PresenceEvent) {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.events = append(p.events, e)
	})
	return nil
}

func (p *probe) Close() error {
	p.stop()
	*p.log = append(*p.log, "probe closed")
	return nil
}

func (p *probe) saw(node ids.Node, online bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Contains(p.events, service.PresenceEvent{Node: node, Online: online})
}

// A service plugs into the node through the seam: it registers a stream
// protocol, opens streams of it to a peer through its host, is told of
// presence, keeps its own store namespace, and is closed before the
// engine, after the engine stopped.
func TestAServicePlugsIn(t *testing.T) {
	nw := newNetwork(t)
	var order []string
	a, b := nw.config(t, "a"), nw.config(t, "b")
	pa, pb := &probe{log: &order}, &probe{log: new([]string)}
	a.cfg.Services, b.cfg.Services = []service.Service{pa}, []service.Service{pb}
	addr := func(node ids.Node, svc string) net.Addr { return &net.UnixAddr{Name: node.Short() + "/" + svc} }
	a.cfg.ConnAddr, b.cfg.ConnAddr = addr, addr
	a.cfg.Ready = func(*Node) {} // EngineClosed is called when Ready was
	a.cfg.EngineClosed = func() { order = append(order, "engine closed") }
	ctx := context.Background()
	na, err := Start(ctx, a.cfg)
	if err != nil {
		t.Fatal(err)
	}
	b.cfg.Gateways = func() []string { return []string{na.Transport().Addr().String()} }
	nb, err := Start(ctx, b.cfg)
	if err != nil {
		t.Fatal(err)
	}
	idA, idB := na.ID(), nb.ID()
	testutil.WaitFor(t, "the nodes to be peers", func() bool { return isPeer(na, idB) && isPeer(nb, idA) })
	testutil.WaitFor(t, "a's service to be told b is online", func() bool { return pa.saw(idB, true) })

	if pa.host.Self() != idA {
		t.Fatal("the host's Self is not the node")
	}
	if _, ok := pa.host.Member(idB); !ok {
		t.Fatal("b is not a member to a's host")
	}
	hop, direct, err := pa.host.Route(ctx, idB)
	if err != nil || hop != idB || !direct {
		t.Fatalf("route to b: %s %v %v, want b itself, direct", hop.Short(), direct, err)
	}

	// A stream of the probe's protocol reaches b's probe, past its
	// protocol bytes.
	st, err := pa.host.OpenStream(ctx, idB, protoProbe)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	st.Close()
	echo, err := io.ReadAll(st)
	if err != nil || string(echo) != "ping" {
		t.Fatalf("echo %q, %v", echo, err)
	}
	// A protocol b has no handler for is refused there.
	st, err = pa.host.OpenStream(ctx, idB, 0x0001)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(st); err == nil {
		t.Fatal("a stream of an unknown protocol was not refused")
	}

	// Data connections: b's service listens, a's dials it; and the
	// host's blob store is the node's.
	l, err := pb.host.Listen("pipes/probe")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan struct{})
	go func() { // an echo, owned by the test: it ends with the connection
		defer close(accepted)
		if c, err := l.Accept(); err == nil {
			io.Copy(c, c)
			c.Close()
		}
	}()
	c, err := pa.host.Dial(ctx, idB, "pipes/probe")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("data")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "data" {
		t.Fatalf("echo over the data connection %q, %v", got, err)
	}
	c.Close()
	<-accepted
	l.Close()
	if bs, err := pa.host.Blobs(); err != nil || bs != na.Blobs() {
		t.Fatalf("the host's blob store: %v", err)
	}

	// The store namespace is the service's own.
	if err := pa.host.Store().Set([]byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	if v, err := pa.host.Store().Get([]byte("k")); err != nil || string(v) != "v" {
		t.Fatalf("get: %q %v", v, err)
	}
	if v, err := na.hostFor("other").Store().Get([]byte("k")); err == nil && v != nil {
		t.Fatalf("another service's namespace reads %q", v)
	}

	if err := nb.Close(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "a's service to be told b is offline", func() bool { return pa.saw(idB, false) })
	if err := na.Close(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(order, []string{"probe closed", "engine closed"}) {
		t.Fatalf("shutdown order %v, want the service closed before the engine", order)
	}
	if _, err := pa.host.OpenStream(ctx, idB, protoProbe); err == nil || errors.Is(err, context.Canceled) {
		t.Fatalf("a stream after close: %v", err)
	}
}
