package pipeline

import (
	"testing"

	"github.com/pipesnet/pipes/internal/kinds"
	"github.com/pipesnet/pipes/internal/testutil"
)

// TestPacketsFollowTheirDefinition: the mesh loop hands a received
// definition to the definitions goroutine and goes on at once; a batch of
// that (persistent) pipeline delivered right after it must still be
// logged, as if the definition had been added before it.
func TestPacketsFollowTheirDefinition(t *testing.T) {
	fn, nodes := persistentNet(t, 2, nil)
	a, c := nodes[0], nodes[1]
	fn.mu.Lock()
	delete(fn.engines, c.id) // c hears nothing: the test hands it the messages
	fn.mu.Unlock()

	d, err := a.e.Create(t.Context(), "p", Options{Persistent: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.e.Put(t.Context(), d.ID, []byte("first"), 0, [32]byte{}); err != nil {
		t.Fatal(err)
	}
	var batch []byte
	testutil.WaitFor(t, "a's batch", func() bool {
		fn.mu.Lock()
		defer fn.mu.Unlock()
		if len(fn.bcasts) > 0 {
			batch = fn.bcasts[0]
		}
		return batch != nil
	})
	def, err := marshal(d.toProto())
	if err != nil {
		t.Fatal(err)
	}

	vd, err := c.e.Validate(kinds.Def, def, a.id)
	if err != nil {
		t.Fatal(err)
	}
	vb, err := c.e.Validate(kinds.Batch, batch, a.id)
	if err != nil {
		t.Fatal(err)
	}
	c.e.Deliver(kinds.Def, def, a.id, vd)
	c.e.Deliver(kinds.Batch, batch, a.id, vb)

	testutil.WaitFor(t, "the packet logged on c", func() bool {
		l, err := c.e.Log(d.ID)
		return err == nil && l.Head(a.id) == 1
	})
	if got := c.e.Stats().Rejected; got != 0 {
		t.Fatalf("%d rejected", got)
	}
}
