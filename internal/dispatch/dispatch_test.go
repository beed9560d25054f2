package dispatch

import (
	"errors"
	"testing"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/pipesnet/pipes/internal/kinds"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func group(t *testing.T, d *Dispatcher, name string, queue int) *Group {
	t.Helper()
	g, err := d.Group(name, GroupConfig{Queue: queue})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func nop(Msg) error { return nil }

func TestAKindHasOneHandler(t *testing.T) {
	d := New(nil)
	defer d.Close()
	a, b := group(t, d, "a", 4), group(t, d, "b", 0)
	if err := a.Handle(kinds.Notes, Route{Paths: kinds.Routed, Handle: nop}); err != nil {
		t.Fatal(err)
	}
	if err := a.Handle(kinds.Notes, Route{Paths: kinds.Routed, Handle: nop}); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("second registration in the same group: %v", err)
	}
	if err := b.Handle(kinds.Notes, Route{Paths: kinds.Broadcast, Handle: nop}); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("second registration in another group: %v", err)
	}
	if _, err := d.Group("a", GroupConfig{}); err == nil {
		t.Fatal("two groups share a name")
	}
	if err := b.Handle(kinds.Sync, Route{Paths: kinds.Routed}); err == nil {
		t.Fatal("a route without a handler registered")
	}
}

func TestUnknownKindsAndWrongPathsAreCountedAndDropped(t *testing.T) {
	d := New(nil)
	defer d.Close()
	ran := 0
	g := group(t, d, "inline", 0)
	if err := g.Handle(kinds.RealtimeKey, Route{Paths: kinds.InSealed, Handle: func(Msg) error { ran++; return nil }}); err != nil {
		t.Fatal(err)
	}
	if d.Dispatch(Msg{Kind: 9999, Via: kinds.Routed, Payload: []byte("?")}) {
		t.Fatal("a message of an unknown kind was taken")
	}
	if _, err := d.Validate(9999, nil, [32]byte{}); !errors.Is(err, ErrUnknownKind) {
		t.Fatalf("Validate of an unknown kind: %v", err)
	}
	if err := d.Run(Msg{Kind: 9999, Via: kinds.Routed}); !errors.Is(err, ErrUnknownKind) {
		t.Fatalf("Run of an unknown kind: %v", err)
	}
	// A sealed-only kind that comes in clear, or by two paths at once.
	if d.Dispatch(Msg{Kind: kinds.RealtimeKey, Via: kinds.Routed}) ||
		d.Dispatch(Msg{Kind: kinds.RealtimeKey, Via: kinds.Routed | kinds.InSealed}) {
		t.Fatal("a message on a path its kind does not take was taken")
	}
	if _, err := d.Validate(kinds.RealtimeKey, nil, [32]byte{}); !errors.Is(err, ErrWrongPath) {
		t.Fatalf("Validate of a kind that is not broadcast: %v", err)
	}
	if !d.Dispatch(Msg{Kind: kinds.RealtimeKey, Via: kinds.InSealed}) || ran != 1 {
		t.Fatalf("the inline handler ran %d times before Dispatch returned, want 1", ran)
	}
	if s := d.Stats(); s.Unknown != 3 || s.Refused != 3 || s.Dropped != 0 {
		t.Fatalf("stats %+v, want 3 unknown, 3 refused", s)
	}
}

// A handler that does not return holds up its own group only: the other
// group's messages are handled meanwhile, and the slow group's messages
// are handled in order once it goes on.
func TestSlowGroupDoesNotBlockAnother(t *testing.T) {
	d := New(nil)
	defer d.Close()
	slow, fast := group(t, d, "slow", 64), group(t, d, "fast", 64)
	entered, release := make(chan struct{}), make(chan struct{})
	var order []byte
	slowDone := make(chan struct{})
	err := slow.Handle(kinds.Sync, Route{Paths: kinds.Routed, Handle: func(m Msg) error {
		if m.Payload[0] == 0 {
			entered <- struct{}{}
			<-release
		}
		order = append(order, m.Payload[0])
		if m.Payload[0] == 9 {
			close(slowDone)
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	fastDone := make(chan byte, 10)
	if err := fast.Handle(kinds.FileData, Route{Paths: kinds.Routed, Handle: func(m Msg) error {
		fastDone <- m.Payload[0]
		return nil
	}}); err != nil {
		t.Fatal(err)
	}
	for i := range byte(10) {
		if !d.Dispatch(Msg{Kind: kinds.Sync, Via: kinds.Routed, Payload: []byte{i}}) {
			t.Fatalf("slow message %d refused", i)
		}
	}
	<-entered // the slow group's worker is stuck in message 0
	for i := range byte(10) {
		d.Dispatch(Msg{Kind: kinds.FileData, Via: kinds.Routed, Payload: []byte{i}})
	}
	for i := range byte(10) {
		if v := <-fastDone; v != i { // handled while the slow group is stuck
			t.Fatalf("fast group handled %d as number %d", v, i)
		}
	}
	select {
	case <-slowDone:
		t.Fatal("the slow group went on before it was released")
	default:
	}
	close(release)
	<-slowDone
	for i, v := range order {
		if v != byte(i) {
			t.Fatalf("slow group handled %v: out of order", order)
		}
	}
	if len(order) != 10 {
		t.Fatalf("slow group handled %d messages, want 10", len(order))
	}
}

func TestFullQueueDropsAndTells(t *testing.T) {
	d := New(nil)
	defer d.Close()
	var full []Msg
	g, err := d.Group("g", GroupConfig{Queue: 2, OnFull: func(m Msg) { full = append(full, m) }})
	if err != nil {
		t.Fatal(err)
	}
	entered, release := make(chan struct{}), make(chan struct{})
	if err := g.Handle(kinds.Direct, Route{Paths: kinds.Routed, Handle: func(Msg) error {
		entered <- struct{}{}
		<-release
		return nil
	}}); err != nil {
		t.Fatal(err)
	}
	m := Msg{Kind: kinds.Direct, Via: kinds.Routed}
	d.Dispatch(m)
	<-entered
	for range 2 {
		if !d.Dispatch(m) {
			t.Fatal("a message refused with room in the queue")
		}
	}
	if d.Dispatch(m) {
		t.Fatal("a full queue took a message")
	}
	if len(full) != 1 || d.Stats().Dropped != 1 {
		t.Fatalf("OnFull told of %d messages, %d counted dropped; want 1", len(full), d.Stats().Dropped)
	}
	close(release)
	<-entered
	<-entered
}

func TestCloseStopsWorkers(t *testing.T) {
	d := New(nil)
	handled := make(chan struct{}, 1)
	for _, name := range []string{"a", "b", "c"} {
		group(t, d, name, 16)
	}
	g := group(t, d, "d", 16)
	if err := g.Handle(kinds.Notes, Route{Paths: kinds.Routed, Handle: func(Msg) error { handled <- struct{}{}; return nil }}); err != nil {
		t.Fatal(err)
	}
	d.Dispatch(Msg{Kind: kinds.Notes, Via: kinds.Routed})
	<-handled
	d.Close()
	goleak.VerifyNone(t)
	if d.Dispatch(Msg{Kind: kinds.Notes, Via: kinds.Routed}) {
		t.Fatal("a closed dispatcher took a message")
	}
	if _, err := d.Group("e", GroupConfig{Queue: 1}); !errors.Is(err, ErrClosed) {
		t.Fatalf("a group made after Close: %v", err)
	}
}

func TestProtoHandler(t *testing.T) {
	var got *pb.FileGet
	h := Proto(func(_ Msg, g *pb.FileGet) error { got = g; return nil })
	raw, _ := proto.Marshal(&pb.FileGet{Index: 7})
	if err := h(Msg{Kind: kinds.FileGet, Payload: raw}); err != nil || got.GetIndex() != 7 {
		t.Fatalf("decoded %v, %v", got, err)
	}
	body := &pb.FileGet{Index: 8}
	if err := h(Msg{Kind: kinds.FileGet, Body: body}); err != nil || got != body {
		t.Fatalf("a decoded body was not handed as is: %v, %v", got, err)
	}
	if err := h(Msg{Kind: kinds.FileGet, Body: (*pb.FileGet)(nil)}); err == nil {
		t.Fatal("an empty body was handled")
	}
	if err := h(Msg{Kind: kinds.FileGet, Body: &pb.FileData{}}); err == nil {
		t.Fatal("a body of another type was handled")
	}
	if err := h(Msg{Kind: kinds.FileGet, Payload: []byte{0xff, 0xff}}); err == nil {
		t.Fatal("a payload that does not decode was handled")
	}
}
