package worker

import (
	"context"
	"errors"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestItemsRunInOrder(t *testing.T) {
	got := make(chan int, 100)
	p := New(100, 1, func(i int) { got <- i })
	defer p.Close()
	for i := range 100 {
		if !p.TryPut(i) {
			t.Fatalf("item %d refused with room in the queue", i)
		}
	}
	for i := range 100 {
		if v := <-got; v != i {
			t.Fatalf("item %d ran as number %d", v, i)
		}
	}
}

func TestFullQueueRefusesAndPutWaits(t *testing.T) {
	entered, release := make(chan int), make(chan struct{})
	p := New(1, 1, func(i int) {
		entered <- i
		<-release
	})
	defer p.Close()
	p.TryPut(1)
	<-entered // the worker holds item 1
	if !p.TryPut(2) {
		t.Fatal("the one queue slot refused")
	}
	if p.TryPut(3) {
		t.Fatal("a full queue took an item")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Put(ctx, 3); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put on a full queue with an ended context: %v", err)
	}
	done := make(chan error)
	go func() { done <- p.Put(context.Background(), 4) }()
	release <- struct{}{} // item 1 ends; 2 runs
	if v := <-entered; v != 2 {
		t.Fatalf("ran %d, want 2", v)
	}
	if err := <-done; err != nil { // 4 took 2's place
		t.Fatal(err)
	}
	release <- struct{}{}
	if v := <-entered; v != 4 {
		t.Fatalf("ran %d, want 4", v)
	}
	close(release)
}

func TestCloseStopsTheWorkers(t *testing.T) {
	entered := make(chan struct{})
	ran := 0
	p := New(8, 3, func(int) {
		ran++
		entered <- struct{}{}
	})
	p.TryPut(1)
	<-entered
	p.Close()
	p.Close() // twice is fine
	goleak.VerifyNone(t)
	if p.TryPut(2) {
		t.Fatal("a closed pool took an item")
	}
	if err := p.Put(context.Background(), 2); !errors.Is(err, ErrClosed) {
		t.Fatalf("Put on a closed pool: %v", err)
	}
	if ran != 1 {
		t.Fatalf("%d items ran, want 1", ran)
	}
}
