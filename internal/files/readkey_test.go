package files

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pipesnet/pipes/internal/dispatch"
	"github.com/pipesnet/pipes/internal/identity"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/kinds"
)

func dispatchMsg(payload []byte) dispatch.Msg {
	return dispatch.Msg{Kind: kinds.ReadKeys, Via: kinds.Routed, Payload: payload}
}

// TestReadKeyDerived: the read key is a function of the identity key (two
// nodes of one identity derive the same), its record decodes to it and
// names the identity, and another identity's differs.
func TestReadKeyDerived(t *testing.T) {
	ik, a := readKeyOf(t)
	again, err := identity.FromSeed(ik.Private.Seed())
	if err != nil {
		t.Fatal(err)
	}
	b, err := DeriveReadKey(again)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.record, b.record) || a.id != ids.Identity(ik.ID()) {
		t.Fatal("one identity derives two read keys")
	}
	r, err := decodeReadKey(a.record)
	if err != nil {
		t.Fatal(err)
	}
	if r.id != a.id || !bytes.Equal(r.pub.Bytes(), a.priv.PublicKey().Bytes()) {
		t.Fatal("the record decodes to another key")
	}
	_, c := readKeyOf(t)
	if bytes.Equal(c.priv.PublicKey().Bytes(), a.priv.PublicKey().Bytes()) {
		t.Fatal("two identities share a read key")
	}
	if _, err := DeriveReadKey(nil); err == nil {
		t.Fatal("a nil identity key derives")
	}
}

// TestReadKeyForged: a record changed anywhere, truncated, or re-signed
// for another public key by another identity is refused.
func TestReadKeyForged(t *testing.T) {
	ik, a := readKeyOf(t)
	for i := range a.record {
		bad := bytes.Clone(a.record)
		bad[i] ^= 1
		if _, err := decodeReadKey(bad); !errors.Is(err, ErrBadReadKey) {
			t.Fatalf("byte %d changed: %v", i, err)
		}
	}
	for _, n := range []int{0, 1, 37, len(a.record) - 1} {
		if _, err := decodeReadKey(a.record[:n]); !errors.Is(err, ErrBadReadKey) {
			t.Fatalf("%d bytes: %v", n, err)
		}
	}
	// Another identity puts its HPKE key under ik's public key: the
	// signature is not ik's.
	_, o := readKeyOf(t)
	forged := bytes.Clone(o.record)
	copy(forged[1:33], ik.Public)
	if _, err := decodeReadKey(forged); !errors.Is(err, ErrBadReadKey) {
		t.Fatalf("a record signed by another identity: %v", err)
	}
}

// TestKeyBook: received keys are kept and stored, reload after a restart,
// the book is bounded (the oldest seen goes), and a bad record is an
// error to the dispatcher.
func TestKeyBook(t *testing.T) {
	ik, rk := readKeyOf(t)
	fh := newFakeHost(t)
	s := New(Config{ReadKey: rk, KeyBookSize: 3})
	if err := s.Start(context.Background(), identityHost{fh, ik}); err != nil {
		t.Fatal(err)
	}
	var keys []*ReadKey
	for range 4 {
		_, k := readKeyOf(t)
		keys = append(keys, k)
	}
	now := time.Now()
	for i, k := range keys {
		r, err := decodeReadKey(k.record)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.acc.book.put(s.ns, r, now.Add(time.Duration(i)*time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	if s.KnowsReader(keys[0].id) {
		t.Fatal("the oldest key is kept past the bound")
	}
	for _, k := range keys[1:] {
		if !s.KnowsReader(k.id) {
			t.Fatalf("key %x lost", k.id[:4])
		}
	}
	if !s.KnowsReader(rk.id) {
		t.Fatal("the node's own key is not known")
	}
	if err := s.handleReadKey(dispatchMsg([]byte("junk"))); !errors.Is(err, ErrBadReadKey) {
		t.Fatalf("a bad record: %v", err)
	}
	s.Close()
	// A restart with the same store knows them.
	s2 := New(Config{KeyBookSize: 3})
	if err := s2.Start(context.Background(), identityHost{fh, ik}); err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	for _, k := range keys[1:] {
		if !s2.KnowsReader(k.id) {
			t.Fatalf("key %x lost across a restart", k.id[:4])
		}
	}
	if s2.KnowsReader(keys[0].id) {
		t.Fatal("a dropped key came back")
	}
}

// TestReadKeyOfAnotherIdentity: a read key that is not of the node's
// identity is neither used nor published.
func TestReadKeyOfAnotherIdentity(t *testing.T) {
	ik, _ := readKeyOf(t)
	_, other := readKeyOf(t)
	s, fh := startWithKey(t, ik, other)
	if s.KnowsReader(other.id) || s.readKey() != nil {
		t.Fatal("the key of another identity is used")
	}
	for _, b := range fh.broadcasts() {
		if bytes.Equal(b, other.record) {
			t.Fatal("the key of another identity is published")
		}
	}
	if _, err := s.AddReader(context.Background(), "a", bytes.NewReader([]byte("x")), AddOptions{Readers: []ids.Identity{other.id}}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("an add with no read key of its own: %v", err)
	}
}
