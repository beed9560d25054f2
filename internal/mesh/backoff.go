package mesh

import (
	"math/rand/v2"
	"time"
)

// backoff is the redial schedule of one target: exponential from min to max
// with ±20% jitter, so that many nodes that lost the same peer do not redial
// in lock step. It is owned by the mesh loop.
type backoff struct {
	min, max time.Duration
	fails    int
	next     time.Time // no attempt before this
}

// failed records a failed attempt at now and schedules the next one.
func (b *backoff) failed(now time.Time) {
	d := b.min << min(b.fails, 20)
	if d > b.max || d <= 0 {
		d = b.max
	}
	b.fails++
	jitter := time.Duration((rand.Float64()*0.4 - 0.2) * float64(d))
	b.next = now.Add(d + jitter)
}

// succeeded resets the schedule.
func (b *backoff) succeeded() {
	b.fails = 0
	b.next = time.Time{}
}

// ready reports whether an attempt may start at now.
func (b *backoff) ready(now time.Time) bool { return !now.Before(b.next) }
