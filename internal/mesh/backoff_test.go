package mesh

import (
	"testing"
	"testing/synctest"
	"time"
)

func TestBackoffGrowsWithJitterAndCaps(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := backoff{min: 100 * time.Millisecond, max: 2 * time.Second}
		if !b.ready(time.Now()) {
			t.Fatal("fresh backoff not ready")
		}
		var prev time.Duration
		for i := range 10 {
			start := time.Now()
			b.failed(start)
			wait := b.next.Sub(start)
			base := b.min << i
			if base > b.max {
				base = b.max
			}
			lo, hi := base*8/10, base*12/10
			if wait < lo || wait > hi {
				t.Fatalf("attempt %d: wait %v outside [%v, %v]", i, wait, lo, hi)
			}
			if b.ready(time.Now()) {
				t.Fatalf("attempt %d: ready before the wait", i)
			}
			time.Sleep(wait)
			if !b.ready(time.Now()) {
				t.Fatalf("attempt %d: not ready after the wait", i)
			}
			prev = wait
		}
		if prev > b.max*12/10 {
			t.Fatalf("wait %v exceeds the cap", prev)
		}
		b.succeeded()
		if !b.ready(time.Now()) {
			t.Fatal("not ready after success")
		}
	})
}
