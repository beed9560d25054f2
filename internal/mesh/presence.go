package mesh

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/pipesnet/pipes/internal/identity"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

// statusContext is the signature context of a Status.
const statusContext = "pipes/v1 status"

// Limits on what a status may carry, so a member cannot make others store
// unbounded data.
const (
	maxStatusAddrs      = 32
	maxStatusNeighbours = 256
	maxStatusNetworks   = 256
	maxStringLen        = 256
	maxHPKEKey          = 2048
)

// MessageID is the id of a broadcast message: SHA-256 of its kind (4 bytes,
// big endian) and payload. Receivers recompute it, so an id cannot be forged
// to shadow another message.
func MessageID(kind uint32, payload []byte) [32]byte {
	h := sha256.New()
	var k [4]byte
	binary.BigEndian.PutUint32(k[:], kind)
	h.Write(k[:])
	h.Write(payload)
	var id [32]byte
	h.Sum(id[:0])
	return id
}

// NodeInfo is what the mesh knows about one node.
type NodeInfo struct {
	ID         ids.Node
	IdentityID [32]byte // the node's identity: SHA-256 of its identity key
	Name       string   // identity name
	Location   string
	Version    string
	Addrs      []string
	Neighbours []ids.Node
	Networks   []*pb.NetworkInfo // bootstrap list the node announces
	HPKEKey    []byte            // public key for end-to-end encryption to the node
	Online     bool
	Peer       bool      // directly connected to the local node
	LastSeen   time.Time // local time the last fresh status arrived
}

// status is a verified, decoded presence status.
type status struct {
	cert *identity.Cert
	msg  *pb.Status
}

// ErrBadStatus is wrapped by every status verification failure.
var ErrBadStatus = errors.New("mesh: bad status")

// parseStatus verifies a signed status for network: the node certificate
// must be issued by its identity for this network (checked through certs,
// which may be nil), and the status signed by the certificate's node key.
func parseStatus(payload []byte, network ids.Network, certs *identity.CertCache) (*status, error) {
	var s pb.Signed
	if err := unmarshal(payload, &s); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadStatus, err)
	}
	var st pb.Status
	if err := unmarshal(s.Body, &st); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadStatus, err)
	}
	cert, err := certs.Parse(st.NodeCert)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadStatus, err)
	}
	if cert.NetworkID != network {
		return nil, fmt.Errorf("%w: certificate for another network", ErrBadStatus)
	}
	if !identity.Verify(cert.NodeKey, statusContext, s.Body, s.Signature) {
		return nil, fmt.Errorf("%w: signature does not verify", ErrBadStatus)
	}
	switch {
	case len(st.Addrs) > maxStatusAddrs, len(st.Neighbours) > maxStatusNeighbours,
		len(st.BootstrapNetworks) > maxStatusNetworks, len(st.Version) > maxStringLen,
		len(st.HpkeKey) > maxHPKEKey:
		return nil, fmt.Errorf("%w: too large", ErrBadStatus)
	}
	for _, a := range st.Addrs {
		if len(a) > maxStringLen {
			return nil, fmt.Errorf("%w: address too long", ErrBadStatus)
		}
	}
	for _, n := range st.Neighbours {
		if len(n) != 32 {
			return nil, fmt.Errorf("%w: neighbour id of %d bytes", ErrBadStatus, len(n))
		}
	}
	for _, n := range st.BootstrapNetworks {
		if len(n.NetworkId) != 32 || len(n.Name) > maxStringLen {
			return nil, fmt.Errorf("%w: bad network info", ErrBadStatus)
		}
	}
	return &status{cert: cert, msg: &st}, nil
}

// signStatus encodes and signs st with the node key.
func signStatus(key *identity.KeyPair, st *pb.Status) ([]byte, error) {
	s, err := identity.SignProto(key, statusContext, st)
	if err != nil {
		return nil, err
	}
	return marshal(s)
}

// newer reports whether (inc, seq) is later than the entry's.
func (e *entry) newer(inc, seq uint64) bool {
	return inc > e.inc || (inc == e.inc && seq > e.seq)
}

// entry is the presence table's record of one node.
type entry struct {
	info     NodeInfo
	inc, seq uint64
}

// presence is the table of every node the mesh has heard of. It does no I/O
// and reads no clock: the mesh loop passes now.
type presence struct {
	self         ids.Node
	offlineAfter time.Duration
	nodes        map[ids.Node]*entry
}

func newPresence(self ids.Node, offlineAfter time.Duration) *presence {
	return &presence{self: self, offlineAfter: offlineAfter, nodes: make(map[ids.Node]*entry)}
}

// apply records a verified status heard at now. It returns the node's new
// info and whether anything a listener cares about changed. Stale or
// replayed statuses (not newer than the last one) change nothing.
func (p *presence) apply(now time.Time, st *status) (NodeInfo, bool) {
	id := ids.Node(st.cert.NodeID())
	if id == p.self {
		return NodeInfo{}, false
	}
	e := p.nodes[id]
	if e == nil {
		e = &entry{}
		p.nodes[id] = e
	} else if !e.newer(st.msg.Incarnation, st.msg.Seq) {
		return e.info, false
	}
	old := e.info
	e.inc, e.seq = st.msg.Incarnation, st.msg.Seq
	neighbours := make([]ids.Node, 0, len(st.msg.Neighbours))
	for _, n := range st.msg.Neighbours {
		neighbours = append(neighbours, ids.Node(n))
	}
	e.info = NodeInfo{
		ID:         id,
		IdentityID: st.cert.IdentityID(),
		Name:       st.cert.IdentityName,
		Location:   st.cert.Location,
		Version:    st.msg.Version,
		Addrs:      slices.Clone(st.msg.Addrs),
		Neighbours: neighbours,
		Networks:   st.msg.BootstrapNetworks,
		HPKEKey:    st.msg.HpkeKey,
		Online:     !st.msg.Leaving,
		Peer:       old.Peer,
		LastSeen:   now,
	}
	return e.info, changed(old, e.info)
}

// changed reports a difference worth a status update to listeners.
func changed(a, b NodeInfo) bool {
	return a.Online != b.Online || a.Peer != b.Peer || a.Name != b.Name ||
		a.Location != b.Location || a.Version != b.Version ||
		!slices.Equal(a.Addrs, b.Addrs) || !slices.Equal(a.Neighbours, b.Neighbours)
}

// setPeer marks whether id is a direct peer. A node becomes known (not yet
// online) when it connects before its first status arrives.
func (p *presence) setPeer(now time.Time, id ids.Node, peer bool, cert *identity.Cert) (NodeInfo, bool) {
	e := p.nodes[id]
	if e == nil {
		if !peer {
			return NodeInfo{}, false
		}
		e = &entry{info: NodeInfo{ID: id, IdentityID: cert.IdentityID(), Name: cert.IdentityName, Location: cert.Location}}
		p.nodes[id] = e
	}
	if e.info.Peer == peer {
		return e.info, false
	}
	e.info.Peer = peer
	if peer && !e.info.Online && e.heard() {
		// A verified direct connection is proof the node is up. A node
		// whose status was never heard stays known, not online, until
		// its status arrives (both ends announce soon after connecting):
		// online means what the status carries (its encryption key, its
		// links) is known, so that the node can be addressed.
		e.info.Online = true
		e.info.LastSeen = now
	}
	return e.info, true
}

// heard reports whether a status of the node has been applied.
func (e *entry) heard() bool { return e.inc != 0 || e.seq != 0 }

// expire marks offline every node not heard from within offlineAfter and
// returns those that changed. A direct peer stays online while connected.
func (p *presence) expire(now time.Time) []NodeInfo {
	var out []NodeInfo
	for _, e := range p.nodes {
		if e.info.Online && !e.info.Peer && now.Sub(e.info.LastSeen) > p.offlineAfter {
			e.info.Online = false
			out = append(out, e.info)
		}
	}
	return out
}

// online returns the online nodes, ordered by id.
func (p *presence) online() []NodeInfo {
	var out []NodeInfo
	for _, e := range p.nodes {
		if e.info.Online {
			out = append(out, e.info)
		}
	}
	slices.SortFunc(out, func(a, b NodeInfo) int { return bytes.Compare(a.ID[:], b.ID[:]) })
	return out
}
