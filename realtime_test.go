package pipes_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipesnet/pipes"
	"github.com/pipesnet/pipes/internal/testnet"
)

// TestRealtimeThroughRelay: a realtime point-to-point pipeline between two
// nodes that are not peers carries packets as datagrams through the relay
// (forwarded as datagrams, not on a stream, and sealed); a packet larger
// than a datagram is a clear error that says what fits.
func TestRealtimeThroughRelay(t *testing.T) {
	a, r, b, relayed := relayLine(t, "rt")
	if _, err := a.N.CreatePipeline("bad", pipes.PipelineOptions{Realtime: true, Persistent: true}); err == nil {
		t.Fatal("a persistent realtime pipeline was created")
	}
	id, err := a.N.CreatePipeline("voice", pipes.PipelineOptions{ToNode: b.N.ID(), Realtime: true})
	if err != nil {
		t.Fatal(err)
	}
	pa, _ := a.N.Pipeline(id)
	pb := b.WaitPipeline(t, id)
	if !pb.Realtime() || !pb.Live() {
		t.Fatal("bob's pipeline is not realtime")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := pb.Subscribe(ctx)
	before := len(relayed())
	var got *pipes.Packet
	sent := map[pipes.PacketID]bool{}
	testnet.Eventually(t, 30*time.Second, "a datagram reaches bob", func() error {
		id, err := pa.Put([]byte("secret voice frame"), pipes.WithPacketType(7))
		if err != nil {
			return err
		}
		sent[id] = true
		select {
		case got = <-ch:
			return nil
		case <-time.After(50 * time.Millisecond):
			return errors.New("nothing yet")
		}
	})
	if d, _ := got.Data(); string(d) != "secret voice frame" || got.Type() != 7 || got.Sender() != a.N.ID() {
		t.Fatalf("got %q type %d", d, got.Type())
	}
	if !sent[got.ID()] {
		t.Fatal("the packet id bob computed is not one a's Put returned")
	}
	if s := r.N.Stats().Datagrams; s.Forwarded == 0 {
		t.Fatalf("the relay forwarded no datagram: %+v", s)
	}
	for _, p := range relayed()[before:] {
		if bytes.Contains(p, []byte("secret voice")) {
			t.Fatal("realtime data went through the relay on a stream, in clear")
		}
	}

	// Bob restarts and loses his sessions: a's key is sent again while
	// a keeps sending, and datagrams flow again.
	if err := b.N.Shutdown(); err != nil {
		t.Fatal(err)
	}
	b.Start(t)
	pb, _ = b.N.Pipeline(id)
	ch = pb.Subscribe(ctx)
	testnet.Eventually(t, 60*time.Second, "datagrams reach bob after his restart", func() error {
		if _, err := pa.Put([]byte("again")); err != nil {
			return err
		}
		select {
		case <-ch:
			return nil
		case <-time.After(50 * time.Millisecond):
			return errors.New("nothing yet")
		}
	})

	// Too large for one datagram: the error says what fits, and that fits.
	_, err = pa.Put(make([]byte, 4000))
	var tl *pipes.DatagramTooLargeError
	if !errors.As(err, &tl) || !errors.Is(err, pipes.ErrTooLarge) || tl.Max < 1000 {
		t.Fatalf("oversized realtime packet: %v", err)
	}
	for len(ch) > 0 {
		<-ch
	}
	testnet.Eventually(t, 30*time.Second, "the largest packet that fits arrives", func() error {
		if _, err := pa.Put(bytes.Repeat([]byte{'x'}, tl.Max)); err != nil && !errors.As(err, &tl) {
			return err
		}
		select {
		case pk := <-ch:
			if pk.Size() != int64(tl.Max) {
				return errors.New("short packet")
			}
			return nil
		case <-time.After(50 * time.Millisecond):
			return errors.New("nothing yet")
		}
	})
}

// TestUDPPortMap: two local UDP applications talk through port maps at
// both ends of an encrypted realtime point-to-point pipeline.
func TestUDPPortMap(t *testing.T) {
	ms := cluster(t, "udp", 2, nil)
	a, b := ms[0], ms[1]
	secret := []byte("udp secret")
	var id pipes.PipelineID
	testnet.Eventually(t, 30*time.Second, "the point-to-point pipeline is created", func() (err error) {
		id, err = a.N.CreatePipeline("tunnel", pipes.PipelineOptions{ToNode: b.N.ID(), Realtime: true, Encrypted: true, Secret: secret})
		return err
	})
	pa, _ := a.N.Pipeline(id)
	pb := b.WaitPipeline(t, id)
	if ok, err := pb.SetSecret(secret); !ok || err != nil {
		t.Fatalf("SetSecret: %v %v", ok, err)
	}
	var ready atomic.Int32
	pa.AddListener(&pipes.PipelineListenerFuncs{UDPPortMap: func(*pipes.Pipeline) { ready.Add(1) }})
	if err := pa.SetupUDPPortMap("", 0); err != nil {
		t.Fatal(err)
	}
	if err := pb.SetupUDPPortMap("127.0.0.1", 0); err != nil {
		t.Fatal(err)
	}
	if err := pa.SetupUDPPortMap("", 0); !errors.Is(err, pipes.ErrExists) {
		t.Fatalf("second port map: %v", err)
	}
	plain, _ := a.N.CreatePipeline("plain", pipes.PipelineOptions{})
	pp, _ := a.N.Pipeline(plain)
	if err := pp.SetupUDPPortMap("", 0); !errors.Is(err, pipes.ErrNotRealtime) {
		t.Fatalf("port map on a non-realtime pipeline: %v", err)
	}
	if pa.UDPAddr() == nil || pa.UDPAddr().Port == 0 {
		t.Fatal("no port map address")
	}
	appA := udpApp(t)
	appB := udpApp(t)
	// Both applications speak first, so each map knows where to deliver.
	exchange := func(from *net.UDPConn, to *net.UDPAddr, recv *net.UDPConn, msg string) {
		t.Helper()
		testnet.Eventually(t, 30*time.Second, "a datagram crosses the tunnel", func() error {
			if _, err := from.WriteToUDP([]byte(msg), to); err != nil {
				return err
			}
			buf := make([]byte, 2048)
			recv.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			for {
				n, _, err := recv.ReadFromUDP(buf)
				if err != nil {
					return err
				}
				if string(buf[:n]) == msg {
					return nil
				}
			}
		})
	}
	appB.WriteToUDP([]byte("hello"), pb.UDPAddr())
	exchange(appA, pa.UDPAddr(), appB, "from A to B")
	exchange(appB, pb.UDPAddr(), appA, "from B to A")
	testnet.Eventually(t, 10*time.Second, "HandleUDPPortMap", func() error {
		if ready.Load() != 1 {
			return errors.New("not called")
		}
		return nil
	})
	if err := a.N.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if pa.UDPAddr() != nil {
		t.Fatal("the port map outlived the node")
	}
}

func udpApp(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
