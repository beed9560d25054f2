// Package netlab builds NAT topologies out of Linux network namespaces, for
// tests of hole punching and of behaviour under loss, partitions, mapping
// expiry and address changes.
//
// A Lab is a set of namespaces that share a short name prefix:
//
//	<prefix>-pub   the "public internet": one bridge, br0, and no address
//	<prefix>-n<i>  a router: WAN veth "wan" on the public bridge, LAN bridge "br0"
//	<prefix>-h<j>  a host: one veth "eth0", on a router's LAN or on the public bridge
//
// Every interface is created directly inside its namespace, so nothing is
// added to the machine's own namespace and two labs with different prefixes
// never collide. The namespaces are not connected to the machine's network:
// they have no route out. Addresses come from reserved ranges only: the
// public segment is 198.18.0.0/15 (the benchmark range), router LANs are
// 10.<i>.0.0/24.
//
// A test process opens sockets inside a namespace with Host.ListenUDP or
// Host.Do: the calling OS thread enters the namespace, the socket is made,
// and the thread comes back. A socket stays in the namespace it was made in,
// so one test process can hold sockets in several namespaces at once.
//
// New removes whatever an earlier run with the same prefix left behind (a
// killed test run) and registers Close with t.Cleanup. It skips the test
// when the machine cannot build a lab: not root, not Linux, or no ip or nft.
package netlab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// ErrUnsupported is returned (wrapped) by Open when this machine cannot
// build a lab.
var ErrUnsupported = errors.New("netlab: network namespaces unavailable")

// NATKind is the behaviour of a router.
type NATKind int

const (
	// None is no translation: the router is a plain switch between its LAN
	// and the public segment, and hosts behind it get public addresses.
	None NATKind = iota
	// EIMAddrPortFiltering is a home router: endpoint-independent mapping
	// (masquerade keeps one public port per inside socket) and
	// address-and-port-dependent filtering (unsolicited inbound is dropped
	// before conntrack commits an entry for it).
	EIMAddrPortFiltering
	// FullCone is endpoint-independent mapping and endpoint-independent
	// filtering: once an inside socket has sent anything, anyone may send
	// to its public port.
	FullCone
	// Symmetric maps each destination to a new random public port and
	// filters like EIMAddrPortFiltering.
	Symmetric
	// PlainMasquerade is Linux masquerade with no filter rule. Simultaneous
	// punches through it fail: the first unsolicited inbound packet gets a
	// conntrack entry, which then forces the other side's outbound packet
	// onto a new port.
	PlainMasquerade
)

func (k NATKind) String() string {
	switch k {
	case None:
		return "None"
	case EIMAddrPortFiltering:
		return "EIMAddrPortFiltering"
	case FullCone:
		return "FullCone"
	case Symmetric:
		return "Symmetric"
	case PlainMasquerade:
		return "PlainMasquerade"
	}
	return fmt.Sprintf("NATKind(%d)", int(k))
}

// Node is something attached to the public segment: a *NAT or a public
// *Host. The impairments act on its link to the public segment.
type Node interface {
	portName() string
}

// Lab is one topology. Its methods are safe for concurrent use.
type Lab struct {
	prefix string
	ctx    context.Context

	mu      sync.Mutex
	closed  bool
	public  bool
	nats    []*NAT
	hosts   []*Host
	nextPub int // last host number used in 198.18.0.0/15
	impair  map[string]impairment
	delays  map[string]*delayQueue // by port; see delay_linux.go
	lock    *os.File               // held while the lab exists (see lockPrefix)
}

// NAT is a router namespace.
type NAT struct {
	lab     *Lab
	kind    NATKind
	index   int
	ns      string
	pubAddr netip.Addr
	lanAddr netip.Addr
	hosts   []*Host
	timeout int // UDP mapping lifetime in seconds; 0 for the kernel's default
}

// Host is an end host namespace.
type Host struct {
	lab    *Lab
	index  int
	ns     string
	behind *NAT
	addr   netip.Addr
}

const publicBits = 15

// New builds an empty lab for a test, skipping the test when this machine
// cannot build one. prefix should be short and unique among the labs that
// may exist at the same time (each test package's labs, say "ptA", "ptB");
// it is cut to 8 lower-case letters and digits.
func New(tb testing.TB, prefix string) *Lab {
	tb.Helper()
	l, err := Open(context.Background(), prefix)
	if errors.Is(err, ErrUnsupported) {
		tb.Skip(err)
	}
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := l.Close(); err != nil {
			tb.Errorf("netlab: close: %v", err)
		}
	})
	return l
}

// Open builds an empty lab without a testing.TB; the caller must Close it.
// The error wraps ErrUnsupported when this machine cannot build a lab. ctx
// bounds the commands that the lab runs, except those of Close.
func Open(ctx context.Context, prefix string) (*Lab, error) {
	p := shortName(prefix)
	if p == "" {
		return nil, fmt.Errorf("netlab: prefix %q has no letters or digits", prefix)
	}
	if err := available(); err != nil {
		return nil, err
	}
	lock, err := lockPrefix(ctx, p)
	if err != nil {
		return nil, err
	}
	l := &Lab{prefix: p, ctx: ctx, impair: map[string]impairment{}, lock: lock}
	if err := l.removeLeftovers(context.Background()); err != nil {
		lock.Close()
		return nil, err
	}
	return l, nil
}

func shortName(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		}
		if b.Len() == 8 {
			break
		}
	}
	return b.String()
}

func available() error {
	if !platformOK {
		return fmt.Errorf("%w: not Linux", ErrUnsupported)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: not root", ErrUnsupported)
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%w: %s not found (install iproute2 and nftables)", ErrUnsupported, tool)
		}
	}
	return nil
}

// Prefix is the lab's namespace name prefix.
func (l *Lab) Prefix() string { return l.prefix }

func (l *Lab) pubNS() string { return l.prefix + "-pub" }

// namespaces lists the named namespaces whose name starts with prefix-.
func (l *Lab) namespaces(ctx context.Context) ([]string, error) {
	out, err := run(ctx, nil, "ip", "netns", "list")
	if err != nil {
		return nil, err
	}
	var names []string
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) > 0 && strings.HasPrefix(f[0], l.prefix+"-") {
			names = append(names, f[0])
		}
	}
	return names, nil
}

func (l *Lab) removeLeftovers(ctx context.Context) error {
	names, err := l.namespaces(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range names {
		// Deleting a namespace deletes its veths (and so their peers) and
		// bridges: nothing of a lab lives outside its namespaces.
		if _, err := run(ctx, nil, "ip", "netns", "del", n); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Close removes every namespace of the lab, with their interfaces. Sockets
// still open in them keep working on their own, unnamed, namespace until
// closed. Close may be called more than once.
func (l *Lab) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	l.closeDelays()
	err := l.removeLeftovers(context.Background())
	l.lock.Close() // lets another process use the prefix
	return err
}

func (l *Lab) check() error {
	if l.closed {
		return errors.New("netlab: lab closed")
	}
	return nil
}

// AddPublic makes the public namespace. AddNAT and AddHost call it when
// needed; calling it again does nothing.
func (l *Lab) AddPublic() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.addPublic()
}

func (l *Lab) addPublic() error {
	if err := l.check(); err != nil {
		return err
	}
	if l.public {
		return nil
	}
	ns := l.pubNS()
	if err := l.newNS(ns); err != nil {
		return err
	}
	if err := l.ipBatch(ns,
		"link add br0 type bridge",
		"link set br0 up",
	); err != nil {
		return err
	}
	l.public = true
	return l.applyPublicRules()
}

func (l *Lab) newNS(ns string) error {
	if _, err := run(l.ctx, nil, "ip", "netns", "add", ns); err != nil {
		return fmt.Errorf("%w: %v", ErrUnsupported, err)
	}
	return l.ipBatch(ns, "link set lo up")
}

// ipBatch runs ip commands in namespace ns.
func (l *Lab) ipBatch(ns string, cmds ...string) error {
	var b strings.Builder
	for _, c := range cmds {
		b.WriteString(c)
		b.WriteByte('\n')
	}
	_, err := run(l.ctx, []byte(b.String()), "ip", "-n", ns, "-batch", "-")
	return err
}

func (l *Lab) allocPublic() netip.Addr {
	l.nextPub++
	n := l.nextPub
	// 198.18.0.0/15: skip .0 and .255 of each /24 for readability.
	return netip.AddrFrom4([4]byte{198, 18 + byte(n/(254*256)), byte(n / 254 % 256), byte(n%254 + 1)})
}

// AddNAT adds a router of the given kind, its WAN on the public segment.
func (l *Lab) AddNAT(kind NATKind) (*NAT, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.addPublic(); err != nil {
		return nil, err
	}
	if kind < None || kind > PlainMasquerade {
		return nil, fmt.Errorf("netlab: unknown NAT kind %v", kind)
	}
	n := &NAT{lab: l, kind: kind, index: len(l.nats) + 1}
	n.ns = fmt.Sprintf("%s-n%d", l.prefix, n.index)
	if n.index > 250 {
		return nil, errors.New("netlab: too many NATs")
	}
	if err := l.newNS(n.ns); err != nil {
		return nil, err
	}
	port := n.portName()
	if _, err := run(l.ctx, nil, "ip", "link", "add", "wan", "netns", n.ns,
		"type", "veth", "peer", "name", port, "netns", l.pubNS()); err != nil {
		return nil, err
	}
	if err := l.ipBatch(l.pubNS(),
		"link set "+port+" master br0",
		"link set "+port+" up",
	); err != nil {
		return nil, err
	}
	cmds := []string{"link add br0 type bridge", "link set br0 up", "link set wan up"}
	if kind == None {
		cmds = append(cmds, "link set wan master br0")
	} else {
		n.pubAddr = l.allocPublic()
		n.lanAddr = netip.AddrFrom4([4]byte{10, byte(n.index), 0, 1})
		cmds = append(cmds,
			fmt.Sprintf("addr add %s/%d dev wan", n.pubAddr, publicBits),
			fmt.Sprintf("addr add %s/24 dev br0", n.lanAddr),
		)
	}
	if err := l.ipBatch(n.ns, cmds...); err != nil {
		return nil, err
	}
	if kind != None {
		if err := writeSysctl(n.ns, "net/ipv4/ip_forward", "1"); err != nil {
			return nil, err
		}
	}
	if err := n.applyRules(); err != nil {
		return nil, err
	}
	l.nats = append(l.nats, n)
	return n, nil
}

// AddHost adds a host behind the router, or on the public segment when
// behind is nil.
func (l *Lab) AddHost(behind *NAT) (*Host, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.addPublic(); err != nil {
		return nil, err
	}
	if behind != nil && behind.lab != l {
		return nil, errors.New("netlab: NAT of another lab")
	}
	h := &Host{lab: l, index: len(l.hosts) + 1, behind: behind}
	h.ns = fmt.Sprintf("%s-h%d", l.prefix, h.index)
	if err := l.newNS(h.ns); err != nil {
		return nil, err
	}
	peerNS, port := l.pubNS(), h.portName()
	if behind != nil {
		peerNS = behind.ns
		if len(behind.hosts) >= 240 {
			return nil, errors.New("netlab: too many hosts behind one NAT")
		}
	}
	if _, err := run(l.ctx, nil, "ip", "link", "add", "eth0", "netns", h.ns,
		"type", "veth", "peer", "name", port, "netns", peerNS); err != nil {
		return nil, err
	}
	if err := l.ipBatch(peerNS, "link set "+port+" master br0", "link set "+port+" up"); err != nil {
		return nil, err
	}
	cmds := []string{"link set eth0 up"}
	if behind == nil || behind.kind == None {
		h.addr = l.allocPublic()
		cmds = append(cmds, fmt.Sprintf("addr add %s/%d dev eth0", h.addr, publicBits))
	} else {
		h.addr = netip.AddrFrom4([4]byte{10, byte(behind.index), 0, byte(10 + len(behind.hosts))})
		cmds = append(cmds,
			fmt.Sprintf("addr add %s/24 dev eth0", h.addr),
			fmt.Sprintf("route add default via %s", behind.lanAddr),
		)
	}
	if err := l.ipBatch(h.ns, cmds...); err != nil {
		return nil, err
	}
	l.hosts = append(l.hosts, h)
	if behind != nil {
		behind.hosts = append(behind.hosts, h)
	}
	return h, nil
}

// portName is the NAT's WAN port on the public bridge.
func (n *NAT) portName() string { return fmt.Sprintf("n%d", n.index) }

// portName is the host's port on the public bridge or on its router's LAN.
func (h *Host) portName() string { return fmt.Sprintf("h%d", h.index) }

// Kind is the router's behaviour.
func (n *NAT) Kind() NATKind { return n.kind }

// Namespace is the router's namespace name.
func (n *NAT) Namespace() string { return n.ns }

// PublicAddr is the router's current WAN address (invalid for kind None).
func (n *NAT) PublicAddr() netip.Addr {
	n.lab.mu.Lock()
	defer n.lab.mu.Unlock()
	return n.pubAddr
}

// LANAddr is the router's address on its LAN (invalid for kind None).
func (n *NAT) LANAddr() netip.Addr { return n.lanAddr }

// Run runs a command in the router's namespace and returns its combined
// output.
func (n *NAT) Run(cmd ...string) (string, error) { return runIn(n.lab.ctx, n.ns, cmd) }

// Namespace is the host's namespace name.
func (h *Host) Namespace() string { return h.ns }

// Addr is the host's address: public, or private behind a translating NAT.
func (h *Host) Addr() netip.Addr { return h.addr }

// Behind is the host's router, nil for a public host.
func (h *Host) Behind() *NAT { return h.behind }

// Run runs a command in the host's namespace (ip netns exec) and returns
// its combined output.
func (h *Host) Run(cmd ...string) (string, error) { return runIn(h.lab.ctx, h.ns, cmd) }

// Command returns a command that runs in the host's namespace, for a
// process that runs alongside the test.
func (h *Host) Command(ctx context.Context, cmd ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.ns}, cmd...)...)
}

// Do runs f on an OS thread that is inside the host's namespace. Sockets
// that f makes stay in the namespace; goroutines that f starts do not run
// in it.
func (h *Host) Do(f func() error) error { return doIn(h.ns, f) }

// ListenUDP opens a UDP socket inside the host's namespace. addr is as for
// net.ListenUDP's "udp4" network, for example ":0" or ":4000".
func (h *Host) ListenUDP(addr string) (*net.UDPConn, error) {
	ua, err := net.ResolveUDPAddr("udp4", addr)
	if err != nil {
		return nil, err
	}
	var c *net.UDPConn
	err = h.Do(func() error {
		var err error
		c, err = net.ListenUDP("udp4", ua)
		return err
	})
	return c, err
}

// Do runs f on an OS thread inside the router's namespace.
func (n *NAT) Do(f func() error) error { return doIn(n.ns, f) }
