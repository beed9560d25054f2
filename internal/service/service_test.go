package service

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"go.uber.org/goleak"

	"github.com/pipesnet/pipes/internal/dispatch"
	"github.com/pipesnet/pipes/internal/kinds"
	"github.com/pipesnet/pipes/internal/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echo is a service that handles one kind on a group of its own and
// records its life in log.
type echo struct {
	name     string
	kind     uint32
	log      *[]string
	failWith error
	got      chan dispatch.Msg
	host     Host
}

func (s *echo) Name() string { return s.name }

func (s *echo) Register(r Registrar) error {
	g, err := r.Group(s.name, dispatch.GroupConfig{Queue: 4})
	if err != nil {
		return err
	}
	return g.Handle(s.kind, dispatch.Route{Paths: kinds.Routed, Handle: func(m dispatch.Msg) error {
		s.got <- m
		return nil
	}})
}

func (s *echo) Start(_ context.Context, h Host) error {
	if s.failWith != nil {
		return s.failWith
	}
	s.host = h
	*s.log = append(*s.log, "start "+s.name)
	return nil
}

func (s *echo) Close() error {
	*s.log = append(*s.log, "close "+s.name)
	return nil
}

func TestSetWiresKindsAndRunsServicesInOrder(t *testing.T) {
	d := dispatch.New(nil)
	defer d.Close()
	var log []string
	a := &echo{name: "a", kind: kinds.FileGet, log: &log, got: make(chan dispatch.Msg, 1)}
	b := &echo{name: "b", kind: kinds.FileData, log: &log, got: make(chan dispatch.Msg, 1)}
	s := NewSet(d)
	for _, svc := range []Service{a, b} {
		if err := s.Add(svc); err != nil {
			t.Fatal(err)
		}
	}
	// A third service that claims a's kind is refused.
	if err := s.Add(&echo{name: "c", kind: kinds.FileGet, log: &log}); !errors.Is(err, dispatch.ErrDuplicate) {
		t.Fatalf("a service claiming a kind taken: %v", err)
	}
	if err := s.Start(context.Background(), func(string) Host { return nil }); err != nil {
		t.Fatal(err)
	}
	d.Dispatch(dispatch.Msg{Kind: kinds.FileData, Via: kinds.Routed, Payload: []byte("to b")})
	if m := <-b.got; string(m.Payload) != "to b" {
		t.Fatalf("b got %q", m.Payload)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	want := []string{"start a", "start b", "close b", "close a"}
	if len(log) != len(want) {
		t.Fatalf("life %v, want %v", log, want)
	}
	for i := range want {
		if log[i] != want[i] {
			t.Fatalf("life %v, want %v", log, want)
		}
	}
}

func TestSetStartFailureClosesThoseStarted(t *testing.T) {
	d := dispatch.New(nil)
	defer d.Close()
	var log []string
	boom := errors.New("boom")
	s := NewSet(d)
	s.Add(&echo{name: "a", kind: kinds.FileGet, log: &log})
	s.Add(&echo{name: "b", kind: kinds.FileData, log: &log, failWith: boom})
	if err := s.Start(context.Background(), func(string) Host { return nil }); !errors.Is(err, boom) {
		t.Fatalf("Start: %v", err)
	}
	if len(log) != 2 || log[0] != "start a" || log[1] != "close a" {
		t.Fatalf("life %v, want a started and closed", log)
	}
}

func TestStoreNamespaceKeepsToItsPrefix(t *testing.T) {
	db, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	a, b := StoreNamespace(db, []byte("va\x00")), StoreNamespace(db, []byte("vb\x00"))
	if err := a.Set([]byte("k1"), []byte("1")); err != nil {
		t.Fatal(err)
	}
	if err := b.Set([]byte("k1"), []byte("other")); err != nil {
		t.Fatal(err)
	}
	a.Set([]byte("k2"), []byte("2"))
	if v, err := a.Get([]byte("k1")); err != nil || string(v) != "1" {
		t.Fatalf("a's k1: %q, %v", v, err)
	}
	var keys [][]byte
	if err := a.Scan([]byte("k"), func(k, _ []byte) error { keys = append(keys, bytes.Clone(k)); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || string(keys[0]) != "k1" || string(keys[1]) != "k2" {
		t.Fatalf("a's keys %q, want k1 k2 without the prefix", keys)
	}
	if err := a.Delete([]byte("k1")); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Get([]byte("k1")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted key: %v", err)
	}
	if v, _ := b.Get([]byte("k1")); string(v) != "other" {
		t.Fatalf("b's k1 became %q", v)
	}
	if _, err := StoreNamespace(nil, nil).Get([]byte("k")); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("namespace without a store: %v", err)
	}
}
