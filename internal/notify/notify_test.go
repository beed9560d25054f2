package notify

import "testing"

func TestOrderBoundAndClose(t *testing.T) {
	release := make(chan struct{})
	var got []int
	q := New(4, func(v int) {
		<-release
		got = append(got, v)
	})
	accepted := 0
	for i := range 10 {
		if q.Push(i) {
			accepted++
		}
	}
	close(release)
	q.Close()
	if q.Dropped() == 0 || uint64(accepted)+q.Dropped() != 10 {
		t.Fatalf("accepted %d, dropped %d", accepted, q.Dropped())
	}
	if len(got) != accepted {
		t.Fatalf("delivered %d of %d accepted", len(got), accepted)
	}
	for i := 1; i < len(got); i++ {
		if got[i] <= got[i-1] {
			t.Fatalf("out of order: %v", got)
		}
	}
	if q.Push(99) {
		t.Fatal("push after close accepted")
	}
}
