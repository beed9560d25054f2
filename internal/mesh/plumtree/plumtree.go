// Package plumtree is the deterministic core of the Plumtree broadcast
// protocol (Leitão, Pereira and Rodrigues, "Epidemic Broadcast Trees",
// SRDS 2007).
//
// For each origin (broadcasting node) a node keeps its neighbours in two
// sets. Eager peers receive every new message of that origin in full at
// once; lazy peers receive only its id (IHAVE), batched. Trees are kept per
// origin, as in riak_core's broadcast, because with many concurrent
// broadcasters a single shared tree keeps losing links to races between
// prunes and never settles.
// A node that receives a message it already has tells the sender to PRUNE
// the link to lazy for that origin; so each origin's eager links shrink to
// a spanning tree and each node receives each payload about once. When an announced message does
// not arrive in time — a tree link broke — the node sends GRAFT to an
// announcer, which sends the message and makes the link eager again: the
// tree repairs itself.
//
// The core does no I/O, starts no goroutines and reads no clock: the owner
// passes the time to every call, sends the frames returned and calls Tick
// by NextDeadline. It is deterministic: the same calls with the same
// arguments (and Config.Seed) return the same frames in the same order, so
// a simulation replays exactly. It is not safe for concurrent use; the
// owner serialises calls. Every table is bounded, so a hostile neighbour
// cannot grow memory without limit; what is dropped to keep the bounds is
// counted in Stats.
//
// Guarantees: a message is delivered at most once per id while its id is
// remembered (SeenTTL, MaxSeen); on a connected overlay it reaches every
// node as long as, wherever its tree is cut, some neighbour announces it
// and still caches it (CacheTTL, MaxCache) when the graft arrives.
package plumtree

import (
	"bytes"
	"container/heap"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

// PeerID names a neighbour or a message's origin: a node id.
type PeerID = ids.Node

// MsgID names a message. The owner computes it from the content and checks
// it on receipt; the core trusts it.
type MsgID = [32]byte

// Config tunes the protocol. Zero fields take the defaults.
type Config struct {
	IHaveTimeout time.Duration // wait for an announced message before grafting (default 2s)
	GraftRetry   time.Duration // then try the next announcer after this (default 1s)
	LazyFlush    time.Duration // batch IHAVEs at most this long (default 100ms)
	MaxIHave     int           // announcements per IHAVE frame (default 256)
	CacheTTL     time.Duration // keep payloads to answer grafts (default 60s)
	SeenTTL      time.Duration // remember ids to drop duplicates (default 5m)
	MaxCache     int           // payloads kept at most (default 10000)
	MaxSeen      int           // ids remembered at most (default 200000)
	MaxMissing   int           // announced-but-missing ids tracked at most (default 10000)
	MaxLazyQueue int           // queued announcements per lazy peer (default 4096)
	MaxOrigins   int           // origins with a tree of their own (default 4096)
	// LazyFanout is how many lazy peers are told of each message (default
	// 12): announcing to every lazy peer costs O(degree) per message and
	// node, which on a dense overlay is most of the work. With 12 random
	// announcers per forwarding node, a node whose tree link broke misses
	// every announcement of a message with negligible probability.
	LazyFanout int
	Seed       uint64 // seeds the choice of lazy peers (deterministic for tests)
}

func (c *Config) fill() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	defInt := func(d *int, v int) {
		if *d <= 0 {
			*d = v
		}
	}
	// Long enough that a loaded node's slow eager path is not mistaken
	// for a broken one: spurious grafts add links, links add duplicates,
	// duplicates add load.
	def(&c.IHaveTimeout, 2*time.Second)
	def(&c.GraftRetry, time.Second)
	def(&c.LazyFlush, 100*time.Millisecond)
	def(&c.CacheTTL, time.Minute)
	def(&c.SeenTTL, 5*time.Minute)
	defInt(&c.MaxIHave, 256)
	defInt(&c.MaxCache, 10000)
	defInt(&c.MaxSeen, 200000)
	defInt(&c.MaxMissing, 10000)
	defInt(&c.MaxLazyQueue, 4096)
	defInt(&c.MaxOrigins, 4096)
	defInt(&c.LazyFanout, 12)
}

// maxAnnouncers is how many announcers of one missing id are remembered.
const maxAnnouncers = 8

// Send is a frame for the owner to send to a neighbour.
type Send struct {
	To    PeerID
	Frame *pb.Frame
}

// Stats count what the tree did.
type Stats struct {
	Delivered      uint64 // messages delivered (received or originated)
	Originated     uint64 // messages broadcast by this node
	Duplicates     uint64 // payloads received again
	EagerSent      uint64 // payloads pushed (eager push and graft answers)
	EagerBytes     uint64 // bytes of those payloads
	LazySent       uint64 // announcements sent
	GraftsSent     uint64
	PrunesSent     uint64
	Dropped        uint64 // announcements, announcers, ids or origin trees dropped to keep bounds
	Peers          int    // neighbours
	Origins        int    // origins with a tree
	LazyLinks      int    // (origin, neighbour) pairs pushed lazily
	Cached, Missed int    // payloads cached; ids announced but missing
}

type cached struct {
	origin  PeerID
	kind    uint32
	payload []byte
	hops    uint32
	at      time.Time
}

// missing is a message announced but not received: its graft timer.
type missing struct {
	id         MsgID
	origin     PeerID
	announcers []PeerID // in order of announcement
	next       int      // index of the next announcer to graft
	deadline   time.Time
	index      int // in Tree.timers
}

type stamped struct {
	id MsgID
	at time.Time
}

// Tree is one node's Plumtree state.
type Tree struct {
	cfg   Config
	peers map[PeerID]struct{}
	// peerList holds the neighbours sorted, so that every walk over them
	// (and so the order of the frames returned) is deterministic.
	peerList []PeerID
	// lazy[origin] holds the neighbours pushed lazily for that origin; all
	// other neighbours are eager. A new origin starts with every link eager.
	lazy map[PeerID]map[PeerID]struct{}
	// origins lists the keys of lazy in order of creation, oldest first:
	// the one forgotten when MaxOrigins is reached.
	origins []PeerID

	seen      map[MsgID]struct{}
	seenFIFO  []stamped
	cache     map[MsgID]*cached
	cacheFIFO []stamped
	missing   map[MsgID]*missing
	timers    timerHeap // the entries of missing, earliest deadline first

	lazyQ        map[PeerID][]*pb.Announcement
	lazyDeadline time.Time // zero: nothing queued
	rng          *rand.Rand
	lazyBuf      []PeerID // scratch for push

	stats Stats
}

// New returns an empty tree.
func New(cfg Config) *Tree {
	cfg.fill()
	return &Tree{
		cfg:     cfg,
		peers:   map[PeerID]struct{}{},
		lazy:    map[PeerID]map[PeerID]struct{}{},
		seen:    map[MsgID]struct{}{},
		cache:   map[MsgID]*cached{},
		missing: map[MsgID]*missing{},
		lazyQ:   map[PeerID][]*pb.Announcement{},
		rng:     rand.New(rand.NewPCG(cfg.Seed, 0x9e3779b97f4a7c15)),
	}
}

func comparePeers(a, b PeerID) int { return bytes.Compare(a[:], b[:]) }

// AddPeer adds a neighbour; new neighbours start eager for every origin.
// Adding a neighbour twice is harmless.
func (t *Tree) AddPeer(p PeerID) {
	if _, ok := t.peers[p]; ok {
		return
	}
	t.peers[p] = struct{}{}
	i, _ := slices.BinarySearchFunc(t.peerList, p, comparePeers)
	t.peerList = slices.Insert(t.peerList, i, p)
}

// RemovePeer forgets a neighbour: its links in every tree, the
// announcements queued for it and its announcements of missing messages
// (the grafts go to other announcers).
func (t *Tree) RemovePeer(p PeerID) {
	if _, ok := t.peers[p]; !ok {
		return
	}
	delete(t.peers, p)
	if i, ok := slices.BinarySearchFunc(t.peerList, p, comparePeers); ok {
		t.peerList = slices.Delete(t.peerList, i, i+1)
	}
	delete(t.lazyQ, p)
	for _, l := range t.lazy {
		delete(l, p)
	}
	for _, m := range t.missing {
		if i := slices.Index(m.announcers, p); i >= 0 {
			m.announcers = slices.Delete(m.announcers, i, i+1)
			if i < m.next {
				m.next--
			}
		}
	}
}

// Peers returns the eager and lazy neighbours for messages of origin, each
// sorted.
func (t *Tree) Peers(origin PeerID) (eager, lazy []PeerID) {
	for _, p := range t.peerList {
		if t.isEager(origin, p) {
			eager = append(eager, p)
		} else {
			lazy = append(lazy, p)
		}
	}
	return eager, lazy
}

func (t *Tree) isEager(origin, p PeerID) bool {
	_, lazy := t.lazy[origin][p]
	return !lazy
}

// setEager moves p to the eager or the lazy set of origin.
func (t *Tree) setEager(origin, p PeerID, eager bool) {
	l := t.lazy[origin]
	if eager {
		delete(l, p)
		return
	}
	if l == nil {
		if len(t.lazy) >= t.cfg.MaxOrigins {
			// Forget the oldest origin: its tree starts all-eager again
			// and the prunes of its next message rebuild it.
			delete(t.lazy, t.origins[0])
			t.origins[0] = PeerID{}
			t.origins = t.origins[1:]
			t.stats.Dropped++
		}
		l = map[PeerID]struct{}{}
		t.lazy[origin] = l
		t.origins = append(t.origins, origin)
	}
	l[p] = struct{}{}
}

// Seen reports whether the message id was delivered or originated here
// (within SeenTTL), so the owner can skip verifying a duplicate.
func (t *Tree) Seen(id MsgID) bool {
	_, ok := t.seen[id]
	return ok
}

// Broadcast originates a message; origin is the local node's id and id is
// the message's id, which the owner derives from kind and payload. It
// returns the eager pushes; announcements to lazy peers go out on a later
// Tick. A message already seen is not sent again. The payload is kept, not
// copied: the caller must not modify it.
func (t *Tree) Broadcast(now time.Time, origin PeerID, id MsgID, kind uint32, payload []byte) []Send {
	if t.Seen(id) {
		return nil
	}
	t.stats.Originated++
	t.accept(now, origin, id, kind, payload, 0)
	return t.push(now, nil, origin, id, kind, payload, 0)
}

// ErrUnknownPeer is returned for a frame from a peer not added.
var ErrUnknownPeer = errors.New("plumtree: frame from unknown peer")

// HandleFrame processes a Gossip, IHave, Graft or Prune frame from
// neighbour from. deliver is non-nil exactly once per message id: the first
// time its payload arrives; it is the frame's Gossip, for the owner to hand
// to the application (its payload is kept for grafts and must not be
// modified). out are the frames to send now. err is non-nil, and the
// frame has had no effect, if from is not a neighbour, if the frame is of
// another kind or if an id or origin is not 32 bytes long.
func (t *Tree) HandleFrame(now time.Time, from PeerID, f *pb.Frame) (deliver *pb.Gossip, out []Send, err error) {
	if _, ok := t.peers[from]; !ok {
		return nil, nil, ErrUnknownPeer
	}
	switch b := f.GetBody().(type) {
	case *pb.Frame_Gossip:
		return t.handleGossip(now, from, b.Gossip)
	case *pb.Frame_Ihave:
		return nil, nil, t.handleIHave(now, from, b.Ihave)
	case *pb.Frame_Graft:
		out, err := t.handleGraft(from, b.Graft)
		return nil, out, err
	case *pb.Frame_Prune:
		if b.Prune == nil || len(b.Prune.Origin) != 32 {
			return nil, nil, errors.New("plumtree: prune without a 32-byte origin")
		}
		t.setEager(PeerID(b.Prune.Origin), from, false)
		return nil, nil, nil
	}
	return nil, nil, fmt.Errorf("plumtree: not a tree frame (%T)", f.GetBody())
}

func (t *Tree) handleGossip(now time.Time, from PeerID, g *pb.Gossip) (*pb.Gossip, []Send, error) {
	if g == nil || len(g.Id) != 32 || len(g.Origin) != 32 {
		return nil, nil, errors.New("plumtree: gossip without a 32-byte id and origin")
	}
	id, origin := MsgID(g.Id), PeerID(g.Origin)
	if t.Seen(id) {
		t.stats.Duplicates++
		if t.isEager(origin, from) {
			t.setEager(origin, from, false)
			t.stats.PrunesSent++
			return nil, []Send{{To: from, Frame: &pb.Frame{Body: &pb.Frame_Prune{Prune: &pb.Prune{Origin: g.Origin}}}}}, nil
		}
		return nil, nil, nil
	}
	// The sender is this node's parent in the origin's tree. Unlike the
	// paper's shared tree, the link is not made eager from this side:
	// per origin the tree is directed, and promoting parents made links
	// flap under load (on 30 dense nodes, 4.7 payloads per delivery
	// instead of 1.5-1.7 in the same run of the benchmark).
	hops := g.Hops + 1
	t.accept(now, origin, id, g.Kind, g.Payload, hops)
	return g, t.push(now, &from, origin, id, g.Kind, g.Payload, hops), nil
}

// accept records a new message as seen and cached and stops its graft
// timer.
func (t *Tree) accept(now time.Time, origin PeerID, id MsgID, kind uint32, payload []byte, hops uint32) {
	if m := t.missing[id]; m != nil {
		heap.Remove(&t.timers, m.index)
		delete(t.missing, id)
	}
	t.stats.Delivered++
	t.seen[id] = struct{}{}
	t.seenFIFO = append(t.seenFIFO, stamped{id, now})
	for len(t.seen) > t.cfg.MaxSeen {
		t.expireSeenOne()
	}
	t.cache[id] = &cached{origin: origin, kind: kind, payload: payload, hops: hops, at: now}
	t.cacheFIFO = append(t.cacheFIFO, stamped{id, now})
	for len(t.cache) > t.cfg.MaxCache {
		t.expireCacheOne()
	}
}

// push sends the payload to the origin's eager peers and queues
// announcements for its lazy ones, skipping the peer it came from.
func (t *Tree) push(now time.Time, from *PeerID, origin PeerID, id MsgID, kind uint32, payload []byte, hops uint32) []Send {
	var out []Send
	var frame *pb.Frame
	lazy := t.lazyBuf[:0]
	for _, p := range t.peerList {
		if from != nil && p == *from {
			continue
		}
		if t.isEager(origin, p) {
			if frame == nil {
				frame = &pb.Frame{Body: &pb.Frame_Gossip{Gossip: &pb.Gossip{
					Id: id[:], Kind: kind, Payload: payload, Hops: hops, Origin: origin[:]}}}
			}
			out = append(out, Send{To: p, Frame: frame})
			t.stats.EagerSent++
			t.stats.EagerBytes += uint64(len(payload))
			continue
		}
		lazy = append(lazy, p)
	}
	// Announce to at most LazyFanout lazy peers, chosen at random.
	for i := 0; i < len(lazy) && i < t.cfg.LazyFanout; i++ {
		j := i + t.rng.IntN(len(lazy)-i)
		lazy[i], lazy[j] = lazy[j], lazy[i]
		p := lazy[i]
		q := t.lazyQ[p]
		if len(q) >= t.cfg.MaxLazyQueue {
			t.stats.Dropped++
			continue
		}
		t.lazyQ[p] = append(q, &pb.Announcement{Id: id[:], Hops: hops, Origin: origin[:]})
		if t.lazyDeadline.IsZero() {
			t.lazyDeadline = now.Add(t.cfg.LazyFlush)
		}
	}
	t.lazyBuf = lazy[:0]
	return out
}

// handleIHave records the announcer of each message not seen and starts
// its graft timer. A frame with one malformed announcement is rejected
// whole.
func (t *Tree) handleIHave(now time.Time, from PeerID, ih *pb.IHave) error {
	for _, a := range ih.GetMessages() {
		if len(a.GetId()) != 32 || len(a.GetOrigin()) != 32 {
			return errors.New("plumtree: announcement without a 32-byte id and origin")
		}
	}
	for _, a := range ih.GetMessages() {
		id := MsgID(a.Id)
		if t.Seen(id) {
			continue
		}
		m := t.missing[id]
		if m == nil {
			if len(t.missing) >= t.cfg.MaxMissing {
				t.stats.Dropped++
				continue
			}
			m = &missing{id: id, origin: PeerID(a.Origin), deadline: now.Add(t.cfg.IHaveTimeout)}
			t.missing[id] = m
			heap.Push(&t.timers, m)
		}
		if slices.Contains(m.announcers, from) {
			continue
		}
		if len(m.announcers) >= maxAnnouncers {
			t.stats.Dropped++
			continue
		}
		m.announcers = append(m.announcers, from)
	}
	return nil
}

func (t *Tree) handleGraft(from PeerID, g *pb.Graft) ([]Send, error) {
	if g == nil || len(g.Id) != 32 || len(g.Origin) != 32 {
		return nil, errors.New("plumtree: graft without a 32-byte id and origin")
	}
	t.setEager(PeerID(g.Origin), from, true)
	c := t.cache[MsgID(g.Id)]
	if c == nil {
		return nil, nil // expired: the peer tries another announcer
	}
	t.stats.EagerSent++
	t.stats.EagerBytes += uint64(len(c.payload))
	return []Send{{To: from, Frame: &pb.Frame{Body: &pb.Frame_Gossip{Gossip: &pb.Gossip{
		Id: g.Id, Kind: c.kind, Payload: c.payload, Hops: c.hops, Origin: c.origin[:]}}}}}, nil
}
