package mesh

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/kinds"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

// Routing: every node's status lists its direct peers, so each node knows
// the graph of the overlay (link state) and sends a routed message to the
// first hop of a shortest path. A link counts if either end announces it;
// a relay that finds no route drops the message and counts it. Routes are
// recomputed after any change of peers or presence, so traffic moves to
// another path as soon as the node that left is known to have left.

// maxTTL bounds how many hops a routed message may travel.
const maxTTL = 32

// ErrNoRoute is returned by Send when the destination is unreachable.
var ErrNoRoute = errors.New("mesh: no route to node")

// ErrBusy is returned by Send and SendDirect when the first hop's send
// queue is three-quarters full: the caller should retry later (or drop
// what it can afford to lose). Three-quarters keeps room for the mesh's
// own control frames.
var ErrBusy = errors.New("mesh: the link's send queue is full")

type sendReq struct {
	direct  bool
	dst     ids.Node
	kind    uint32
	payload []byte
	done    chan error
}

// Send routes payload to node dst. It returns once the message is queued on
// the first hop; delivery is not acknowledged. ErrNoRoute if dst cannot be
// reached now.
func (m *Mesh) Send(ctx context.Context, dst ids.Node, kind uint32, payload []byte) error {
	return m.request(ctx, sendReq{dst: dst, kind: kind, payload: payload})
}

// request hands a send to the loop and waits for its verdict.
func (m *Mesh) request(ctx context.Context, req sendReq) error {
	req.done = make(chan error, 1)
	select {
	case m.sendCh <- req:
	case <-ctx.Done():
		return ctx.Err()
	case <-m.loopDone:
		return ErrClosed
	}
	return <-req.done
}

// ErrNotPeer is returned by SendDirect when the destination is not a
// direct peer.
var ErrNotPeer = errors.New("mesh: not a direct peer")

// SendDirect sends payload to dst only if dst is a direct peer, on their
// QUIC connection, with a hop limit of one so that no node can relay it.
// It is for data that must not pass through third nodes unencrypted.
func (m *Mesh) SendDirect(ctx context.Context, dst ids.Node, kind uint32, payload []byte) error {
	return m.request(ctx, sendReq{dst: dst, kind: kind, payload: payload, direct: true})
}

// send handles a Send or SendDirect request on the loop.
func (m *Mesh) send(req sendReq) error {
	r := &pb.Routed{Dst: req.dst[:], Src: m.self[:], Ttl: maxTTL, Kind: req.kind, Payload: req.payload}
	if !req.direct {
		return m.route(r, true)
	}
	p := m.peers[req.dst]
	if p == nil {
		return ErrNotPeer
	}
	r.Ttl = 1 // never relayed
	if p.busy() {
		return ErrBusy
	}
	p.send(&pb.Frame{Body: &pb.Frame_Routed{Routed: r}})
	return nil
}

// route sends r towards its destination. With checkBusy a nearly full
// first hop gives ErrBusy; without (forwarding for others) the frame is
// queued if there is room at all.
func (m *Mesh) route(r *pb.Routed, checkBusy bool) error {
	dst := ids.Node(r.Dst)
	if dst == m.self {
		return errors.New("mesh: routed to self")
	}
	hop, ok := m.nextHop(dst)
	if !ok {
		return fmt.Errorf("%w %x", ErrNoRoute, dst[:4])
	}
	if checkBusy && m.peers[hop].busy() {
		return ErrBusy
	}
	m.peers[hop].send(&pb.Frame{Body: &pb.Frame_Routed{Routed: r}})
	return nil
}

// handleRouted delivers or forwards a routed message from peer p.
func (m *Mesh) handleRouted(p *peer, r *pb.Routed) {
	if len(r.Dst) != 32 || len(r.Src) != 32 {
		m.bad(p, "routed message without 32-byte addresses")
		return
	}
	if ids.Node(r.Dst) == m.self {
		src := ids.Node(r.Src)
		if m.handlePing(src, r.Kind, r.Payload) || m.handlePunch(time.Now(), src, r.Kind, r.Payload) ||
			m.handleCheck(time.Now(), src, r.Kind, r.Payload) || m.handleObserved(p, src, r.Kind, r.Payload) {
			return
		}
		if m.cfg.DeliverRouted != nil {
			m.cfg.DeliverRouted(ids.Node(r.Src), r.Kind, r.Payload)
		}
		return
	}
	if r.Ttl <= 1 {
		m.stats.noRoute.Add(1)
		return
	}
	// This node did not send it; and a notice of an observed address is
	// only a direct peer's word, never relayed (else a member could
	// speak for this node to its own peers).
	if ids.Node(r.Src) == m.self || r.Kind == kinds.Observed {
		m.bad(p, "routed message that claims this node as its source, or a relayed notice")
		return
	}
	if !m.mayRelay(p, len(r.Payload)) {
		return
	}
	r.Ttl--
	if m.cfg.OnForward != nil {
		m.cfg.OnForward(r)
	}
	if err := m.route(r, false); err != nil {
		m.stats.noRoute.Add(1)
		return
	}
	m.stats.routed.Add(1)
}

// nextHop returns the peer to send to for dst.
func (m *Mesh) nextHop(dst ids.Node) (ids.Node, bool) {
	if _, ok := m.peers[dst]; ok {
		return dst, true
	}
	if m.routes == nil {
		m.routes = m.computeRoutes()
	}
	hop, ok := m.routes[dst]
	if ok && m.peers[hop] == nil {
		return hop, false
	}
	return hop, ok
}

// computeRoutes runs a breadth-first search from the local node over the
// links announced by online nodes and returns the first hop to each node.
func (m *Mesh) computeRoutes() map[ids.Node]ids.Node {
	adj := map[ids.Node][]ids.Node{}
	link := func(a, b ids.Node) {
		adj[a] = append(adj[a], b)
		adj[b] = append(adj[b], a)
	}
	for id := range m.peers {
		link(m.self, id)
	}
	for id, e := range m.pres.nodes {
		if !e.info.Online {
			continue
		}
		for _, nb := range e.info.Neighbours {
			if nb == m.self {
				continue // our own links are the peer set above
			}
			if n, ok := m.pres.nodes[nb]; ok && n.info.Online {
				link(id, nb)
			}
		}
	}
	first := map[ids.Node]ids.Node{}
	queue := []ids.Node{}
	for id := range m.peers {
		first[id] = id
		queue = append(queue, id)
	}
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		for _, nb := range adj[n] {
			if _, seen := first[nb]; seen || nb == m.self {
				continue
			}
			first[nb] = first[n]
			queue = append(queue, nb)
		}
	}
	return first
}

// Route describes the path the local node would use to reach dst now: the
// first hop, and whether dst is a direct peer.
func (m *Mesh) Route(ctx context.Context, dst ids.Node) (hop ids.Node, direct bool, err error) {
	type res struct {
		hop    ids.Node
		direct bool
		ok     bool
	}
	ch := make(chan res, 1)
	select {
	case m.queryCh <- func() {
		h, ok := m.nextHop(dst)
		ch <- res{h, h == dst, ok}
	}:
	case <-ctx.Done():
		return hop, false, ctx.Err()
	case <-m.loopDone:
		return hop, false, ErrClosed
	}
	r := <-ch
	if !r.ok {
		return hop, false, ErrNoRoute
	}
	return r.hop, r.direct, nil
}

// listed reports whether the node is listed online: online in the
// presence table and reachable. Its status can arrive before the statuses
// of the nodes between (a late joiner hears those at their next
// heartbeat), and a node listed online must be one a Send reaches.
func (m *Mesh) listed(info NodeInfo) bool {
	if !info.Online {
		return false
	}
	_, ok := m.nextHop(info.ID)
	return ok
}
