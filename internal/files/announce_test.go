package files

import (
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	"github.com/pipesnet/pipes/internal/identity"
	"github.com/pipesnet/pipes/internal/ids"
)

var testNetwork = [32]byte{9, 9}

func keyPair(t *testing.T) (*identity.KeyPair, ids.Node) {
	t.Helper()
	k, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return k, ids.Node(sha256.Sum256(k.Public))
}

func fileIDs(n int) []ids.Content {
	out := make([]ids.Content, n)
	for i := range out {
		out[i][0], out[i][1] = byte(i>>8), byte(i)
	}
	return out
}

func TestHoldingsRoundTrip(t *testing.T) {
	k, node := keyPair(t)
	b := encodeHoldings(k, testNetwork, 42, fileIDs(3))
	h, err := decodeHoldings(b, testNetwork, node)
	if err != nil {
		t.Fatal(err)
	}
	if h.node != node || h.seq != 42 || len(h.files) != 3 || h.files[2] != fileIDs(3)[2] {
		t.Fatalf("decoded %+v", h)
	}
}

// Forged announcements: another node's key, a flipped bit, another
// network.
func TestHoldingsForged(t *testing.T) {
	k, node := keyPair(t)
	_, other := keyPair(t)
	b := encodeHoldings(k, testNetwork, 1, fileIDs(2))
	if _, err := decodeHoldings(b, testNetwork, other); !errors.Is(err, ErrForged) {
		t.Errorf("claimed by another origin: %v", err)
	}
	bad := append([]byte(nil), b...)
	bad[holdingsHeader+5] ^= 1 // a file id
	if _, err := decodeHoldings(bad, testNetwork, node); !errors.Is(err, ErrForged) {
		t.Errorf("altered: %v", err)
	}
	if _, err := decodeHoldings(b, [32]byte{1}, node); !errors.Is(err, ErrForged) {
		t.Errorf("of another network: %v", err)
	}
	x := newIndex()
	x.refused(ErrForged)
	if x.stats().Forged != 1 {
		t.Error("forged not counted")
	}
}

// Oversize: more ids than MaxHoldings, or more bytes than that takes, are
// refused before the signature is checked; encode caps what it signs.
func TestHoldingsOversize(t *testing.T) {
	k, node := keyPair(t)
	b := encodeHoldings(k, testNetwork, 1, fileIDs(MaxHoldings+10))
	h, err := decodeHoldings(b, testNetwork, node)
	if err != nil || len(h.files) != MaxHoldings {
		t.Fatalf("a capped announcement: %d files, %v", len(h.files), err)
	}
	big := append(b[:len(b):len(b)], make([]byte, 32)...)
	if _, err := decodeHoldings(big, testNetwork, node); !errors.Is(err, ErrOversize) {
		t.Errorf("too many bytes: %v", err)
	}
	count := append([]byte(nil), encodeHoldings(k, testNetwork, 1, fileIDs(1))...)
	count[holdingsHeader-2], count[holdingsHeader-1] = 0xff, 0xff
	if _, err := decodeHoldings(count, testNetwork, node); !errors.Is(err, ErrOversize) {
		t.Errorf("a count over the cap: %v", err)
	}
	if _, err := decodeHoldings(b[:10], testNetwork, node); !errors.Is(err, ErrMalformed) {
		t.Errorf("truncated: %v", err)
	}
}

// The index keeps the newest announcement of each node, ignores and
// counts older ones, and forgets nodes offline for too long.
func TestIndexSequenceAndExpiry(t *testing.T) {
	x := newIndex()
	n1, n2 := ids.Node{1}, ids.Node{2}
	f := fileIDs(3)
	if !x.apply(&holdings{node: n1, seq: 10, files: f[:2]}) {
		t.Fatal("first announcement refused")
	}
	x.apply(&holdings{node: n2, seq: 5, files: f[1:2]})
	if x.apply(&holdings{node: n1, seq: 10, files: f}) || x.apply(&holdings{node: n1, seq: 9, files: f}) {
		t.Fatal("a stale announcement was applied")
	}
	if x.stats().Stale != 2 {
		t.Fatalf("stale counted %d, want 2", x.stats().Stale)
	}
	if hs := x.holders(f[1]); len(hs) != 2 {
		t.Fatalf("holders of f1: %v", hs)
	}
	x.apply(&holdings{node: n1, seq: 11, files: f[2:]}) // n1 dropped f0, f1
	if hs := x.holders(f[0]); len(hs) != 0 {
		t.Fatalf("holders of f0 after n1 dropped it: %v", hs)
	}
	now := time.Now()
	x.presence(n2, false, now)
	x.expire(now.Add(time.Minute), 10*time.Minute)
	if len(x.holders(f[1])) != 1 {
		t.Fatal("a node offline for less than the bound was forgotten")
	}
	x.presence(n2, true, now.Add(2*time.Minute))
	x.expire(now.Add(20*time.Minute), 10*time.Minute)
	if len(x.holders(f[1])) != 1 {
		t.Fatal("a node back online was forgotten")
	}
	x.presence(n2, false, now.Add(21*time.Minute))
	x.expire(now.Add(32*time.Minute), 10*time.Minute)
	if len(x.holders(f[1])) != 0 {
		t.Fatal("a node offline for longer than the bound is still indexed")
	}
}
