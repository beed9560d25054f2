// Package backoff is the one retry schedule of a node: exponential from a
// minimum to a maximum with ±20% jitter, so that many nodes that lost the
// same peer, or failed the same punch, do not retry in lock step. Redials
// of the mesh and punches of data connections use it.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Backoff is the schedule of one target. The zero value with Min and Max
// set is ready at once. It is not safe for concurrent use: its owner (a
// loop, or a lock) serialises calls.
type Backoff struct {
	Min, Max time.Duration
	fails    int
	next     time.Time // no attempt before this
}

// Failed records a failed attempt at now, schedules the next one and
// returns the wait until it.
func (b *Backoff) Failed(now time.Time) time.Duration {
	d := b.Min << min(b.fails, 20)
	if d > b.Max || d <= 0 {
		d = b.Max
	}
	b.fails++
	d += time.Duration((rand.Float64()*0.4 - 0.2) * float64(d))
	b.next = now.Add(d)
	return d
}

// Succeeded resets the schedule.
func (b *Backoff) Succeeded() {
	b.fails = 0
	b.next = time.Time{}
}

// Ready reports whether an attempt may start at now.
func (b *Backoff) Ready(now time.Time) bool { return !now.Before(b.next) }

// Next is the earliest time of the next attempt (zero when ready).
func (b *Backoff) Next() time.Time { return b.next }

// Delay holds off the next attempt until at least t (an attempt in
// progress, for one at a time).
func (b *Backoff) Delay(t time.Time) {
	if t.After(b.next) {
		b.next = t
	}
}
