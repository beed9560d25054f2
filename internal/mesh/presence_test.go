package mesh

import (
	"errors"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/pipesnet/pipes/internal/identity"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

var testNet = ids.Network{42}

type testNode struct {
	key  *identity.KeyPair
	cert *identity.Cert
}

func newTestNode(t testing.TB, network ids.Network, name string) testNode {
	t.Helper()
	ident, _ := identity.Generate()
	key, _ := identity.Generate()
	cert, err := identity.IssueCert(ident, name, key.Public, network, name+"-loc", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return testNode{key: key, cert: cert}
}

func (n testNode) status(t testing.TB, inc, seq uint64, leaving bool) []byte {
	t.Helper()
	b, err := signStatus(n.key, &pb.Status{NodeCert: n.cert.Signed, Incarnation: inc, Seq: seq, Version: "1",
		Addrs: []string{"127.0.0.1:1"}, Leaving: leaving})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseStatusVerifies(t *testing.T) {
	n := newTestNode(t, testNet, "a")
	good := n.status(t, 1, 1, false)
	st, err := parseStatus(good, testNet, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.cert.NodeID() != n.cert.NodeID() || st.msg.Seq != 1 {
		t.Fatal("wrong status")
	}
	if _, err := parseStatus(good, ids.Network{1}, nil); !errors.Is(err, ErrBadStatus) {
		t.Fatalf("other network: %v", err)
	}
	// Signed by another node's key: forged.
	other := newTestNode(t, testNet, "b")
	forged, _ := signStatus(other.key, &pb.Status{NodeCert: n.cert.Signed, Incarnation: 1, Seq: 2})
	if _, err := parseStatus(forged, testNet, nil); !errors.Is(err, ErrBadStatus) {
		t.Fatalf("forged status: %v", err)
	}
	var s pb.Signed
	proto.Unmarshal(good, &s)
	s.Body[len(s.Body)-1] ^= 1
	tampered, _ := proto.Marshal(&s)
	if _, err := parseStatus(tampered, testNet, nil); err == nil {
		t.Fatal("tampered status accepted")
	}
	big, _ := signStatus(n.key, &pb.Status{NodeCert: n.cert.Signed, Addrs: make([]string, maxStatusAddrs+1)})
	if _, err := parseStatus(big, testNet, nil); err == nil {
		t.Fatal("oversized status accepted")
	}
}

func TestCertCacheStillChecksStatusSignature(t *testing.T) {
	n, other := newTestNode(t, testNet, "a"), newTestNode(t, testNet, "b")
	var c identity.CertCache
	if _, err := parseStatus(n.status(t, 1, 1, false), testNet, &c); err != nil {
		t.Fatal(err)
	}
	// Same (cached) certificate, status signed by someone else: refused.
	forged, _ := signStatus(other.key, &pb.Status{NodeCert: n.cert.Signed, Incarnation: 1, Seq: 2})
	if _, err := parseStatus(forged, testNet, &c); !errors.Is(err, ErrBadStatus) {
		t.Fatalf("forged status with a cached certificate: %v", err)
	}
	// A tampered certificate is not found in the cache and fails.
	bad := proto.Clone(n.cert.Signed).(*pb.Signed)
	bad.Signature[0] ^= 1
	st, _ := signStatus(n.key, &pb.Status{NodeCert: bad, Incarnation: 1, Seq: 3})
	if _, err := parseStatus(st, testNet, &c); !errors.Is(err, ErrBadStatus) {
		t.Fatalf("tampered certificate: %v", err)
	}
}

func TestPresenceOrderingAndExpiry(t *testing.T) {
	self := newTestNode(t, testNet, "self")
	a := newTestNode(t, testNet, "a")
	p := newPresence(self.cert.NodeID(), 10*time.Second)
	now := time.Unix(1000, 0)
	apply := func(b []byte, at time.Time) (NodeInfo, bool) {
		st, err := parseStatus(b, testNet, &identity.CertCache{})
		if err != nil {
			t.Fatal(err)
		}
		return p.apply(at, st)
	}
	info, changed := apply(a.status(t, 5, 1, false), now)
	if !changed || !info.Online || info.Name != "a" || info.Location != "a-loc" {
		t.Fatalf("first status: %+v %v", info, changed)
	}
	// A replay or an older status changes nothing, not even LastSeen.
	if _, changed := apply(a.status(t, 5, 1, false), now.Add(5*time.Second)); changed {
		t.Fatal("replayed status changed the table")
	}
	if _, changed := apply(a.status(t, 4, 9, false), now.Add(5*time.Second)); changed {
		t.Fatal("status of an older incarnation changed the table")
	}
	if got := p.expire(now.Add(11 * time.Second)); len(got) != 1 || got[0].Online {
		t.Fatalf("silent node not expired: %+v", got)
	}
	if len(p.online()) != 0 {
		t.Fatal("expired node still online")
	}
	// A newer status brings it back; a leaving status takes it away at once.
	if info, changed := apply(a.status(t, 5, 2, false), now.Add(12*time.Second)); !changed || !info.Online {
		t.Fatal("newer status ignored")
	}
	if info, changed := apply(a.status(t, 5, 3, true), now.Add(13*time.Second)); !changed || info.Online {
		t.Fatal("leaving status ignored")
	}
	// A restart (new incarnation) is newer whatever its sequence number.
	if info, _ := apply(a.status(t, 6, 1, false), now.Add(14*time.Second)); !info.Online {
		t.Fatal("new incarnation ignored")
	}
	// Its own status never enters the table.
	if _, changed := apply(self.status(t, 1, 1, false), now); changed {
		t.Fatal("own status applied")
	}
}

func TestPresencePeerKeepsOnline(t *testing.T) {
	self := newTestNode(t, testNet, "self")
	a := newTestNode(t, testNet, "a")
	p := newPresence(self.cert.NodeID(), 10*time.Second)
	now := time.Unix(1000, 0)
	// Connected before its status arrives: known, not yet online (what
	// its status carries, such as its encryption key, is missing).
	if info, changed := p.setPeer(now, a.cert.NodeID(), true, a.cert); !changed || info.Online || !info.Peer {
		t.Fatalf("peer before status: %+v", info)
	}
	if len(p.online()) != 0 {
		t.Fatal("a peer whose status is unknown is listed online")
	}
	st, err := parseStatus(a.status(t, 5, 1, false), testNet, &identity.CertCache{})
	if err != nil {
		t.Fatal(err)
	}
	if info, changed := p.apply(now, st); !changed || !info.Online || !info.Peer {
		t.Fatalf("peer after status: %+v", info)
	}
	if len(p.expire(now.Add(time.Hour))) != 0 {
		t.Fatal("connected peer expired")
	}
	p.setPeer(now.Add(time.Hour), a.cert.NodeID(), false, nil)
	if got := p.expire(now.Add(2 * time.Hour)); len(got) != 1 {
		t.Fatal("disconnected, silent peer not expired")
	}
	// Reconnected after its status was heard: online at once.
	if info, _ := p.setPeer(now.Add(3*time.Hour), a.cert.NodeID(), true, a.cert); !info.Online {
		t.Fatalf("reconnected peer whose status is known: %+v", info)
	}
}

// FuzzParseStatus: arbitrary status payloads never panic and are never
// accepted without a valid certificate and node signature.
func FuzzParseStatus(f *testing.F) {
	n := newTestNode(f, testNet, "a")
	f.Add(n.status(f, 1, 1, false))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := parseStatus(data, testNet, nil)
		if err != nil {
			return
		}
		var s pb.Signed
		proto.Unmarshal(data, &s)
		if !identity.Verify(st.cert.NodeKey, statusContext, s.Body, s.Signature) {
			t.Fatal("accepted a status without a valid signature")
		}
	})
}
