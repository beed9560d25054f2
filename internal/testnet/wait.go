package testnet

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/pipesnet/pipes"
)

// Eventually polls cond until it holds or the limit passes. The limit is
// a safety net against hangs, not a performance assertion: it is far
// above what the condition needs.
func Eventually(t testing.TB, limit time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not true after %v: %v", what, limit, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// SeesOnline checks that m sees exactly the others online.
func SeesOnline(m *Member, others []*Member) error {
	got := map[pipes.NodeID]bool{}
	for _, r := range m.N.ConnectedNodes() {
		got[r.ID()] = true
	}
	want := 0
	for _, o := range others {
		if o == m {
			continue
		}
		if !got[o.N.ID()] {
			return fmt.Errorf("%s does not see %s", m.N.Location(), o.N.Location())
		}
		want++
	}
	if len(got) != want {
		return fmt.Errorf("%s sees %d nodes online, want %d", m.N.Location(), len(got), want)
	}
	return nil
}

// AllSeeAll is a condition for Eventually: every one of ms sees exactly
// the others online.
func AllSeeAll(ms []*Member) func() error {
	return func() error {
		for _, m := range ms {
			if err := SeesOnline(m, ms); err != nil {
				return err
			}
		}
		return nil
	}
}

// FreePort returns a UDP port of 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}
