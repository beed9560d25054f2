package mesh

import (
	"bytes"
	"errors"
	"io"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/pipesnet/pipes/internal/backoff"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/kinds"
	"github.com/pipesnet/pipes/internal/mesh/plumtree"
	"github.com/pipesnet/pipes/internal/transport"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

// maintainEvery is how often the loop checks dials, expiry and heartbeats.
const maintainEvery = 100 * time.Millisecond

// congested reports whether some peer's send queue is nearly full.
func (m *Mesh) congested() bool {
	for _, p := range m.peers {
		if p.busy() {
			return true
		}
	}
	return false
}

// statusDebounce is the least time between two statuses sent because the
// neighbour set changed (heartbeats are separate).
const statusDebounce = 250 * time.Millisecond

// loop owns all mesh state. Every input arrives on a channel; nothing else
// touches the state.
func (m *Mesh) loop() {
	timer := time.NewTimer(0)
	defer timer.Stop()
	lastMaintain, fired := time.Now(), false
	m.maintain(lastMaintain)
	for {
		bcast, send := m.bcastCh, m.sendCh
		if m.congested() {
			bcast, send = nil, nil // backpressure: Broadcast and Send wait until the queues drain
		}
		select {
		case <-m.ctx.Done():
			m.shutdown()
			return
		case c := <-m.connCh:
			m.addConn(time.Now(), c)
		case r := <-m.dialCh:
			m.dialDone(time.Now(), r)
		case in := <-m.frameCh:
			m.handleFrame(time.Now(), in)
		case c := <-m.closedCh:
			m.peerClosed(time.Now(), c.p, c.err)
		case req := <-bcast:
			m.broadcast(time.Now(), req.kind, req.payload)
			req.done <- nil
		case req := <-send:
			req.done <- m.send(req)
		case q := <-m.queryCh:
			q()
		case <-m.drained:
		case <-timer.C:
			fired = true
		}
		now := time.Now()
		// Maintenance runs every maintainEvery however busy the loop is
		// (a stream of events must not starve heartbeats and dials).
		if fired || now.Sub(lastMaintain) >= maintainEvery {
			fired, lastMaintain = false, now
			m.maintain(now)
		}
		next := lastMaintain.Add(maintainEvery)
		if d, ok := m.tree.NextDeadline(); ok && d.Before(next) {
			next = d
		}
		timer.Reset(max(next.Sub(now), time.Millisecond))
		if m.stale {
			m.publish()
		}
		if m.dgStale {
			m.publishDatagramRoutes()
		}
	}
}

// routesChanged drops the routes after a change of peers or presence:
// routed messages recompute them when needed, and the datagram table is
// published again at the end of the loop's turn.
func (m *Mesh) routesChanged() {
	m.routes = nil
	m.dgStale = true
}

// maintain runs the periodic work: tree timers, presence expiry,
// heartbeats and dials.
func (m *Mesh) maintain(now time.Time) {
	m.sendAll(m.tree.Tick(now))
	m.stale = true // tree stats
	for _, n := range m.pres.expire(now) {
		m.routesChanged()
		m.log.Info("node offline (silent)", "node", n.ID.Short(), "name", n.Name)
		m.nodeEvent(n)
	}
	if m.addrsNew.Swap(false) {
		m.dirty = true
	}
	if now.Sub(m.lastStatus) >= m.heartbeat || (m.dirty && now.Sub(m.lastStatus) >= statusDebounce) {
		m.announce(now, false)
	}
	m.dialMore(now)
	m.punchMore(now)
	m.tellObserved(now)
}

// announce broadcasts the local node's signed status.
func (m *Mesh) announce(now time.Time, leaving bool) {
	m.seq++
	st := &pb.Status{
		NodeCert:          m.cfg.Cert.Signed,
		Incarnation:       m.cfg.Incarnation,
		Seq:               m.seq,
		Version:           m.cfg.Version,
		Addrs:             m.cfg.Addrs(),
		Leaving:           leaving,
		TimeUnixMs:        now.UnixMilli(),
		HeartbeatMs:       uint32(m.cfg.Heartbeat.Milliseconds()),
		BootstrapNetworks: m.cfg.Networks(),
		HpkeKey:           m.cfg.HPKEKey,
	}
	nbrs := slices.Collect(maps.Keys(m.peers))
	slices.SortFunc(nbrs, func(a, b ids.Node) int { return bytes.Compare(a[:], b[:]) })
	for _, id := range nbrs {
		st.Neighbours = append(st.Neighbours, id[:])
	}
	payload, err := signStatus(m.cfg.Key, st)
	if err != nil {
		m.log.Error("cannot sign status", "err", err)
		return
	}
	m.lastStatus = now
	m.heartbeat = jittered(m.cfg.Heartbeat)
	m.dirty = false
	m.lastPayload.payload = payload
	m.lastPayload.id = MessageID(kinds.Status, payload)
	m.broadcast(now, kinds.Status, payload)
}

func (m *Mesh) broadcast(now time.Time, kind uint32, payload []byte) {
	m.sendAll(m.tree.Broadcast(now, m.self, MessageID(kind, payload), kind, payload))
}

func (m *Mesh) sendAll(sends []plumtree.Send) {
	for _, s := range sends {
		if p := m.peers[s.To]; p != nil {
			p.send(s.Frame)
		}
	}
}

// handleFrame processes one frame from a peer. Gossip frames were checked
// by the peer's reader.
func (m *Mesh) handleFrame(now time.Time, in inFrame) {
	p, f := in.p, in.f
	if m.peers[p.id] != p {
		return // from a connection that was replaced or closed
	}
	switch b := f.Body.(type) {
	case *pb.Frame_Gossip:
		m.handleTree(now, p, f, in.st, in.v)
	case *pb.Frame_Ihave, *pb.Frame_Graft, *pb.Frame_Prune:
		m.handleTree(now, p, f, nil, nil)
	case *pb.Frame_Routed:
		m.handleRouted(p, b.Routed)
	case *pb.Frame_Peers:
		m.learnPeers(b.Peers)
	case *pb.Frame_Goodbye:
		m.log.Debug("peer says goodbye", "peer", p.id.Short(), "reason", b.Goodbye.Reason)
		p.conn.Close(transport.CodeNormal, "goodbye")
	default:
		// Unknown frame from a newer peer: ignored.
	}
}

func (m *Mesh) handleTree(now time.Time, p *peer, f *pb.Frame, st *status, v any) {
	deliver, out, err := m.tree.HandleFrame(now, p.id, f)
	if err != nil {
		m.bad(p, err.Error())
		return
	}
	m.sendAll(out)
	if deliver == nil {
		return
	}
	if deliver.Kind != kinds.Status {
		if m.cfg.Deliver != nil {
			m.cfg.Deliver(deliver.Kind, deliver.Payload, ids.Node(deliver.Origin), v)
		}
		return
	}
	if st == nil {
		return
	}
	info, changed := m.pres.apply(now, st)
	m.stale = true
	if changed {
		m.routesChanged()
		if !info.Online {
			m.log.Info("node offline (left)", "node", info.ID.Short(), "name", info.Name)
		}
		m.nodeEvent(info)
	}
	m.addCandidates(info.ID, info.Addrs)
}

func (m *Mesh) bad(p *peer, why string) {
	m.stats.bad.Add(1)
	m.log.Debug("dropped bad message", "peer", p.id.Short(), "why", why)
}

// learnPeers records the addresses of a peer list as dial candidates.
func (m *Mesh) learnPeers(l *pb.PeerList) {
	for i, pi := range l.Peers {
		if i >= maxPeerList || len(pi.NodeId) != 32 {
			return
		}
		m.addCandidates(ids.Node(pi.NodeId), pi.Addrs)
	}
}

const maxPeerList = 64

// maxTargets bounds the dial-candidate table.
const maxTargets = 4096

func (m *Mesh) addCandidates(id ids.Node, addrs []string) {
	if id == m.self {
		return
	}
	for i, a := range addrs {
		if i >= maxStatusAddrs || len(m.targets) >= maxTargets {
			return
		}
		t := m.targets[a]
		if t == nil {
			t = &target{Backoff: backoff.Backoff{Min: m.cfg.BackoffMin, Max: m.cfg.BackoffMax}}
			m.targets[a] = t
		}
		if !t.gateway {
			t.node = id
		}
	}
}

// dialMore keeps gateways connected and the degree at its target.
func (m *Mesh) dialMore(now time.Time) {
	if m.leaving {
		return
	}
	for _, gw := range m.cfg.Gateways() {
		t := m.targets[gw]
		if t == nil {
			t = &target{Backoff: backoff.Backoff{Min: m.cfg.BackoffMin, Max: m.cfg.BackoffMax}}
			m.targets[gw] = t
		}
		t.gateway = true
		if t.self || m.dialing[gw] || !t.Ready(now) {
			continue
		}
		if t.node != (ids.Node{}) && m.peers[t.node] != nil {
			continue
		}
		m.dial(gw)
	}
	want := m.cfg.TargetDegree - len(m.peers) - len(m.dialing)
	if want <= 0 {
		return
	}
	var cands []string
	for addr, t := range m.targets {
		if t.gateway || t.self || m.dialing[addr] || !t.Ready(now) {
			continue
		}
		if m.peers[t.node] != nil {
			continue
		}
		if n, ok := m.pres.nodes[t.node]; ok && !n.info.Online {
			continue
		}
		cands = append(cands, addr)
	}
	rand.Shuffle(len(cands), func(i, j int) { cands[i], cands[j] = cands[j], cands[i] })
	busy := map[ids.Node]bool{}
	for _, addr := range cands {
		if want == 0 {
			break
		}
		n := m.targets[addr].node
		if busy[n] {
			continue // one address per node at a time
		}
		busy[n] = true
		m.dial(addr)
		want--
	}
}

func (m *Mesh) dialDone(now time.Time, r dialResult) {
	delete(m.dialing, r.addr)
	t := m.targets[r.addr]
	if r.err != nil {
		if errors.Is(r.err, transport.ErrSelf) {
			if t != nil {
				t.self = true
			}
			return
		}
		m.stats.dialsFailed.Add(1)
		if t != nil {
			t.Failed(now)
		}
		m.log.Debug("dial failed", "addr", r.addr, "err", r.err)
		return
	}
	if t != nil {
		t.Succeeded()
		t.node = r.conn.PeerID
	}
	m.addConn(now, r.conn)
}

// keepNew decides between two verified connections to the same peer. Both
// ends reach the same answer: the newer incarnation wins; within one
// incarnation the connection dialled by the smaller node id wins; and when
// both were dialled by the same side the existing one stays.
func (m *Mesh) keepNew(old, c *transport.Conn) bool {
	if c.Incarnation != old.Incarnation {
		return c.Incarnation > old.Incarnation
	}
	if c.Outbound == old.Outbound {
		return false
	}
	dialer := func(x *transport.Conn) ids.Node {
		if x.Outbound {
			return m.self
		}
		return x.PeerID
	}
	dc, do := dialer(c), dialer(old)
	return bytes.Compare(dc[:], do[:]) < 0
}

// addConn takes a new verified connection into the peer set.
func (m *Mesh) addConn(now time.Time, c *transport.Conn) {
	if m.leaving {
		c.Close(transport.CodeNormal, "shutting down")
		return
	}
	old := m.peers[c.PeerID]
	if old != nil {
		if !m.keepNew(old.conn, c) {
			c.Close(transport.CodeDuplicate, "duplicate connection")
			return
		}
		m.log.Debug("replacing connection", "peer", c.PeerID.Short())
		close(old.stop)
		old.conn.Close(transport.CodeDuplicate, "duplicate connection")
	} else if !c.Outbound && len(m.peers) >= m.cfg.MaxPeers {
		m.stats.refused.Add(1)
		m.refuseFull(c)
		return
	}
	p := &peer{id: c.PeerID, conn: c, out: make(chan *pb.Frame, peerQueue), dgOut: make(chan []byte, dgQueue),
		stop: make(chan struct{}), dropped: &m.stats.dropped, told: remoteAddrPort(c.RemoteAddr())}
	m.peers[c.PeerID] = p
	m.stale = true
	m.routesChanged()
	m.wg.Add(5)
	go m.reader(p)
	go m.writer(p)
	go m.datagramReader(p)
	go m.datagramWriter(p)
	go m.streamAcceptor(p)
	m.addCandidates(c.PeerID, c.ListenAddrs)
	p.send(&pb.Frame{Body: &pb.Frame_Peers{Peers: m.peerList(c.PeerID)}})
	if old != nil {
		return // same peer, new connection: nothing else changed
	}
	m.log.Info("peer connected", "peer", c.PeerID.Short(), "name", c.Peer.IdentityName, "addr", c.RemoteAddr(), "outbound", c.Outbound)
	m.tree.AddPeer(c.PeerID)
	m.dirty = true
	if info, ok := m.pres.setPeer(now, c.PeerID, true, c.Peer); ok {
		m.nodeEvent(info)
	}
	m.setConnected(true)
}

// refuseFull tells an inbound peer of other nodes, then closes with CodeFull.
func (m *Mesh) refuseFull(c *transport.Conn) {
	list := m.peerList(c.PeerID)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		c.WriteFrame(&pb.Frame{Body: &pb.Frame_Peers{Peers: list}})
		select { // give the list time to arrive before the close
		case <-c.Done():
		case <-time.After(time.Second):
		case <-m.ctx.Done():
		}
		c.Close(transport.CodeFull, "enough peers")
	}()
}

// peerList is the peer-exchange message for peer `to`: online nodes with
// addresses, a random subset when there are many.
func (m *Mesh) peerList(to ids.Node) *pb.PeerList {
	l := &pb.PeerList{}
	for _, n := range m.pres.online() {
		if n.ID == to || len(n.Addrs) == 0 {
			continue
		}
		l.Peers = append(l.Peers, &pb.PeerInfo{NodeId: n.ID[:], Addrs: n.Addrs})
	}
	rand.Shuffle(len(l.Peers), func(i, j int) { l.Peers[i], l.Peers[j] = l.Peers[j], l.Peers[i] })
	if len(l.Peers) > maxPeerList {
		l.Peers = l.Peers[:maxPeerList]
	}
	return l
}

// peerClosed removes a peer whose connection ended.
func (m *Mesh) peerClosed(now time.Time, p *peer, err error) {
	if m.peers[p.id] != p {
		return
	}
	delete(m.peers, p.id)
	m.stale = true
	m.routesChanged()
	close(p.stop)
	m.tree.RemovePeer(p.id)
	m.dirty = true
	m.log.Info("peer disconnected", "peer", p.id.Short(), "reason", closeReason(err))
	var appErr *quic.ApplicationError
	if errors.As(err, &appErr) && appErr.ErrorCode == transport.CodeFull {
		for _, t := range m.targets {
			if t.node == p.id {
				t.Failed(now)
			}
		}
	}
	if info, ok := m.pres.setPeer(now, p.id, false, nil); ok {
		m.nodeEvent(info)
	}
	m.setConnected(len(m.peers) > 0)
}

func closeReason(err error) string {
	var appErr *quic.ApplicationError
	switch {
	case errors.As(err, &appErr):
		return appErr.ErrorMessage
	case errors.Is(err, io.EOF):
		return "stream closed"
	case err != nil:
		return err.Error()
	}
	return ""
}

func (m *Mesh) setConnected(c bool) {
	if c != m.connected {
		m.connected = c
		m.events.Push(Event{Kind: EventConnection, Connected: c})
	}
}

// shutdown announces departure, says goodbye and closes every connection.
// Peers close their end when they read the goodbye, so waiting for the
// connections to close (bounded) means the leaving status has arrived.
func (m *Mesh) shutdown() {
	m.leaving = true
	m.dgTable.Store(&dgTable{closed: true})
	now := time.Now()
	if m.abort.Load() {
		for _, p := range m.peers {
			close(p.stop)
		}
		m.peers = map[ids.Node]*peer{}
		m.publish()
		return
	}
	if len(m.peers) > 0 {
		m.announce(now, true)
		// The tree pushed the status to eager peers only; lazy peers would
		// get just an IHAVE we will not be around to answer.
		eager, _ := m.tree.Peers(m.self)
		last := m.lastPayload
		g := &pb.Frame{Body: &pb.Frame_Gossip{Gossip: &pb.Gossip{Id: last.id[:], Kind: kinds.Status, Payload: last.payload, Origin: m.self[:]}}}
		for id, p := range m.peers {
			if !slices.Contains(eager, id) {
				p.send(g)
			}
		}
	}
	bye := &pb.Frame{Body: &pb.Frame_Goodbye{Goodbye: &pb.Goodbye{Reason: "shutting down"}}}
	for _, p := range m.peers {
		p.send(bye)
		close(p.stop)
	}
	deadline := time.After(time.Second)
	for _, p := range m.peers {
		select {
		case <-p.conn.Done():
		case <-deadline:
		}
		p.conn.Close(transport.CodeNormal, "shutting down")
	}
	m.peers = map[ids.Node]*peer{}
	m.publish()
}

// publish stores a fresh snapshot for readers.
func (m *Mesh) publish() {
	s := &snapshot{all: make(map[ids.Node]NodeInfo, len(m.pres.nodes))}
	for id, e := range m.pres.nodes {
		info := e.info
		info.Peer = m.peers[id] != nil
		info.Online = m.listed(info)
		if !m.leaving && m.told[id] != info.Online {
			// A route came or went without a change of the node's own
			// presence: listeners hear what Nodes now says.
			m.nodeEvent(info)
		}
		s.all[id] = info
		if info.Online {
			s.nodes = append(s.nodes, info)
		}
		if info.Peer {
			s.peers = append(s.peers, info)
		}
	}
	sortInfos(s.nodes)
	sortInfos(s.peers)
	seen := map[netip.AddrPort]int{}
	var obs []observation
	for _, p := range m.peers {
		// A connection made from a hard punch's own socket shows that
		// socket's public address, not the node's.
		if p.conn.Observed.IsValid() && !p.conn.Extra {
			seen[p.conn.Observed]++
			if ra := remoteAddrPort(p.conn.RemoteAddr()); ra.IsValid() {
				obs = append(obs, observation{remote: ra, observed: p.conn.Observed})
			}
		}
	}
	s.mapping = classify(obs)
	for ap, n := range seen {
		if n >= 2 {
			s.public = append(s.public, ap)
		}
		s.observed = append(s.observed, ap)
	}
	slices.SortFunc(s.observed, func(a, b netip.AddrPort) int { return a.Compare(b) })
	slices.SortFunc(s.public, func(a, b netip.AddrPort) int { return a.Compare(b) })
	m.snap.Store(s)
	m.stale = false
	st := m.tree.Stats()
	m.stats.tree.Store(&st)
}

func sortInfos(s []NodeInfo) {
	slices.SortFunc(s, func(a, b NodeInfo) int { return bytes.Compare(a.ID[:], b.ID[:]) })
}
