package transport

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/pipesnet/pipes/internal/testutil"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/pipesnet/pipes/internal/identity"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type member struct {
	key  *identity.KeyPair
	cert *identity.Cert
}

func newMember(t testing.TB, network ids.Network, name string) member {
	t.Helper()
	ident, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	key, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := identity.IssueCert(ident, name, key.Public, network, "test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return member{key: key, cert: cert}
}

func listen(t *testing.T, m member, network ids.Network, key [32]byte) *Transport {
	t.Helper()
	tr, err := Listen("127.0.0.1:0", Config{Key: m.key, Cert: m.cert, NetworkID: network, NetworkKey: key, Incarnation: 1,
		HandshakeTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

var (
	netA = ids.Network{1}
	keyA = [32]byte{2}
)

func TestMembersConnectAndExchangeFrames(t *testing.T) {
	a, b := newMember(t, netA, "a"), newMember(t, netA, "b")
	ta, tb := listen(t, a, netA, keyA), listen(t, b, netA, keyA)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	ca, err := ta.Dial(ctx, tb.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	cb, err := tb.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ca.PeerID != b.cert.NodeID() || cb.PeerID != a.cert.NodeID() {
		t.Fatal("peer ids do not match the certificates")
	}
	if ca.Peer.IdentityName != "b" || cb.Peer.IdentityName != "a" || !ca.Outbound || cb.Outbound {
		t.Fatalf("wrong peer info: %+v / %+v", ca.Peer, cb.Peer)
	}
	// Each side is told the address its packets come from: here, the
	// one socket each transport listens and dials on.
	if ca.Observed != ta.Addr() || cb.Observed != tb.Addr() {
		t.Fatalf("observed addresses %v / %v, want %v / %v", ca.Observed, cb.Observed, ta.Addr(), tb.Addr())
	}
	f := &pb.Frame{Body: &pb.Frame_Goodbye{Goodbye: &pb.Goodbye{Reason: "x"}}}
	if err := ca.WriteFrame(f); err != nil {
		t.Fatal(err)
	}
	got, err := cb.ReadFrame()
	if err != nil || !proto.Equal(got, f) {
		t.Fatalf("frame a->b: %v %v", got, err)
	}
	if err := cb.WriteFrame(f); err != nil {
		t.Fatal(err)
	}
	if got, err := ca.ReadFrame(); err != nil || !proto.Equal(got, f) {
		t.Fatalf("frame b->a: %v %v", got, err)
	}
	if s := ta.Stats(); s.Conns != 1 {
		t.Fatalf("live conns = %d, want 1", s.Conns)
	}
	ca.Close(CodeNormal, "done")
	<-cb.Done()
}

// refusedBoth dials from a to b and checks that both sides fail with a
// reason containing want, and that b accepted nothing.
func refusedBoth(t *testing.T, ta, tb *Transport, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := ta.Dial(ctx, tb.Addr().String())
	if err == nil {
		t.Fatal("dial succeeded")
	}
	var refused *RefusedError
	if !errors.Is(err, ErrRefusedByPeer) && !errors.As(err, &refused) {
		t.Fatalf("dial error %v is not a refusal", err)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("dial error %q does not say %q", err, want)
	}
	actx, acancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer acancel()
	if c, err := tb.Accept(actx); err == nil {
		t.Fatalf("refused peer was accepted: %x", c.PeerID[:4])
	}
	if ta.Stats().Refused+tb.Stats().Refused != 1 {
		t.Fatalf("refusals counted: %d + %d, want 1 in all", ta.Stats().Refused, tb.Stats().Refused)
	}
}

func TestWrongSecretRefused(t *testing.T) {
	a, b := newMember(t, netA, "a"), newMember(t, netA, "b")
	ta, tb := listen(t, a, netA, [32]byte{9}), listen(t, b, netA, keyA)
	refusedBoth(t, ta, tb, "membership proof")
}

func TestOtherNetworkRefused(t *testing.T) {
	other := ids.Network{7}
	a, b := newMember(t, other, "a"), newMember(t, netA, "b")
	ta, tb := listen(t, a, other, keyA), listen(t, b, netA, keyA)
	refusedBoth(t, ta, tb, "network")
}

func TestCertificateForAnotherKeyRefused(t *testing.T) {
	a, b := newMember(t, netA, "a"), newMember(t, netA, "b")
	thief := member{key: a.key, cert: b.cert} // presents b's certificate with a's key
	ta, tb := listen(t, thief, netA, keyA), listen(t, b, netA, keyA)
	// The proof is computed for the id in the certificate; b recomputes it
	// for the key TLS saw, so the thief fails either at the proof or at the
	// certificate check.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := ta.Dial(ctx, tb.Addr().String()); err == nil {
		t.Fatal("certificate thief connected")
	}
}

func TestDialSelf(t *testing.T) {
	a := newMember(t, netA, "a")
	ta := listen(t, a, netA, keyA)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := ta.Dial(ctx, ta.Addr().String()); !errors.Is(err, ErrSelf) {
		t.Fatalf("self dial: %v", err)
	}
}

func TestVerifyHelloRejectsForgeries(t *testing.T) {
	a := newMember(t, netA, "a")
	exporter := make([]byte, 32)
	id := a.cert.NodeID()
	good := &pb.Hello{ProtocolVersion: ProtocolVersion, NetworkId: netA[:], NodeCert: a.cert.Signed,
		Proof: membershipProof(keyA, exporter, id)}
	if _, reason := verifyHello(good, id, a.key.Public, exporter, netA, keyA); reason != "" {
		t.Fatalf("good hello refused: %s", reason)
	}
	cases := map[string]func(h *pb.Hello){
		"version":   func(h *pb.Hello) { h.ProtocolVersion = 2 },
		"network":   func(h *pb.Hello) { h.NetworkId = make([]byte, 32) },
		"proof":     func(h *pb.Hello) { h.Proof = append([]byte{}, h.Proof...); h.Proof[0] ^= 1 },
		"no cert":   func(h *pb.Hello) { h.NodeCert = nil },
		"addresses": func(h *pb.Hello) { h.ListenAddrs = make([]string, maxAddrs+1) },
	}
	for name, mutate := range cases {
		h := proto.Clone(good).(*pb.Hello)
		mutate(h)
		if _, reason := verifyHello(h, id, a.key.Public, exporter, netA, keyA); reason == "" {
			t.Errorf("%s: forged hello accepted", name)
		}
	}
	other := sha256.Sum256([]byte("other"))
	if _, reason := verifyHello(good, other, a.key.Public, exporter, netA, keyA); reason == "" {
		t.Error("proof accepted for another node id")
	}
}

// FuzzVerifyHello feeds arbitrary bytes as a Hello to the verifier, which
// must never panic and must never accept anything but a proof made with the
// network key.
func FuzzVerifyHello(f *testing.F) {
	a := newMember(f, netA, "a")
	exporter := make([]byte, 32)
	id := a.cert.NodeID()
	good := &pb.Hello{ProtocolVersion: ProtocolVersion, NetworkId: netA[:], NodeCert: a.cert.Signed,
		Proof: membershipProof(keyA, exporter, id), ListenAddrs: []string{"127.0.0.1:1"}}
	b, _ := proto.Marshal(good)
	f.Add(b)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var h pb.Hello
		if proto.Unmarshal(data, &h) != nil {
			return
		}
		cert, reason := verifyHello(&h, id, a.key.Public, exporter, netA, keyA)
		if reason == "" && (cert == nil || cert.NodeID() != id) {
			t.Fatal("accepted a hello without a valid certificate for the peer")
		}
	})
}

// syncBuffer is an output sink safe to read while another goroutine writes it.
type syncBuffer = testutil.Buffer

func TestRefusalLoggedOnBothSides(t *testing.T) {
	a, b := newMember(t, netA, "a"), newMember(t, netA, "b")
	var la, lb syncBuffer
	mk := func(m member, key [32]byte, w io.Writer) *Transport {
		tr, err := Listen("127.0.0.1:0", Config{Key: m.key, Cert: m.cert, NetworkID: netA, NetworkKey: key,
			Logger: slog.New(slog.NewTextHandler(w, nil))})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tr.Close() })
		return tr
	}
	ta, tb := mk(a, [32]byte{9}, &la), mk(b, keyA, &lb)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := ta.Dial(ctx, tb.Addr().String()); err == nil {
		t.Fatal("dial with a wrong key succeeded")
	}
	const reason = "membership proof does not verify"
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(lb.String(), reason) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(la.String(), reason) || !strings.Contains(lb.String(), reason) {
		t.Fatalf("reason not logged on both sides:\ndialer: %s\nacceptor: %s", la.String(), lb.String())
	}
}
