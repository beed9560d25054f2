package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/pipesnet/pipes"
)

// The realtime benchmark: datagrams through a Pipes realtime point-to-point
// pipeline, from a local UDP application at one end to a local UDP
// application at the other (UDP port maps at both ends), against raw
// quic-go datagrams (SendDatagram/ReceiveDatagram on one connection, no
// local UDP sockets) on the same loopback. Two measurements each: (a) the
// sender sends as fast as it can for rtSeconds: datagrams received per
// second and the loss; (b) the sender is paced at half the raw maximum:
// the loss and the one-way latency. For reference, Pipes is also paced at
// the raw maximum, and the highest paced rate at which it loses less than
// 1% is searched; and for each measurement the benchmark tells where
// datagrams were lost (kernel socket buffers, the nodes' queues, QUIC) and
// the CPU time spent per datagram.
var (
	rtSize    int           // -rt-size: datagram payload bytes
	rtSeconds float64       // -rt-seconds: duration of each measurement
	rtTick    time.Duration // -rt-tick: pacing period of (b); each tick sends a burst
)

// Each datagram starts with its sequence number (8 bytes), its send time
// (8 bytes, nanoseconds since rtBase, monotonic) and the measurement it
// belongs to (1 byte); filler follows.
const rtHeaderLen = 8 + 8 + 1

var rtBase = time.Now()

// rtNow is the shared time base of senders and receivers.
func rtNow() int64 { return int64(time.Since(rtBase)) }

const (
	phaseWarmup byte = 1 + iota
	phaseMax
	phasePaced
	phaseFull
	phaseSearch // and the following, one per trial
	phaseIgnore = 0xff
)

func runRealtime(quick bool) {
	size := max(rtSize, rtHeaderLen)
	dur := time.Duration(rtSeconds * float64(time.Second))
	if quick {
		dur = time.Second
	}
	if dur <= 0 || rtTick <= 0 {
		must(errors.New("realtime: -rt-seconds and -rt-tick must be positive"))
	}

	raw, err := newRawDatagramPath(size)
	must(err)
	rawMax := raw.run(phaseMax, size, dur, 0)
	half := rawMax.rate / 2
	rawPaced := raw.run(phasePaced, size, dur, half)
	raw.close()

	pp, err := newPipesDatagramPath(size)
	must(err)
	pMax := pp.run(phaseMax, size, dur, 0)
	pPaced := pp.run(phasePaced, size, dur, half)
	// For reference: Pipes paced at the raw maximum, which tells the cost
	// of the flood in (a) (the sender has no back pressure) from what the
	// path carries.
	pFull := pp.run(phaseFull, size, dur, rawMax.rate)
	trial := 2 * time.Second
	if quick {
		trial = time.Second
	}
	lossless, pLossless := pp.losslessRate(size, trial, half, pPaced)
	pp.close()

	fmt.Println("## Realtime datagrams: Pipes realtime pipeline with UDP port maps vs raw quic-go datagrams")
	fmt.Println()
	fmt.Printf("Payload %d B. Max rate: the sender sends as fast as it can for %v. Paced: %.0f datagrams/s (half the raw maximum) for %v, "+
		"a burst every %v. Raw quic-go: SendDatagram/ReceiveDatagram on one connection directly, no local UDP sockets. "+
		"Pipes: local UDP socket → port map at node A → unencrypted realtime point-to-point pipeline (datagrams sealed end to end) → "+
		"port map at node B → local UDP socket. Latency: receive time minus the send time carried in the datagram.\n\n",
		size, dur, half, dur, rtTick)
	header("system", "max: sent/s", "max: received/s", "max: loss", "paced: sent/s", "paced: loss", "paced: p50", "paced: p99")
	row := func(name string, m, p rtPhase) {
		fmt.Printf("| %s | %.0f | %.0f | %.2f%% | %.0f | %.3f%% | %s | %s |\n", name, m.sentRate, m.rate, m.loss, p.sentRate, p.loss, fmtDur(p.p50), fmtDur(p.p99))
	}
	row("raw quic-go datagrams", rawMax, rawPaced)
	row("Pipes realtime pipeline, UDP port maps", pMax, pPaced)
	ratio := func(a, b float64) string {
		if b == 0 {
			return "-"
		}
		return fmt.Sprintf("%.0f%%", 100*a/b)
	}
	fmt.Printf("| Pipes/raw | | %s | | | | %s | %s |\n", ratio(pMax.rate, rawMax.rate),
		ratio(float64(pPaced.p50), float64(rawPaced.p50)), ratio(float64(pPaced.p99), float64(rawPaced.p99)))
	fmt.Println()
	metStr := func(ok bool) string {
		if ok {
			return "met"
		}
		return "**missed**"
	}
	header("goal", "result")
	fmt.Printf("| max rate ≥ 60%% of raw quic-go datagrams | %s: %.0f%% (%.0f vs %.0f datagrams/s) |\n",
		metStr(pMax.rate >= 0.6*rawMax.rate), 100*pMax.rate/rawMax.rate, pMax.rate, rawMax.rate)
	fmt.Printf("| loss < 1%% at half the raw maximum (%.0f/s) | %s: %.3f%% (%d of %d lost) |\n",
		half, metStr(pPaced.loss < 1), pPaced.loss, pPaced.sent-pPaced.received, pPaced.sent)
	fmt.Println()
	fmt.Printf("For reference, Pipes paced at the raw maximum (%.0f datagrams/s, bursts every %v): %.0f received/s, loss %.3f%%, p50 %s, p99 %s.\n\n",
		rawMax.rate, rtTick, pFull.rate, pFull.loss, fmtDur(pFull.p50), fmtDur(pFull.p99))
	if pPaced.loss < 1 {
		fmt.Printf("Pipes carries the half rate with < 1%% loss; the highest such rate was not searched.\n\n")
	} else {
		fmt.Printf("For reference, the highest paced rate at which Pipes lost < 1%% (bisection below the half rate, %v trials): %.0f datagrams/s "+
			"(%.0f%% of the raw maximum): loss %.3f%%, p50 %s, p99 %s.\n\n",
			trial, lossless, 100*lossless/rawMax.rate, pLossless.loss, fmtDur(pLossless.p50), fmtDur(pLossless.p99))
	}
	fmt.Println("Where datagrams were lost (counts over each measurement; kernel: the socket's receive-buffer drops in /proc/net/udp). " +
		"CPU: user and system time of the whole process (sender, receiver and both ends) over the measurement and its drain, per datagram received:")
	fmt.Println()
	header("system", "measurement", "sent", "received", "CPU per datagram received", "where lost")
	for _, r := range []struct {
		sys, m string
		ph     rtPhase
	}{{"raw", "max", rawMax}, {"raw", "paced", rawPaced}, {"Pipes", "max", pMax}, {"Pipes", "paced", pPaced}, {"Pipes", "paced at raw max", pFull}, {"Pipes", fmt.Sprintf("paced at %.0f/s (highest < 1%% loss)", lossless), pLossless}} {
		fmt.Printf("| %s | %s | %d | %d | %s | %s |\n", r.sys, r.m, r.ph.sent, r.ph.received, fmtDur(r.ph.cpuPer), r.ph.where)
	}
	fmt.Println()
}

// rtPath is one way of carrying datagrams from a sender to a receiver.
type rtPath struct {
	send     func(b []byte) error // must not keep b
	rec      *rtRecorder
	counters func() []rtCounter // where datagrams may be lost, in path order
	close    func()
}

type rtCounter struct {
	name string
	n    int64
}

// rtRecorder collects what the receiver gets in the current measurement.
type rtRecorder struct {
	mu       sync.Mutex
	phase    byte
	keepLat  bool
	seen     []uint64 // bitset by sequence number
	received int64
	dups     int64
	last     int64 // rtNow at the last datagram of the phase
	lat      []int64
}

func (r *rtRecorder) begin(phase byte, keepLat bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.phase, r.keepLat = phase, keepLat
	r.seen, r.lat = make([]uint64, 0, 1<<16), nil
	r.received, r.dups, r.last = 0, 0, 0
}

func (r *rtRecorder) deliver(b []byte) {
	now := rtNow()
	if len(b) < rtHeaderLen {
		return
	}
	seq := binary.BigEndian.Uint64(b)
	sent := int64(binary.BigEndian.Uint64(b[8:]))
	r.mu.Lock()
	defer r.mu.Unlock()
	if b[16] != r.phase {
		return
	}
	w := int(seq / 64)
	if w >= len(r.seen) {
		r.seen = append(r.seen, make([]uint64, w+1-len(r.seen))...)
	}
	if r.seen[w]&(1<<(seq%64)) != 0 {
		r.dups++
		return
	}
	r.seen[w] |= 1 << (seq % 64)
	r.received++
	r.last = now
	if r.keepLat {
		r.lat = append(r.lat, now-sent)
	}
}

func (r *rtRecorder) count() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.received
}

// rtPhase is the result of one measurement.
type rtPhase struct {
	sent, received int64
	sentRate       float64 // datagrams sent per second of sending
	rate           float64 // datagrams received per second, from the first send to the last receipt
	loss           float64 // percent of sent
	p50, p99       time.Duration
	cpuPer         time.Duration // CPU time of the whole process per datagram received
	where          string
}

func stamp(buf []byte, seq int64, phase byte) {
	binary.BigEndian.PutUint64(buf, uint64(seq))
	binary.BigEndian.PutUint64(buf[8:], uint64(rtNow()))
	buf[16] = phase
}

// warmup sends datagrams until one arrives (sessions, port maps and
// routes are then in place).
func (pa *rtPath) warmup(size int) error {
	pa.rec.begin(phaseWarmup, false)
	buf := make([]byte, size)
	deadline := time.Now().Add(30 * time.Second)
	for seq := int64(0); pa.rec.count() == 0; seq++ {
		if time.Now().After(deadline) {
			return errors.New("realtime: no datagram arrived in 30 s")
		}
		stamp(buf, seq, phaseWarmup)
		if err := pa.send(buf); err != nil {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	return nil
}

// run sends datagrams of size bytes for dur: as fast as possible if rate is
// 0, else paced at rate per second in bursts every rtTick. It waits for
// the stragglers, and returns what arrived.
func (pa *rtPath) run(phase byte, size int, dur time.Duration, rate float64) rtPhase {
	pa.rec.begin(phase, rate > 0)
	before := pa.counters()
	cpu0 := processCPU()
	var sent atomic.Int64
	start := rtNow()
	if rate == 0 {
		// quic-go's SendDatagram blocks while its queue is full: send
		// from a goroutine and count what it sent when time is up.
		var stop atomic.Bool
		done := make(chan struct{})
		go func() {
			defer close(done)
			buf := make([]byte, size)
			for seq := int64(0); !stop.Load(); {
				stamp(buf, seq, phase)
				if pa.send(buf) == nil {
					seq++
					sent.Store(seq)
				}
			}
		}()
		time.Sleep(dur)
		stop.Store(true)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			must(errors.New("realtime: the sender is stuck"))
		}
	} else {
		// Time-based pacing: at each tick, send what is due since the
		// start, so a late tick is made up by a larger burst.
		tick := time.NewTicker(rtTick)
		buf := make([]byte, size)
		var seq int64
		for {
			<-tick.C
			el := time.Duration(rtNow() - start)
			due := int64(rate * min(el, dur).Seconds())
			for ; seq < due; seq++ {
				stamp(buf, seq, phase)
				err := pa.send(buf)
				for try := 0; err != nil && try < 100; try++ {
					err = pa.send(buf)
				}
				must(err)
			}
			sent.Store(seq)
			if el >= dur {
				break
			}
		}
		tick.Stop()
	}
	sendTime := time.Duration(rtNow() - start)
	// Stragglers: wait until nothing more arrives for 300 ms (at most 5 s).
	for last, quiet, waited := pa.rec.count(), 0, 0; waited < 100; waited++ {
		time.Sleep(50 * time.Millisecond)
		if n := pa.rec.count(); n != last {
			last, quiet = n, 0
		} else if quiet++; quiet == 6 {
			break
		}
	}
	after := pa.counters()
	cpu := processCPU() - cpu0

	r := pa.rec
	r.mu.Lock()
	res := rtPhase{sent: sent.Load(), received: r.received}
	if el := time.Duration(r.last - start); el > 0 {
		res.rate = float64(r.received) / el.Seconds()
	}
	lat := r.lat
	r.phase = phaseIgnore
	r.mu.Unlock()
	res.sentRate = float64(res.sent) / sendTime.Seconds()
	if res.received > 0 {
		res.cpuPer = cpu / time.Duration(res.received)
	}
	if res.sent > 0 {
		res.loss = 100 * float64(res.sent-res.received) / float64(res.sent)
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		res.p50 = time.Duration(lat[len(lat)/2])
		res.p99 = time.Duration(lat[len(lat)*99/100])
	}
	var parts []string
	for i, c := range after {
		if d := c.n - before[i].n; d > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", c.name, d))
		}
	}
	if len(parts) == 0 {
		parts = append(parts, "nothing counted")
	}
	res.where = strings.Join(parts, "; ")
	return res
}

// losslessRate bisects between 0 and hi (where the loss was at least 1%,
// measured as atHi) for the highest paced rate that loses less than 1%,
// in trials of dur; it returns that rate and its measurement (zero if
// none passed).
func (pa *rtPath) losslessRate(size int, dur time.Duration, hi float64, atHi rtPhase) (float64, rtPhase) {
	if atHi.loss < 1 {
		return hi, atHi
	}
	var lo float64
	var best rtPhase
	for i := range 6 {
		mid := (lo + hi) / 2
		r := pa.run(phaseSearch+byte(i), size, dur, mid)
		if r.loss < 1 {
			lo, best = mid, r
		} else {
			hi = mid
		}
	}
	return lo, best
}

// newRawDatagramPath connects two quic-go endpoints on loopback with
// datagrams enabled; the client sends, the server receives.
func newRawDatagramPath(size int) (*rtPath, error) {
	client, server, closePair, err := rawQUICPair(&quic.Config{EnableDatagrams: true})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	rec := &rtRecorder{}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			b, err := server.ReceiveDatagram(ctx)
			if err != nil {
				return
			}
			rec.deliver(b)
		}
	})
	serverPort, clientPort := udpPort(server.LocalAddr()), udpPort(client.LocalAddr())
	pa := &rtPath{
		send: client.SendDatagram,
		rec:  rec,
		counters: func() []rtCounter {
			d := kernelDrops()
			cs, ss := client.ConnectionStats(), server.ConnectionStats()
			return []rtCounter{
				{"kernel, sender's QUIC socket", d[clientPort]},
				{"QUIC packets declared lost", int64(cs.PacketsLost)},
				{"kernel, receiver's QUIC socket", d[serverPort]},
				// quic-go drops a datagram silently when its receive
				// queue (128) is full; the packets that arrived less the
				// datagrams the receiver got is about that (the sender's
				// few ACK-only packets are counted too).
				{"≈ quic-go receive queue full (QUIC packets received − datagrams received)", int64(ss.PacketsReceived) - rec.count()},
			}
		},
		close: func() {
			cancel()
			closePair()
			wg.Wait()
		},
	}
	if err := pa.warmup(size); err != nil {
		pa.close()
		return nil, fmt.Errorf("raw: %w", err)
	}
	return pa, nil
}

// newPipesDatagramPath starts two nodes with an unencrypted realtime
// point-to-point pipeline from A to B and a UDP port map at each end; a
// local UDP socket sends to A's map, another receives from B's.
func newPipesDatagramPath(size int) (*rtPath, error) {
	pn, err := startPipes(2, [][2]int{{0, 1}}, 1)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*rtPath, error) {
		pn.close()
		return nil, fmt.Errorf("pipes realtime: %w", err)
	}
	a, b := pn.nodes[0], pn.nodes[1]
	id, err := a.CreatePipeline("realtime", pipes.PipelineOptions{ToNode: b.ID(), Realtime: true})
	if err != nil {
		return fail(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	pb, err := b.WaitPipeline(ctx, id)
	cancel()
	if err != nil {
		return fail(err)
	}
	pa, _ := a.Pipeline(id)
	if err := pa.SetupUDPPortMap("127.0.0.1", 0); err != nil {
		return fail(err)
	}
	if err := pb.SetupUDPPortMap("127.0.0.1", 0); err != nil {
		return fail(err)
	}
	// A packet of the benchmark's size must fit one datagram: Put says so
	// at once (this one is ignored by the receiver).
	probe := make([]byte, size)
	probe[16] = phaseIgnore
	if _, err := pa.Put(probe); err != nil {
		return fail(err)
	}
	sender, err := net.DialUDP("udp", nil, pa.UDPAddr())
	if err != nil {
		return fail(err)
	}
	recv, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		sender.Close()
		return fail(err)
	}
	recv.SetReadBuffer(4 << 20)
	// B's map delivers to the address that last sent to it.
	if _, err := recv.WriteToUDP([]byte("hello"), pb.UDPAddr()); err != nil {
		sender.Close()
		recv.Close()
		return fail(err)
	}
	rec := &rtRecorder{}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 64<<10)
		for {
			n, _, err := recv.ReadFromUDP(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			rec.deliver(buf[:n])
		}
	})
	mapA, recvPort := pa.UDPAddr().Port, udpPort(recv.LocalAddr())
	nodeA, nodeB := int(a.ListenAddrs()[0].Port()), int(b.ListenAddrs()[0].Port())
	path := &rtPath{
		send: func(buf []byte) error { _, err := sender.Write(buf); return err },
		rec:  rec,
		counters: func() []rtCounter {
			d := kernelDrops()
			sa, sb := a.Stats().Datagrams, b.Stats().Datagrams
			qa, qb := pa.Stats(), pb.Stats()
			return []rtCounter{
				{"kernel, A's port map socket", d[mapA]},
				{"A: Put dropped (mesh datagram queue full, or refused)", int64(qa.Dropped)},
				{"kernel, A's QUIC socket", d[nodeA]},
				{"kernel, B's QUIC socket", d[nodeB]},
				{"A's mesh sent − B's mesh received (kernel drops at B's QUIC socket included)", int64(sa.Sent) - int64(sb.Received)},
				{"B: rejected", int64(qb.Rejected)},
				{"B: port map queue full, or send failed", int64(qb.Dropped)},
				{"kernel, receiving application's socket", d[recvPort]},
			}
		},
		close: func() {
			sender.Close()
			recv.Close()
			wg.Wait()
			pn.close()
		},
	}
	if err := path.warmup(size); err != nil {
		path.close()
		return nil, fmt.Errorf("pipes realtime: %w", err)
	}
	return path, nil
}

func udpPort(a net.Addr) int {
	if u, ok := a.(*net.UDPAddr); ok {
		return u.Port
	}
	return 0
}

// kernelDrops reads the receive-buffer drops of every IPv4 UDP socket from
// /proc/net/udp, by local port (empty where unavailable).
func kernelDrops() map[int]int64 {
	out := map[int]int64{}
	f, err := os.Open("/proc/net/udp")
	if err != nil {
		return out
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	s.Scan() // header
	for s.Scan() {
		fs := strings.Fields(s.Text())
		if len(fs) < 13 {
			continue
		}
		_, hexPort, ok := strings.Cut(fs[1], ":")
		if !ok {
			continue
		}
		port, err1 := strconv.ParseUint(hexPort, 16, 16)
		drops, err2 := strconv.ParseInt(fs[len(fs)-1], 10, 64)
		if err1 == nil && err2 == nil {
			out[int(port)] += drops
		}
	}
	return out
}

// processCPU returns the user and system CPU time of this process so far,
// from /proc/self/stat (0 where unavailable). Linux counts it in ticks of
// 10 ms (USER_HZ 100).
func processCPU() time.Duration {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	i := strings.LastIndexByte(string(b), ')') // the command name may hold anything
	if i < 0 {
		return 0
	}
	fs := strings.Fields(string(b[i+1:]))
	if len(fs) < 13 {
		return 0
	}
	utime, err1 := strconv.ParseInt(fs[11], 10, 64)
	stime, err2 := strconv.ParseInt(fs[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond
}
