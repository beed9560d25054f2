package backoff

import (
	"testing"
	"testing/synctest"
	"time"
)

func TestBackoffGrowsWithJitterAndCaps(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := Backoff{Min: 100 * time.Millisecond, Max: 2 * time.Second}
		if !b.Ready(time.Now()) {
			t.Fatal("fresh backoff not ready")
		}
		var prev time.Duration
		for i := range 10 {
			start := time.Now()
			got := b.Failed(start)
			wait := b.Next().Sub(start)
			if got != wait {
				t.Fatalf("attempt %d: Failed says %v, Next is %v away", i, got, wait)
			}
			base := b.Min << i
			if base > b.Max {
				base = b.Max
			}
			lo, hi := base*8/10, base*12/10
			if wait < lo || wait > hi {
				t.Fatalf("attempt %d: wait %v outside [%v, %v]", i, wait, lo, hi)
			}
			if b.Ready(time.Now()) {
				t.Fatalf("attempt %d: ready before the wait", i)
			}
			time.Sleep(wait)
			if !b.Ready(time.Now()) {
				t.Fatalf("attempt %d: not ready after the wait", i)
			}
			prev = wait
		}
		if prev > b.Max*12/10 {
			t.Fatalf("wait %v exceeds the cap", prev)
		}
		b.Succeeded()
		if !b.Ready(time.Now()) {
			t.Fatal("not ready after success")
		}
	})
}
