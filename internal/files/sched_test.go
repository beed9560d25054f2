package files

import (
	"slices"
	"testing"
)

func chunkSize(int) int64 { return 10 }

// Workers take from one queue in index order, as much as their window
// has room for: a worker that asks more often gets more.
func TestSchedTakesFromOneQueue(t *testing.T) {
	s := newSched([]int{5, 1, 3, 2, 4, 0}, 60, chunkSize)
	if got := s.take(0, 2); !slices.Equal(got, []int{0, 1}) {
		t.Fatalf("worker 0 took %v", got)
	}
	if got := s.take(1, 1); !slices.Equal(got, []int{2}) {
		t.Fatalf("worker 1 took %v", got)
	}
	// Worker 0, faster, stores and takes again.
	s.stored(0, 0)
	s.stored(0, 1)
	if got := s.take(0, 3); !slices.Equal(got, []int{3, 4, 5}) {
		t.Fatalf("worker 0 took %v", got)
	}
	if done, total, left := s.progress(); done != 20 || total != 60 || left != 4 {
		t.Fatalf("progress %d/%d, %d left", done, total, left)
	}
}

// Chunks present before the fetch count as done.
func TestSchedCountsPresent(t *testing.T) {
	s := newSched([]int{2}, 30, chunkSize)
	if done, _, left := s.progress(); done != 20 || left != 1 {
		t.Fatalf("progress %d, %d left", done, left)
	}
}

// A chunk given back returns to the queue, in order; one a holder lacks
// is not given to that holder again.
func TestSchedRelease(t *testing.T) {
	s := newSched([]int{0, 1, 2}, 30, chunkSize)
	s.take(0, 3)
	s.release(0, 1, true)
	s.release(0, 0, false)
	if got := s.take(0, 3); !slices.Equal(got, []int{0}) {
		t.Fatalf("worker 0 took %v, want [0] (it lacks 1)", got)
	}
	if got := s.take(1, 3); !slices.Equal(got, []int{1}) {
		t.Fatalf("worker 1 took %v, want [1]", got)
	}
}

// End game: with the queue empty, an idle worker takes a chunk
// outstanding at one other worker; the first store wins, the second does
// not count.
func TestSchedEndGame(t *testing.T) {
	s := newSched([]int{0, 1}, 20, chunkSize)
	s.take(0, 2)
	if got := s.take(1, 5); !slices.Equal(got, []int{0, 1}) {
		t.Fatalf("idle worker 1 took %v, want the outstanding [0 1]", got)
	}
	if got := s.take(2, 5); len(got) != 0 {
		t.Fatalf("worker 2 took %v: a chunk is asked of two workers at most", got)
	}
	if !s.stored(1, 0) || s.stored(0, 0) {
		t.Fatal("the first store of chunk 0 must count, the second not")
	}
	if _, _, left := s.progress(); left != 1 {
		t.Fatalf("%d left, want 1", left)
	}
	// A worker that lacks a chunk is not given it in the end game either.
	s.release(1, 1, true)
	if got := s.take(1, 5); len(got) != 0 {
		t.Fatalf("worker 1 took %v, which it lacks", got)
	}
}

// Every change wakes the waiters.
func TestSchedWakes(t *testing.T) {
	s := newSched([]int{0}, 10, chunkSize)
	ch := s.wait()
	s.take(0, 1)
	s.stored(0, 0)
	select {
	case <-ch:
	default:
		t.Fatal("a store did not wake the waiters")
	}
}

func TestWindowFor(t *testing.T) {
	const chunk = 256 << 10
	if w := windowFor(0, chunk); w != minWindow {
		t.Errorf("no rate yet: window %d", w)
	}
	slow, fast := windowFor(1<<20, chunk), windowFor(100<<20, chunk)
	if slow >= fast || fast != maxWindow || slow < minWindow {
		t.Errorf("windows %d (1 MiB/s), %d (100 MiB/s)", slow, fast)
	}
}
