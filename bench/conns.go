package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/quic-go/quic-go"

	"github.com/pipesnet/pipes"
)

// The data connection benchmark: Node.Dial/Listen against a raw quic-go
// stream and a go-libp2p stream (QUIC transport), all in one process on
// 127.0.0.1, Pipes nodes with default timings.
//
// (1) Throughput: the dialer writes connMiB MiB in writes of 256 KiB, then
// CloseWrite; the listener reads to EOF. Timed from the first write (the
// connection is already open) until the listener read EOF. Every system
// uses the same code on a new stream of a connection that is already up
// (and warmed by one transfer of 32 MiB first); three rounds, each round
// measures every system once, in turn, so that drift of the machine hits
// all of them alike (-conn-rounds changes the count); the median counts.
//
// (2) The same through one relay: nodes A - R - B, A and B with target
// degree 1 and only R as gateway, so A's connection to B is a chain of two
// streams spliced by R with TLS 1.3 end to end.
//
// (3) Set-up time: open a new connection, write one byte, read it back
// from an echo service; median and p99 over connDials sequential dials,
// each connection closed before the next. Pipes: Node.Dial to a direct
// peer; go-libp2p: host.NewStream on a connected host; raw quic-go:
// OpenStreamSync on an open connection, as a floor.
var (
	connMiB    int // -conn-mib: bytes of each throughput transfer, in MiB
	connDials  int // -conn-dials: dials of the set-up measurement
	connRounds int // -conn-rounds: throughput rounds (the median counts)
)

const (
	connGoal   = 0.95      // direct Dial/Listen throughput at least 95% of a raw quic-go stream
	connChunk  = 256 << 10 // write size
	connWarmup = 32 << 20  // bytes of the warm-up transfer on each path

	libp2pBulk protocol.ID = "/pipes-bench/bulk/1"
	libp2pEcho protocol.ID = "/pipes-bench/echo/1"
)

// duplex is one connection: a Pipes net.Conn, a quic-go stream or a
// go-libp2p stream.
type duplex interface {
	io.ReadWriter
	CloseWrite() error // the peer reads EOF
	Close() error      // both directions
}

// connSystem opens connections from its dialing end and accepts them at
// its listening end. kind is "bulk" or "echo" (a service or a protocol;
// the raw system has a single accept queue, the benchmark runs one
// measurement at a time).
type connSystem struct {
	name   string
	dial   func(ctx context.Context, kind string) (duplex, error)
	accept func(ctx context.Context, kind string) (duplex, error)
	close  func()
}

// bulkRun is one throughput measurement.
type bulkRun struct {
	wall, cpu time.Duration
	other     time.Duration // CPU time of other processes on the machine meanwhile
}

type setupStats struct {
	n        int
	p50, p99 time.Duration
	mean     time.Duration
}

func runConns(quick bool) {
	mib, dials := connMiB, connDials
	if quick {
		mib, dials = min(mib, 32), min(dials, 100)
	}
	if mib <= 0 || dials <= 0 || connRounds <= 0 {
		must(errors.New("conns: -conn-mib, -conn-dials and -conn-rounds must be positive"))
	}
	total := int64(mib) << 20

	raw, err := newRawConnSystem()
	must(err)
	defer raw.close()
	lp, lazy, err := newLibp2pConnSystem()
	must(err)
	defer lp.close()
	direct, err := newPipesConnSystem(false)
	must(err)
	defer direct.close()
	relayed, err := newPipesConnSystem(true)
	must(err)
	defer relayed.close()
	systems := []*connSystem{raw, lp, direct, relayed}

	// Throughput.
	for _, s := range systems {
		_, err := bulkOnce(s, connWarmup)
		must(err)
	}
	runs := make([][]bulkRun, len(systems))
	for round := range connRounds {
		// Each round starts with another system, so that none always
		// runs first or right after the same other one. The profile
		// label marks the benchmark's own goroutines only: the nodes'
		// and quic-go's were started before and carry none.
		for k := range systems {
			i := (round + k) % len(systems)
			s := systems[i]
			var r bulkRun
			pprof.Do(context.Background(), pprof.Labels("conns", s.name), func(context.Context) {
				r, err = bulkOnce(s, total)
			})
			must(err)
			runs[i] = append(runs[i], r)
		}
	}
	medians := make([]bulkRun, len(systems))
	for i := range runs {
		sorted := slices.SortedFunc(slices.Values(runs[i]), func(x, y bulkRun) int { return cmp.Compare(x.wall, y.wall) })
		medians[i] = sorted[len(sorted)/2]
	}

	// Set-up time.
	setups := make([]setupStats, len(systems))
	for i, s := range systems {
		pprof.Do(context.Background(), pprof.Labels("conns", s.name+" set-up"), func(context.Context) {
			setups[i], err = setupTimes(s, dials)
		})
		must(err)
	}

	mbps := func(d time.Duration) float64 { return float64(total) / 1e6 / d.Seconds() }
	fmt.Printf("## Data connections: Dial/Listen vs a raw quic-go stream and go-libp2p\n\n")
	negotiation := "go-libp2p negotiates the protocol lazily (the multistream header travels with the first write, as the protocol is known from identify)"
	if !lazy {
		negotiation = "go-libp2p negotiates the protocol before NewStream returns (the protocol was not known from identify)"
	}
	fmt.Printf("All in one process on 127.0.0.1. Raw: two quic-go endpoints bound to 127.0.0.1 (default configuration, self-signed TLS). "+
		"go-libp2p %s: two hosts listening on QUIC only (/quic-v1; the connection is checked to be QUIC), connected. "+
		"Pipes: two nodes of one network (default timings, target degree 1) for the direct rows; "+
		"A - R - B (target degree 1, A and B know only R, so they are not peers) for the relayed rows. "+
		"Throughput: %d MiB in writes of %d KiB on a new stream of an open connection (each path warmed by one %d MiB transfer), "+
		"then CloseWrite; from the first write until the listener read EOF; %d rounds, each measuring every system in turn (each round starting with the next system); median. "+
		"CPU: user and system time of the whole process (both ends, and the relay) per GB moved. "+
		"Set-up: open a connection, write 1 byte, read it back from an echo service; %d sequential dials, each closed before the next. "+
		"%s. MB = 10⁶ bytes.\n\n",
		modVersion("github.com/libp2p/go-libp2p"), mib, connChunk>>10, connWarmup>>20, connRounds, dials, negotiation)

	names := []string{
		"raw quic-go stream",
		"go-libp2p stream (QUIC)",
		"Pipes Dial/Listen, direct peers",
		"Pipes Dial/Listen, through one relay",
	}
	var roundNames []string
	for k := range connRounds {
		roundNames = append(roundNames, fmt.Sprint(k+1))
	}
	header("system", "MB/s, rounds "+strings.Join(roundNames, " / "), "median MB/s", "CPU per GB (median run)", "median / raw")
	for i := range systems {
		var each []string
		for _, r := range runs[i] {
			each = append(each, fmt.Sprintf("%.0f", mbps(r.wall)))
		}
		ratio := ""
		if i > 0 {
			ratio = fmt.Sprintf("%.1f%%", 100*medians[0].wall.Seconds()/medians[i].wall.Seconds())
		}
		fmt.Printf("| %s | %s | %.0f | %s | %s |\n", names[i], strings.Join(each, " / "), mbps(medians[i].wall),
			fmtDur(time.Duration(float64(medians[i].cpu)*1e9/float64(total))), ratio)
	}
	fmt.Println()
	// Other processes on the machine take cores from the run: say so.
	var loaded []string
	for i := range systems {
		for k, r := range runs[i] {
			if share := r.other.Seconds() / (r.wall.Seconds() * float64(runtime.NumCPU())); share > 0.05 {
				loaded = append(loaded, fmt.Sprintf("%s round %d: %.0f%%", names[i], k+1, 100*share))
			}
		}
	}
	if len(loaded) > 0 {
		fmt.Printf("Other processes used more than 5%% of the machine's CPU during: %s.\n\n", strings.Join(loaded, "; "))
	} else {
		fmt.Printf("Other processes used less than 5%% of the machine's CPU during every throughput run.\n\n")
	}
	header("goal", "result")
	dr := medians[0].wall.Seconds() / medians[2].wall.Seconds()
	met := "met"
	if dr < connGoal {
		met = "**missed**"
	}
	fmt.Printf("| direct Dial/Listen ≥ %.0f%% of a raw quic-go stream | %s: %.1f%% (%.0f vs %.0f MB/s) |\n",
		100*connGoal, met, 100*dr, mbps(medians[2].wall), mbps(medians[0].wall))
	fmt.Printf("| through one relay (reported) | %.1f%% of raw (%.0f MB/s) |\n",
		100*medians[0].wall.Seconds()/medians[3].wall.Seconds(), mbps(medians[3].wall))
	fmt.Printf("| go-libp2p stream (reference) | %.1f%% of raw (%.0f MB/s) |\n",
		100*medians[0].wall.Seconds()/medians[1].wall.Seconds(), mbps(medians[1].wall))
	fmt.Println()

	setupNames := []string{
		"raw quic-go: OpenStreamSync + 1 B echo (floor)",
		"go-libp2p: host.NewStream + 1 B echo",
		"Pipes: Dial to a direct peer + 1 B echo",
		"Pipes: Dial through one relay + 1 B echo",
	}
	header("set-up", "dials", "p50", "p99", "mean", "p50 / go-libp2p", "p99 / go-libp2p")
	for i, s := range setups {
		l := setups[1]
		fmt.Printf("| %s | %d | %s | %s | %s | %.2fx | %.2fx |\n", setupNames[i], s.n, fmtDur(s.p50), fmtDur(s.p99), fmtDur(s.mean),
			float64(s.p50)/float64(l.p50), float64(s.p99)/float64(l.p99))
	}
	fmt.Println()
}

// bulkOnce sends total bytes on a new connection of s and returns the time
// from the first write until the listener read EOF, and the process CPU
// time meanwhile.
func bulkOnce(s *connSystem, total int64) (bulkRun, error) {
	runtime.GC()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	type got struct {
		n   int64
		end time.Time
		err error
	}
	res := make(chan got, 1)
	go func() {
		c, err := s.accept(ctx, "bulk")
		if err != nil {
			res <- got{err: err}
			return
		}
		defer c.Close()
		buf := make([]byte, connChunk)
		var g got
		for {
			n, err := c.Read(buf)
			g.n += int64(n)
			if err == io.EOF {
				break
			}
			if err != nil {
				g.err = err
				break
			}
		}
		g.end = time.Now()
		res <- g
	}()
	c, err := s.dial(ctx, "bulk")
	if err != nil {
		return bulkRun{}, fmt.Errorf("%s: dial: %w", s.name, err)
	}
	defer c.Close()
	buf := make([]byte, connChunk)
	cpu0, busy0 := processCPU(), machineBusy()
	start := time.Now()
	for sent := int64(0); sent < total; {
		n, err := c.Write(buf[:min(int64(len(buf)), total-sent)])
		if err != nil {
			return bulkRun{}, fmt.Errorf("%s: write: %w", s.name, err)
		}
		sent += int64(n)
	}
	if err := c.CloseWrite(); err != nil {
		return bulkRun{}, fmt.Errorf("%s: CloseWrite: %w", s.name, err)
	}
	var g got
	select {
	case g = <-res:
	case <-ctx.Done():
		return bulkRun{}, fmt.Errorf("%s: the listener did not read everything", s.name)
	}
	cpu := processCPU() - cpu0
	other := max(machineBusy()-busy0-cpu, 0)
	if g.err != nil {
		return bulkRun{}, fmt.Errorf("%s: read: %w", s.name, g.err)
	}
	if g.n != total {
		return bulkRun{}, fmt.Errorf("%s: read %d bytes of %d", s.name, g.n, total)
	}
	return bulkRun{wall: g.end.Sub(start), cpu: cpu, other: other}, nil
}

// setupTimes runs an echo service on s and times dials dials (after 20
// unmeasured ones): open, write 1 byte, read it back; each connection is
// closed before the next dial.
func setupTimes(s *connSystem, dials int) (setupStats, error) {
	runtime.GC()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	wg.Go(func() {
		for {
			c, err := s.accept(ctx, "echo")
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				io.Copy(c, c)
			})
		}
	})
	const warm = 20
	ds := make([]time.Duration, 0, dials)
	in, out := []byte{'x'}, make([]byte, 1)
	for i := range warm + dials {
		dctx, dcancel := context.WithTimeout(ctx, 30*time.Second)
		start := time.Now()
		c, err := s.dial(dctx, "echo")
		if err != nil {
			dcancel()
			return setupStats{}, fmt.Errorf("%s: dial %d: %w", s.name, i, err)
		}
		if _, err := c.Write(in); err != nil {
			c.Close()
			dcancel()
			return setupStats{}, fmt.Errorf("%s: dial %d: write: %w", s.name, i, err)
		}
		if _, err := io.ReadFull(c, out); err != nil {
			c.Close()
			dcancel()
			return setupStats{}, fmt.Errorf("%s: dial %d: read: %w", s.name, i, err)
		}
		d := time.Since(start)
		c.Close()
		dcancel()
		if i >= warm {
			ds = append(ds, d)
		}
	}
	slices.Sort(ds)
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	return setupStats{n: len(ds), p50: ds[len(ds)/2], p99: ds[len(ds)*99/100], mean: sum / time.Duration(len(ds))}, nil
}

// pump hands what next returns to a channel until it fails.
func pump[T any](next func() (T, error)) <-chan T {
	ch := make(chan T, 16)
	go func() {
		defer close(ch)
		for {
			v, err := next()
			if err != nil {
				return
			}
			ch <- v
		}
	}()
	return ch
}

func take[T any](ctx context.Context, ch <-chan T) (T, error) {
	select {
	case v, ok := <-ch:
		if !ok {
			var zero T
			return zero, net.ErrClosed
		}
		return v, nil
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// rawStream is a quic-go stream with the same Close and CloseWrite as a
// Pipes connection between direct peers.
type rawStream struct{ *quic.Stream }

func (s rawStream) CloseWrite() error { return s.Stream.Close() }
func (s rawStream) Close() error {
	s.Stream.CancelRead(0)
	return s.Stream.Close()
}

// newRawConnSystem connects two quic-go endpoints on loopback (default
// configuration, as rawSend); connections are streams of that connection.
func newRawConnSystem() (*connSystem, error) {
	client, server, closePair, err := rawQUICPair(nil)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	streams := pump(func() (*quic.Stream, error) { return server.AcceptStream(ctx) })
	return &connSystem{
		name: "raw",
		dial: func(ctx context.Context, _ string) (duplex, error) {
			s, err := client.OpenStreamSync(ctx)
			if err != nil {
				return nil, err
			}
			return rawStream{s}, nil
		},
		accept: func(ctx context.Context, _ string) (duplex, error) {
			s, err := take(ctx, streams)
			if err != nil {
				return nil, err
			}
			return rawStream{s}, nil
		},
		close: func() {
			cancel()
			closePair()
		},
	}, nil
}

// newLibp2pConnSystem starts two go-libp2p hosts listening on QUIC only
// (as the GossipSub benchmark) with handlers for both protocols, and
// connects them. lazy tells whether the dialer knows the protocols from
// identify, so that NewStream negotiates lazily.
func newLibp2pConnSystem() (*connSystem, bool, error) {
	h1, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/udp/0/quic-v1"))
	if err != nil {
		return nil, false, err
	}
	h2, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/udp/0/quic-v1"))
	if err != nil {
		h1.Close()
		return nil, false, err
	}
	closeAll := func() {
		h1.Close()
		h2.Close()
	}
	chans := map[string]chan network.Stream{"bulk": make(chan network.Stream, 16), "echo": make(chan network.Stream, 16)}
	h2.SetStreamHandler(libp2pBulk, func(s network.Stream) { chans["bulk"] <- s })
	h2.SetStreamHandler(libp2pEcho, func(s network.Stream) { chans["echo"] <- s })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h1.Connect(ctx, peer.AddrInfo{ID: h2.ID(), Addrs: h2.Addrs()}); err != nil {
		closeAll()
		return nil, false, err
	}
	if err := libp2pOverQUIC(h1, h2.ID()); err != nil {
		closeAll()
		return nil, false, err
	}
	// Identify runs after the connection is up; NewStream waits for it
	// anyway, this only makes the lazy negotiation observable.
	lazy := false
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		if ps, _ := h1.Peerstore().SupportsProtocols(h2.ID(), libp2pBulk, libp2pEcho); len(ps) == 2 {
			lazy = true
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	protos := map[string]protocol.ID{"bulk": libp2pBulk, "echo": libp2pEcho}
	return &connSystem{
		name: "go-libp2p",
		dial: func(ctx context.Context, kind string) (duplex, error) {
			return h1.NewStream(ctx, h2.ID(), protos[kind])
		},
		accept: func(ctx context.Context, kind string) (duplex, error) {
			return take(ctx, chans[kind])
		},
		close: closeAll,
	}, lazy, nil
}

// libp2pOverQUIC checks that h's connections to p are QUIC.
func libp2pOverQUIC(h host.Host, p peer.ID) error {
	cs := h.Network().ConnsToPeer(p)
	if len(cs) == 0 {
		return errors.New("go-libp2p: not connected")
	}
	for _, c := range cs {
		if !strings.Contains(c.RemoteMultiaddr().String(), "/quic-v1") {
			return fmt.Errorf("go-libp2p: connection over %s, want QUIC", c.RemoteMultiaddr())
		}
	}
	return nil
}

// newPipesConnSystem starts two Pipes nodes that are direct peers, or
// with relay three nodes A - R - B where A and B are not peers, and
// listens on "bulk" and "echo" at the last node; the first node dials.
func newPipesConnSystem(relay bool) (*connSystem, error) {
	name, count, edges := "Pipes direct", 2, [][2]int{{0, 1}}
	if relay {
		// Node 0 is R, the only gateway of A (1) and B (2).
		name, count, edges = "Pipes relayed", 3, [][2]int{{0, 1}, {0, 2}}
	}
	noPunch = relay
	pn, err := startPipes(count, edges, 1)
	noPunch = false
	if err != nil {
		return nil, err
	}
	a, b := pn.nodes[count-2], pn.nodes[count-1]
	isPeer := slices.ContainsFunc(a.ConnectedPeers(), func(r pipes.NodeRef) bool { return r.ID() == b.ID() })
	if isPeer == relay {
		pn.close()
		return nil, fmt.Errorf("%s: A and B are peers: %v", name, isPeer)
	}
	var ls []net.Listener
	chans := map[string]<-chan net.Conn{}
	for _, kind := range []string{"bulk", "echo"} {
		l, err := b.Listen(kind)
		if err != nil {
			pn.close()
			return nil, err
		}
		ls = append(ls, l)
		chans[kind] = pump(l.Accept)
	}
	return &connSystem{
		name: name,
		dial: func(ctx context.Context, kind string) (duplex, error) {
			c, err := a.Dial(ctx, b.ID(), kind)
			if err != nil {
				return nil, err
			}
			// A relayed connection is TLS end to end; a direct one is a
			// QUIC stream.
			if _, isTLS := c.(interface{ ConnectionState() tls.ConnectionState }); isTLS != relay {
				c.Close()
				return nil, fmt.Errorf("%s: the connection is relayed: %v", name, isTLS)
			}
			return c.(duplex), nil
		},
		accept: func(ctx context.Context, kind string) (duplex, error) {
			c, err := take(ctx, chans[kind])
			if err != nil {
				return nil, err
			}
			return c.(duplex), nil
		},
		close: func() {
			for _, l := range ls {
				l.Close()
			}
			pn.close()
		},
	}, nil
}

// machineBusy returns the CPU time of the whole machine so far (every
// core, all but idle and iowait), from /proc/stat (0 where unavailable).
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	fs := strings.Fields(line)
	if len(fs) < 9 || fs[0] != "cpu" {
		return 0
	}
	var busy int64
	for i, f := range fs[1:9] { // user nice system idle iowait irq softirq steal
		if i == 3 || i == 4 {
			continue
		}
		v, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0
		}
		busy += v
	}
	return time.Duration(busy) * 10 * time.Millisecond
}

// modVersion returns the version of module path built into the binary.
func modVersion(path string) string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == path {
				return d.Version
			}
		}
	}
	return "(version unknown)"
}

// rawQUICPair connects two quic-go endpoints on loopback, both bound to
// 127.0.0.1 (like the Pipes nodes), with configuration qconf (nil: the
// default). close ends both connections and the sockets.
func rawQUICPair(qconf *quic.Config) (client, server *quic.Conn, done func(), err error) {
	cert, err := selfSigned()
	if err != nil {
		return nil, nil, nil, err
	}
	tconf := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"bench"}, InsecureSkipVerify: true}
	ln, err := quic.ListenAddr("127.0.0.1:0", tconf, qconf)
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	accepted := make(chan *quic.Conn, 1)
	go func() {
		c, err := ln.Accept(ctx)
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		cancel()
		ln.Close()
		return nil, nil, nil, err
	}
	tr := &quic.Transport{Conn: udp}
	client, err = tr.Dial(ctx, ln.Addr(), tconf, qconf)
	if err != nil {
		cancel()
		tr.Close()
		ln.Close()
		return nil, nil, nil, err
	}
	server, ok := <-accepted
	if !ok {
		cancel()
		tr.Close()
		ln.Close()
		return nil, nil, nil, errors.New("raw: accept failed")
	}
	return client, server, func() {
		client.CloseWithError(0, "")
		server.CloseWithError(0, "")
		cancel()
		tr.Close()
		ln.Close()
	}, nil
}
