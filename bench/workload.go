package main

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

func procs() int { return runtime.GOMAXPROCS(0) }

// workload is one cell of the broadcast matrix.
type workload struct {
	nodes      int
	sparse     bool
	publishers int
	size       int
	rate       int // messages per second over all publishers; 0 = as fast as possible
	messages   int // in all
}

func (w workload) String() string {
	topo := "full"
	if w.sparse {
		topo = "sparse"
	}
	rate := "max"
	if w.rate > 0 {
		rate = fmt.Sprintf("%d/s", w.rate)
	}
	return fmt.Sprintf("%d nodes %s, %d pub, %d B, %s", w.nodes, topo, w.publishers, w.size, rate)
}

// edges returns the links of the topology: every pair when full; a ring
// plus chords (degree about 4) when sparse.
func (w workload) edges() [][2]int {
	var out [][2]int
	seen := map[[2]int]bool{}
	add := func(a, b int) {
		if a == b {
			return
		}
		if a > b {
			a, b = b, a
		}
		if !seen[[2]int{a, b}] {
			seen[[2]int{a, b}] = true
			out = append(out, [2]int{a, b})
		}
	}
	n := w.nodes
	if !w.sparse {
		for i := range n {
			for j := i + 1; j < n; j++ {
				add(i, j)
			}
		}
		return out
	}
	rng := rand.New(rand.NewPCG(uint64(n), 7))
	for i := range n {
		add(i, (i+1)%n)
		add(i, rng.IntN(n))
	}
	return out
}

// message payloads start with the publish time (unix nanoseconds) and the
// publisher index, then filler up to the size.
func makePayload(size, publisher int, seq int) []byte {
	b := make([]byte, max(size, 16))
	binary.BigEndian.PutUint64(b, uint64(time.Now().UnixNano()))
	binary.BigEndian.PutUint32(b[8:], uint32(publisher))
	binary.BigEndian.PutUint32(b[12:], uint32(seq))
	return b
}

func payloadTime(b []byte) time.Time {
	if len(b) < 8 {
		return time.Time{}
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(b)))
}

// recorder collects deliveries at subscribers.
type recorder struct {
	mu        sync.Mutex
	latencies []time.Duration
	delivered int
	last      time.Time
	done      chan struct{}
	want      int
}

func newRecorder(want int) *recorder { return &recorder{done: make(chan struct{}), want: want} }

func (r *recorder) deliver(payload []byte) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.latencies = append(r.latencies, now.Sub(payloadTime(payload)))
	r.delivered++
	r.last = now
	if r.delivered == r.want {
		close(r.done)
	}
}

// result is what one system achieved on one workload.
type result struct {
	delivered   int
	want        int
	elapsed     time.Duration
	perSub      float64 // delivered messages per second per subscriber
	p50, p99    time.Duration
	bytesPerMsg float64 // payload bytes sent per delivered message
	sendsPerMsg float64 // payload transmissions per delivered message
	note        string
}

func (r *recorder) result(start time.Time, subscribers int, sentBytes, sends uint64) result {
	r.mu.Lock()
	defer r.mu.Unlock()
	res := result{delivered: r.delivered, want: r.want, elapsed: r.last.Sub(start)}
	if res.elapsed > 0 {
		res.perSub = float64(r.delivered) / float64(subscribers) / res.elapsed.Seconds()
	}
	if len(r.latencies) > 0 {
		l := slices.Clone(r.latencies)
		sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
		res.p50 = l[len(l)/2]
		res.p99 = l[len(l)*99/100]
	}
	if r.delivered > 0 {
		res.bytesPerMsg = float64(sentBytes) / float64(r.delivered)
		res.sendsPerMsg = float64(sends) / float64(r.delivered)
	}
	return res
}

// publishPlan calls publish(publisher, seq) for every message, either as
// fast as possible (each publisher in its own goroutine) or paced.
func publishPlan(w workload, publish func(pub, seq int) error) error {
	per := w.messages / w.publishers
	var wg sync.WaitGroup
	errs := make(chan error, w.publishers)
	for p := range w.publishers {
		wg.Go(func() {
			var tick *time.Ticker
			if w.rate > 0 {
				tick = time.NewTicker(time.Duration(float64(time.Second) * float64(w.publishers) / float64(w.rate)))
				defer tick.Stop()
			}
			for s := range per {
				if tick != nil {
					<-tick.C
				}
				if err := publish(p, s); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func fmtRate(f float64) string { return fmt.Sprintf("%.0f", f) }

func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.1fms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.0fµs", float64(d)/1e3)
}

func header(cols ...string) {
	fmt.Println("| " + strings.Join(cols, " | ") + " |")
	seps := make([]string, len(cols))
	for i := range seps {
		seps[i] = "---"
	}
	fmt.Println("|" + strings.Join(seps, "|") + "|")
}
