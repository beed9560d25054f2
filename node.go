package pipes

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pipesnet/pipes/internal/files"
	"github.com/pipesnet/pipes/internal/identity"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/keys"
	"github.com/pipesnet/pipes/internal/mesh"
	"github.com/pipesnet/pipes/internal/node"
	"github.com/pipesnet/pipes/internal/pipeline"
	"github.com/pipesnet/pipes/internal/service"
	"github.com/pipesnet/pipes/internal/store"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

// Node is the platform's presence in one network as one identity, at one
// location (a device or process). A Node keeps its id across restarts.
// Methods are safe for concurrent use.
type Node struct {
	p  *Platform
	id NodeID

	mu struct {
		sync.Mutex
		rec       nodeRecord
		run       *node.Node               // this run: nil when not started
		reader    *node.Reader             // not started: reads the store (see readEngine)
		pipelines map[PipelineID]*Pipeline // every pipeline seen, kept across restarts
		listeners []NodeListener
		pm        *portMapper          // this run's port mapping
		files     *files.Service       // this run's file service
		boot      map[NetworkID]string // bootstrap list kept by this node
	}
	startMu  sync.Mutex // serialises Start and Shutdown
	readerMu sync.Mutex // serialises opening and closing mu.reader
}

func (p *Platform) newNode(id NodeID, r nodeRecord) (*Node, error) {
	n := &Node{p: p, id: id}
	n.mu.rec = r
	n.mu.boot = map[NetworkID]string{}
	n.mu.pipelines = map[PipelineID]*Pipeline{}
	err := p.db.Scan(store.Key(tBoot, r.Network[:]), func(k, v []byte) error {
		var br bootRecord
		if len(k) == 65 && jsonUnmarshal(v, &br) == nil {
			n.mu.boot[NetworkID(k[33:])] = br.Name
		}
		return nil
	})
	return n, err
}

// Nodes returns the nodes configured on the platform, ordered by id.
func (p *Platform) Nodes() []*Node {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.nodesLocked()
}

func (p *Platform) nodesLocked() []*Node {
	out := make([]*Node, 0, len(p.mu.nodes))
	for _, n := range p.mu.nodes {
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b *Node) int { return bytes.Compare(a.id[:], b.id[:]) })
	return out
}

// Node returns the node with id.
func (p *Platform) Node(id NodeID) (*Node, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := p.mu.nodes[id]; n != nil {
		return n, nil
	}
	return nil, fmt.Errorf("%w: node %s", ErrNotFound, id)
}

// AddNode creates a node of network nw running as identity id at location
// (a free-form name of the device or place, e.g. "laptop"). The node gets
// its own Ed25519 device key (keys/node-<id>.key, mode 0600) and a
// certificate signed by the identity. A second node with the same network,
// identity and location is refused with ErrExists.
func (p *Platform) AddNode(nw *Network, id *Identity, location string, opts ...NodeOption) (*Node, error) {
	if nw == nil || id == nil {
		return nil, errors.New("pipes: AddNode needs a network and an identity")
	}
	if len(location) > identity.MaxLocationLen {
		return nil, fmt.Errorf("pipes: location longer than %d bytes", identity.MaxLocationLen)
	}
	var cfg nodeConfig
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.ListenAddr != "" {
		if _, _, err := net.SplitHostPort(cfg.ListenAddr); err != nil {
			return nil, fmt.Errorf("pipes: listen address %q: %w", cfg.ListenAddr, err)
		}
	}
	for _, n := range p.Nodes() {
		r := n.record()
		if r.Network == nw.id && r.Identity == id.id && r.Location == location {
			return nil, fmt.Errorf("%w: node of %q in network %q at location %q", ErrExists, id.Name(), nw.Name(), location)
		}
	}
	ik, err := id.key()
	if err != nil {
		return nil, fmt.Errorf("pipes: identity key: %w", err)
	}
	key, err := identity.Generate()
	if err != nil {
		return nil, mapErr(err, "")
	}
	cert, err := identity.IssueCert(ik, id.Name(), key.Public, nw.id, location, time.Now())
	if err != nil {
		return nil, mapErr(err, "")
	}
	certBytes, err := marshalProto(cert.Signed)
	if err != nil {
		return nil, mapErr(err, "")
	}
	nid := NodeID(cert.NodeID())
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.checkOpen(); err != nil {
		return nil, err
	}
	if err := identity.SaveKey(p.keyPath("node", nid), key); err != nil {
		return nil, mapErr(err, "")
	}
	rec := nodeRecord{Network: nw.id, Identity: id.id, Location: location, Cert: certBytes,
		Created: time.Now().UTC(), Config: cfg}
	if err := putJSON(p.db, store.Key(tNode, nid[:]), rec); err != nil {
		return nil, mapErr(err, "")
	}
	n, err := p.newNode(nid, rec)
	if err != nil {
		return nil, err
	}
	p.mu.nodes[nid] = n
	return n, nil
}

func (n *Node) knownPipelines() []*Pipeline {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]*Pipeline, 0, len(n.mu.pipelines))
	for _, p := range n.mu.pipelines {
		out = append(out, p)
	}
	return out
}

func (n *Node) record() nodeRecord {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mu.rec
}

// ID returns the node's id.
func (n *Node) ID() NodeID { return n.id }

// Network returns the node's network.
func (n *Node) Network() *Network {
	nw, _ := n.p.Network(n.record().Network)
	return nw
}

// Identity returns the identity the node runs as.
func (n *Node) Identity() *Identity {
	id, _ := n.p.Identity(n.record().Identity)
	return id
}

// Location returns the node's location string.
func (n *Node) Location() string { return n.record().Location }

// Start binds the node's UDP socket and joins the network: it dials the
// gateways, then more peers, and announces its presence. It returns once
// the socket is bound; connecting continues in the background (see
// IsConnected and NodeListener). It fails with ErrNoSecret if the network
// secret is not set and ErrActive if the node is running. ctx bounds the
// start-up only.
func (n *Node) Start(ctx context.Context) error {
	n.startMu.Lock()
	defer n.startMu.Unlock()
	p := n.p
	p.mu.Lock()
	closed := p.mu.closed
	p.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if n.IsActive() {
		return ErrActive
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	nw, nkey, key, cert, err := n.keys()
	if err != nil {
		return err
	}
	rec := n.record()
	rec.Incarnation = max(uint64(time.Now().UnixNano()), rec.Incarnation+1)
	if err := putJSON(p.db, store.Key(tNode, n.id[:]), rec); err != nil {
		return mapErr(err, "")
	}
	addrs, err := n.listenAddrs(rec.Config.ListenAddr)
	if err != nil {
		return err
	}
	log := p.log.With("node", n.id.String()[:8], "network", nw.Name())
	timing := p.timing()
	pm := newPortMapper(n, rec.Config, log)
	fsvc := files.New(files.Config{Logger: log, AnnounceDelay: timing.announceDelay, AnnounceEvery: timing.announceEvery,
		ReadKey: n.readKey(log), ReadKeyEvery: timing.announceEvery, RepairAfter: timing.repairAfter})
	cfg := node.Config{
		Key: key, Cert: cert, Network: ids.Network(nw.id), NetworkKey: nkey, Incarnation: rec.Incarnation, Version: version,
		DB: p.db, StoreKey: storeKey(nkey, nw.id), BlobDir: n.blobDir(), HPKEKeyPath: p.keyPath("hpke", n.id),
		ListenAddrs:  addrs,
		OfflineAfter: firstNonZero(rec.Config.OfflineAfter, timing.offline),
		Heartbeat:    firstNonZero(rec.Config.Heartbeat, timing.heartbeat),
		BackoffMin:   timing.backoffMin, BackoffMax: timing.backoffMax,
		TargetDegree: rec.Config.TargetDegree, RelayRate: rec.Config.RelayRate,
		Logger:   log,
		Gateways: nw.gatewayAddrs, Networks: n.bootList, PortMap: pm, ConnAddr: connAddr,
		Services: []service.Service{fsvc},
		Files:    fsvc,
		OnEvent:  n.handleEvent, OnPipeline: n.pipelineKnown, OnSync: n.syncUpdate, OnRemoved: n.pipelineRemoved,
		Ready: func(run *node.Node) {
			n.mu.Lock()
			n.mu.rec, n.mu.run, n.mu.pm, n.mu.files = rec, run, pm, fsvc
			var known []*pipeline.Def
			for _, pl := range n.mu.pipelines {
				known = append(known, pl.def)
			}
			n.mu.Unlock()
			n.closeReader() // the running engine reads the store from now on
			for _, d := range known {
				run.Engine().Restore(d) // pipelines seen in an earlier run stay usable
			}
			for _, pl := range n.knownPipelines() {
				pl.attach(run.Engine()) // listeners added before this start
			}
		},
		EngineClosed: func() {
			for _, pl := range n.knownPipelines() {
				pl.detach()
				pl.ClosePortMap()
			}
		},
	}
	if _, err := node.Start(ctx, cfg); err != nil {
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return ctx.Err()
		}
		return mapErr(err, "")
	}
	return nil
}

// keys loads what the node's engine needs: its network, the network key
// (ErrNoSecret without it), the node key and the node certificate.
func (n *Node) keys() (*Network, [32]byte, *identity.KeyPair, *identity.Cert, error) {
	var nkey [32]byte
	nw := n.Network()
	if nw == nil {
		return nil, nkey, nil, nil, fmt.Errorf("%w: network of node %s", ErrNotFound, n.id)
	}
	nkey, err := nw.networkKey()
	if err != nil {
		return nil, nkey, nil, nil, err
	}
	key, err := identity.LoadKey(n.p.keyPath("node", n.id))
	if err != nil {
		return nil, nkey, nil, nil, fmt.Errorf("pipes: node key: %w", err)
	}
	var signed pb.Signed
	if err := unmarshalProto(n.record().Cert, &signed); err != nil {
		return nil, nkey, nil, nil, fmt.Errorf("pipes: node certificate: %w", err)
	}
	cert, err := identity.ParseCert(&signed)
	if err != nil {
		return nil, nkey, nil, nil, fmt.Errorf("pipes: node certificate: %w", err)
	}
	return nw, nkey, key, cert, nil
}

// readKey derives the read key of the node's identity for the file
// service (restricted files); nil, and the node reads none of them, if
// the platform lacks the identity's private key.
func (n *Node) readKey(log *slog.Logger) *files.ReadKey {
	ident := n.Identity()
	if ident == nil {
		return nil
	}
	ik, err := ident.key()
	if err != nil {
		log.Info("no identity key: restricted files cannot be read", "err", err)
		return nil
	}
	rk, err := files.DeriveReadKey(ik)
	if err != nil {
		log.Warn("deriving the identity's read key", "err", err)
		return nil
	}
	return rk
}

// storeKey is the root of a node's at-rest encryption keys: HKDF-SHA256 of
// the network key, salted with the network id (see docs/security.md).
func storeKey(networkKey [32]byte, network NetworkID) [32]byte {
	return [32]byte(keys.Derive(networkKey[:], network[:], keys.StoreKey, nil, 32))
}

func firstNonZero(a, b time.Duration) time.Duration {
	if a != 0 {
		return a
	}
	return b
}

type timing struct {
	heartbeat, offline, backoffMin, backoffMax time.Duration
	announceDelay, announceEvery               time.Duration // the file service's
	repairAfter                                time.Duration // the file service's repair delay
}

// timing returns the platform's timers: zero (the layers' defaults) in
// normal operation, short ones in test mode.
func (p *Platform) timing() timing {
	if !p.opts.testMode {
		return timing{}
	}
	return timing{heartbeat: 250 * time.Millisecond, offline: 2 * time.Second,
		backoffMin: 100 * time.Millisecond, backoffMax: 2 * time.Second,
		announceDelay: 50 * time.Millisecond, announceEvery: 5 * time.Second,
		repairAfter: 3 * time.Second}
}

// listenAddrs lists the addresses to bind the node's socket on, first
// free wins: the node's own address if set, else the environment's
// candidates (or 127.0.0.1:0 in test mode).
func (n *Node) listenAddrs(addr string) ([]string, error) {
	switch {
	case addr != "":
		return []string{addr}, nil
	case n.p.opts.testMode:
		return []string{"127.0.0.1:0"}, nil
	}
	return listenCandidates()
}

// Shutdown leaves the network: it tells peers the node is leaving, closes
// every connection and the socket, and waits for the node's goroutines.
// Listeners get their last callbacks before it returns. Shutdown of a node
// that is not running only releases what reading its store opened (see
// Pipelines). The node can be started again.
func (n *Node) Shutdown() error {
	return n.stop((*node.Node).Close)
}

// stop detaches this run's node and stops it with how (Close, or Kill in
// tests). Stopping a stopped node does nothing.
func (n *Node) stop(how func(*node.Node) error) error {
	n.startMu.Lock()
	defer n.startMu.Unlock()
	n.closeReader()
	n.mu.Lock()
	run := n.mu.run
	n.mu.run, n.mu.pm, n.mu.files = nil, nil, nil
	n.mu.Unlock()
	if run == nil {
		return nil
	}
	return how(run)
}

// IsActive reports whether the node is started.
func (n *Node) IsActive() bool { return n.meshOrNil() != nil }

func (n *Node) meshOrNil() *mesh.Mesh { return n.running().Mesh() }

// running returns this run's node: nil when the node is not started.
func (n *Node) running() *node.Node {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mu.run
}

// IsConnected reports whether the node has at least one peer.
func (n *Node) IsConnected() bool {
	m := n.meshOrNil()
	return m != nil && m.Connected()
}

// PublicAddrs returns the node's public addresses. First the external
// address of its port mapping, when its router granted one and reports a
// public address (see WithPortMapping and PortMapping); then the addresses
// its peers observe: each peer reports in the handshake the address the
// node's packets come from, and an address counts once at least two peers
// agree. Behind a NAT that is the NAT's public address and port for the
// node. Empty when not started, or without a mapping and with fewer than
// two peers or behind a NAT that maps each destination to another port.
func (n *Node) PublicAddrs() []netip.AddrPort {
	n.mu.Lock()
	m, pm := n.mu.run.Mesh(), n.mu.pm
	n.mu.Unlock()
	if m == nil {
		return nil
	}
	return pm.publicAddrs(m.PublicAddrs())
}

// ListenAddrs returns the addresses the node can be reached at (empty when
// not started).
func (n *Node) ListenAddrs() []netip.AddrPort {
	tr := n.running().Transport()
	if tr == nil {
		return nil
	}
	var out []netip.AddrPort
	for _, a := range node.Advertise(tr.Addr()) {
		if ap, err := netip.ParseAddrPort(a); err == nil {
			out = append(out, ap)
		}
	}
	return out
}

func (n *Node) logger() *slog.Logger { return n.p.log.With("node", n.id.String()[:8]) }

// hexPrefix validates a node id prefix.
func hexPrefix(prefix string) (string, error) {
	p := strings.ToLower(strings.TrimSpace(prefix))
	if p == "" || len(p) > 64 {
		return "", fmt.Errorf("%w: node id prefix must be 1 to 64 hex digits", ErrInvalidID)
	}
	if _, err := hex.DecodeString(p + strings.Repeat("0", len(p)%2)); err != nil {
		return "", fmt.Errorf("%w: %q is not hex", ErrInvalidID, prefix)
	}
	return p, nil
}
