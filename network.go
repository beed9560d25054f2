package pipes

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"

	"github.com/pipesnet/pipes/internal/identity"
	"github.com/pipesnet/pipes/internal/netfile"
	"github.com/pipesnet/pipes/internal/store"
)

// NetworkSpec describes a network to create.
type NetworkSpec struct {
	Name      string
	Secret    string   // members prove they know it; it is never written anywhere
	Gateways  []string // "host:port" of nodes that new members dial first
	Bootstrap bool     // a bootstrap network only lists other networks
	// KDF sets the Argon2id cost of turning the secret into the network
	// key. The zero value means DefaultKDF.
	KDF KDFParams
}

// KDFParams are Argon2id parameters.
type KDFParams struct {
	Time      uint32 // passes
	MemoryKiB uint32
	Threads   uint8
}

// DefaultKDF is Argon2id with 3 passes over 64 MiB with 4 lanes (RFC 9106's
// second recommended setting).
var DefaultKDF = KDFParams(netfile.DefaultKDF)

// FastKDF is the cheapest setting accepted (1 pass, 8 MiB, 1 lane). It is
// for tests and demos; use it only with long random secrets.
var FastKDF = KDFParams(netfile.TestKDF)

// Netfile describes a netfile written by CreateNetwork.
type Netfile struct {
	Path      string
	ID        NetworkID
	Name      string
	Gateways  []string
	Bootstrap bool
	Revision  uint64
	// AdminKeyPath is the admin key that signed the netfile, written beside
	// it with mode 0600. Keep it to issue later revisions.
	AdminKeyPath string
}

// CreateNetwork writes a new signed netfile to netfilePath (the network
// admin tool's API). A new admin key is written to netfilePath + ".admin.key"
// (mode 0600). The netfile holds the Argon2id parameters and a verifier of
// the secret, never the secret. It refuses to overwrite an existing file.
func CreateNetwork(netfilePath string, spec NetworkSpec) (*Netfile, error) {
	admin, err := identity.Generate()
	if err != nil {
		return nil, mapErr(err, "")
	}
	keyPath := netfilePath + ".admin.key"
	if _, err := os.Stat(keyPath); err == nil {
		return nil, fmt.Errorf("pipes: %w: %s", ErrExists, keyPath)
	}
	nf, err := netfile.Create(netfilePath, netfile.Spec{
		Name: spec.Name, Secret: spec.Secret, Gateways: spec.Gateways,
		Bootstrap: spec.Bootstrap, KDF: netfile.KDFParams(spec.KDF),
	}, admin)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("pipes: %w: %w", ErrExists, err)
		}
		return nil, mapErr(err, "")
	}
	if err := identity.SaveKey(keyPath, admin); err != nil {
		return nil, mapErr(err, "")
	}
	return &Netfile{Path: netfilePath, ID: nf.ID, Name: nf.Name, Gateways: nf.Gateways,
		Bootstrap: nf.Bootstrap, Revision: nf.Revision, AdminKeyPath: keyPath}, nil
}

// Networks returns the networks added to the platform, ordered by name.
func (p *Platform) Networks() []*Network {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*Network, 0, len(p.mu.networks))
	for _, n := range p.mu.networks {
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b *Network) int {
		if a.nf.Name != b.nf.Name {
			return compareStrings(a.nf.Name, b.nf.Name)
		}
		return bytes.Compare(a.id[:], b.id[:])
	})
	return out
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Network returns the network with id.
func (p *Platform) Network(id NetworkID) (*Network, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := p.mu.networks[id]; n != nil {
		return n, nil
	}
	return nil, fmt.Errorf("%w: network %s", ErrNotFound, id)
}

// BootstrapNetwork returns the platform's bootstrap network (the first by
// name if there are several), or ErrNotFound.
func (p *Platform) BootstrapNetwork() (*Network, error) {
	for _, n := range p.Networks() {
		if n.IsBootstrap() {
			return n, nil
		}
	}
	return nil, fmt.Errorf("%w: no bootstrap network", ErrNotFound)
}

// AddNetwork adds the network defined by the netfile at netfilePath. The
// file's signature and format are checked; a damaged file gives an error
// wrapping ErrBadNetfile that names it. Adding a network again is allowed
// only with the same or a newer revision signed by the same admin key; it
// keeps the secret and gateways already set.
func (p *Platform) AddNetwork(netfilePath string) (*Network, error) {
	nf, err := netfile.Load(netfilePath)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission) {
			return nil, mapErr(err, "")
		}
		return nil, fmt.Errorf("%w: %w", ErrBadNetfile, err)
	}
	id := NetworkID(nf.ID)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.checkOpen(); err != nil {
		return nil, err
	}
	if old := p.mu.networks[id]; old != nil {
		if !bytes.Equal(old.nf.AdminKey, nf.AdminKey) {
			return nil, fmt.Errorf("%w: %s is signed by another admin than network %s", ErrBadNetfile, netfilePath, id)
		}
		if nf.Revision < old.nf.Revision {
			return nil, fmt.Errorf("%w: %s is revision %d, older than the %d in use", ErrBadNetfile, netfilePath, nf.Revision, old.nf.Revision)
		}
		old.mu.Lock()
		defer old.mu.Unlock()
		rec := old.rec
		rec.Netfile = nf.Raw
		if err := putJSON(p.db, store.Key(tNetwork, id[:]), rec); err != nil {
			return nil, mapErr(err, "")
		}
		old.nf, old.rec = nf, rec
		return old, nil
	}
	rec := networkRecord{Netfile: nf.Raw}
	if err := putJSON(p.db, store.Key(tNetwork, id[:]), rec); err != nil {
		return nil, mapErr(err, "")
	}
	n := &Network{p: p, id: id, nf: nf, rec: rec}
	p.mu.networks[id] = n
	return n, nil
}

// Network is a private network the platform knows, from its netfile.
type Network struct {
	p  *Platform
	id NetworkID

	mu  sync.Mutex // guards nf and rec
	nf  *netfile.Netfile
	rec networkRecord
}

// Gateway is a host and port that nodes of a network dial to join it.
type Gateway struct {
	Network   *Network
	NetworkID NetworkID
	Host      string
	Port      int
}

// String returns "host:port".
func (g Gateway) String() string { return net.JoinHostPort(g.Host, strconv.Itoa(g.Port)) }

// Name returns the network's name.
func (n *Network) Name() string { n.mu.Lock(); defer n.mu.Unlock(); return n.nf.Name }

// ID returns the network's id.
func (n *Network) ID() NetworkID { return n.id }

// IsBootstrap reports whether this is a bootstrap network, whose nodes only
// exchange the list of other networks.
func (n *Network) IsBootstrap() bool { n.mu.Lock(); defer n.mu.Unlock(); return n.nf.Bootstrap }

// HasSecret reports whether the network key (derived from the secret) is
// stored, so nodes of this network can start.
func (n *Network) HasSecret() bool { n.mu.Lock(); defer n.mu.Unlock(); return n.rec.HasKey }

// SetSecret checks secret against the netfile's verifier. If it is right it
// stores the derived network key (keys/network-<id>.key, mode 0600; the
// secret itself is not stored) and returns true; a wrong secret returns
// false and a nil error. It takes as long as the netfile's Argon2id
// parameters make it.
func (n *Network) SetSecret(secret string) (bool, error) {
	n.mu.Lock()
	nf := n.nf
	n.mu.Unlock()
	key, ok := nf.Unlock(secret)
	if !ok {
		return false, nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := writeSecretFile(n.p.keyPath("network", n.id), key[:]); err != nil {
		return false, mapErr(err, "")
	}
	rec := n.rec
	rec.HasKey = true
	if err := putJSON(n.p.db, store.Key(tNetwork, n.id[:]), rec); err != nil {
		return false, mapErr(err, "")
	}
	n.rec = rec
	return true, nil
}

// networkKey loads the derived key, checking it against the verifier.
func (n *Network) networkKey() ([32]byte, error) {
	n.mu.Lock()
	has, nf := n.rec.HasKey, n.nf
	n.mu.Unlock()
	var key [32]byte
	if !has {
		return key, fmt.Errorf("%w: network %q", ErrNoSecret, nf.Name)
	}
	b, err := readSecretFile(n.p.keyPath("network", n.id))
	if err != nil {
		return key, fmt.Errorf("pipes: network key: %w", err)
	}
	if len(b) != 32 || !nf.CheckKey([32]byte(b)) {
		return key, fmt.Errorf("%w: stored key of network %q does not match its netfile; set the secret again", ErrWrongSecret, nf.Name)
	}
	return [32]byte(b), nil
}

// AddGateway adds a gateway for this network on this platform (it is not
// written into the netfile).
func (n *Network) AddGateway(host string, port int) error {
	if host == "" || port <= 0 || port > 65535 {
		return fmt.Errorf("pipes: gateway %q port %d: need a host and a port in 1..65535", host, port)
	}
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	n.mu.Lock()
	defer n.mu.Unlock()
	if slices.Contains(n.rec.Gateways, addr) || slices.Contains(n.nf.Gateways, addr) {
		return nil
	}
	rec := n.rec
	rec.Gateways = append(slices.Clone(rec.Gateways), addr)
	if err := putJSON(n.p.db, store.Key(tNetwork, n.id[:]), rec); err != nil {
		return mapErr(err, "")
	}
	n.rec = rec
	return nil
}

// Gateways returns the netfile's gateways followed by those added here.
func (n *Network) Gateways() []Gateway {
	var out []Gateway
	for _, a := range n.gatewayAddrs() {
		h, ps, err := net.SplitHostPort(a)
		if err != nil {
			continue
		}
		port, _ := strconv.Atoi(ps)
		out = append(out, Gateway{Network: n, NetworkID: n.id, Host: h, Port: port})
	}
	return out
}

func (n *Network) gatewayAddrs() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := slices.Clone(n.nf.Gateways)
	for _, g := range n.rec.Gateways {
		if !slices.Contains(out, g) {
			out = append(out, g)
		}
	}
	return out
}
