package files

import (
	"bytes"
	"context"
	"crypto/sha256"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/pipesnet/pipes/internal/blob"
	"github.com/pipesnet/pipes/internal/identity"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/service"
)

// fakeHost is a service.Host of one node alone: it records what the
// service sends.
type fakeHost struct {
	t     *testing.T
	key   *identity.KeyPair
	blobs *blob.Store
	ns    *memNS
	ln    *fakeListener

	mu        sync.Mutex
	broadcast [][]byte
	sent      map[ids.Node][][]byte
	presence  func(service.PresenceEvent)
}

func newFakeHost(t *testing.T) *fakeHost {
	k, _ := keyPair(t)
	bs, err := blob.Open(t.TempDir(), [32]byte{1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bs.Close() })
	return &fakeHost{t: t, key: k, blobs: bs, ns: &memNS{m: map[string][]byte{}},
		ln: &fakeListener{done: make(chan struct{})}, sent: map[ids.Node][][]byte{}}
}

func (h *fakeHost) Self() ids.Node { return ids.Node(sha256.Sum256(h.key.Public)) }
func (h *fakeHost) Keys() service.Keys {
	return service.Keys{Node: h.key, Cert: &identity.Cert{NodeKey: h.key.Public, NetworkID: testNetwork}}
}
func (h *fakeHost) Send(_ context.Context, dst ids.Node, _ uint32, p []byte) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.sent[dst] = append(h.sent[dst], p)
	return nil
}
func (h *fakeHost) SendDirect(context.Context, ids.Node, uint32, []byte) error { return nil }
func (h *fakeHost) Broadcast(_ context.Context, _ uint32, p []byte) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.broadcast = append(h.broadcast, p)
	return nil
}
func (h *fakeHost) Peers() []ids.Node                     { return nil }
func (h *fakeHost) Online() []ids.Node                    { return nil }
func (h *fakeHost) NodeKey(ids.Node) ([]byte, bool)       { return nil, false }
func (h *fakeHost) Member(ids.Node) ([32]byte, bool)      { return [32]byte{}, false }
func (h *fakeHost) Punch(context.Context, ids.Node) error { return service.ErrUnavailable }
func (h *fakeHost) OpenStream(context.Context, ids.Node, uint16) (*quic.Stream, error) {
	return nil, service.ErrUnavailable
}
func (h *fakeHost) Route(context.Context, ids.Node) (ids.Node, bool, error) {
	return ids.Node{}, false, service.ErrUnavailable
}
func (h *fakeHost) Store() service.Namespace { return h.ns }
func (h *fakeHost) Presence(f func(service.PresenceEvent)) func() {
	h.mu.Lock()
	h.presence = f
	h.mu.Unlock()
	return func() {}
}
func (h *fakeHost) Dial(context.Context, ids.Node, string) (net.Conn, error) {
	return nil, service.ErrUnavailable
}
func (h *fakeHost) Listen(string) (net.Listener, error) { return h.ln, nil }
func (h *fakeHost) Blobs() (*blob.Store, error)         { return h.blobs, nil }

func (h *fakeHost) broadcasts() [][]byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.broadcast)
}

type memNS struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (n *memNS) Get(k []byte) ([]byte, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.m[string(k)], nil
}
func (n *memNS) Set(k, v []byte) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.m[string(k)] = bytes.Clone(v)
	return nil
}
func (n *memNS) Delete(k []byte) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.m, string(k))
	return nil
}
func (n *memNS) Scan(prefix []byte, fn func(k, v []byte) error) error {
	n.mu.Lock()
	keys := make([]string, 0, len(n.m))
	for k := range n.m {
		if strings.HasPrefix(k, string(prefix)) {
			keys = append(keys, k)
		}
	}
	n.mu.Unlock()
	slices.Sort(keys)
	for _, k := range keys {
		v, _ := n.Get([]byte(k))
		if err := fn([]byte(k), v); err != nil {
			return err
		}
	}
	return nil
}

type fakeListener struct {
	once sync.Once
	done chan struct{}
}

func (l *fakeListener) Accept() (net.Conn, error) { <-l.done; return nil, net.ErrClosed }
func (l *fakeListener) Close() error              { l.once.Do(func() { close(l.done) }); return nil }
func (l *fakeListener) Addr() net.Addr            { return &net.UnixAddr{Name: "fake"} }

// The announcer: one broadcast per burst of changes, after the delay;
// one per period; the last announcement sent to a node that comes
// online; each announcement newer than the one before and listing the
// files held.
func TestAnnouncer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newFakeHost(t)
		s := New(Config{AnnounceDelay: time.Second, AnnounceEvery: time.Hour})
		if err := s.Start(context.Background(), h); err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		time.Sleep(2 * time.Second)
		if n := len(h.broadcasts()); n != 1 {
			t.Fatalf("%d broadcasts after start, want 1", n)
		}
		ctx := context.Background()
		var added []ids.Content
		for i := range 3 {
			id, err := s.AddReader(ctx, "f", bytes.NewReader([]byte{byte(i), 1, 2}), AddOptions{})
			if err != nil {
				t.Fatal(err)
			}
			added = append(added, id)
			time.Sleep(100 * time.Millisecond)
		}
		synctest.Wait()
		if n := len(h.broadcasts()); n != 1 {
			t.Fatalf("%d broadcasts before the delay, want 1", n)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		bs := h.broadcasts()
		if len(bs) != 2 {
			t.Fatalf("%d broadcasts after a burst of three adds, want 2", len(bs))
		}
		first, _ := decodeHoldings(bs[0], testNetwork, h.Self())
		last, err := decodeHoldings(bs[1], testNetwork, h.Self())
		if err != nil {
			t.Fatal(err)
		}
		slices.SortFunc(added, compareIDs)
		if !slices.Equal(last.files, added) || last.seq <= first.seq {
			t.Fatalf("announced %v (seq %d after %d), want %v", last.files, last.seq, first.seq, added)
		}

		time.Sleep(time.Hour)
		synctest.Wait()
		if n := len(h.broadcasts()); n != 3 {
			t.Fatalf("%d broadcasts after a period, want 3", n)
		}
		other := ids.Node{7}
		h.mu.Lock()
		f := h.presence
		h.mu.Unlock()
		f(service.PresenceEvent{Node: other, Online: true})
		synctest.Wait()
		h.mu.Lock()
		sent := h.sent[other]
		h.mu.Unlock()
		if len(sent) != 1 || !bytes.Equal(sent[0], h.broadcasts()[2]) {
			t.Fatalf("sent %d announcements to the node that came online, want the last one", len(sent))
		}
	})
}
