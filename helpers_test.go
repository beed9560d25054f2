package pipes_test

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pipesnet/pipes"
	"github.com/pipesnet/pipes/internal/testnet"
)

// The helpers shared with integrationtests (members, netfiles, waiting
// for presence and logs) are in internal/testnet; these are the root
// package's own.

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func loopback(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// cluster starts a gateway and n-1 nodes that know only the gateway, and
// waits until every node sees every other. gwOpts apply to the gateway,
// opts to every node.
func cluster(t testing.TB, name string, n int, gwOpts []pipes.NodeOption, opts ...pipes.NodeOption) []*testnet.Member {
	t.Helper()
	netPath := testnet.Netfile(t, name)
	gw := testnet.NewMember(t, netPath, name+"-gw", append(gwOpts, opts...)...)
	gw.Start(t)
	ms := []*testnet.Member{gw}
	for i := 1; i < n; i++ {
		m := testnet.NewMember(t, netPath, fmt.Sprintf("%s%d", name, i), opts...)
		m.Gateway(t, gw)
		m.Start(t)
		ms = append(ms, m)
	}
	testnet.Eventually(t, 60*time.Second, "every node sees every other", testnet.AllSeeAll(ms))
	return ms
}

// relayLine starts alice and bob that know only a relay (target degree 1,
// so they stay apart), waits until all see all, and returns them with a
// function that lists the payloads the relay forwarded for others.
func relayLine(t testing.TB, name string) (a, r, b *testnet.Member, relayed func() [][]byte) {
	t.Helper()
	return relayLineWith(t, name, false)
}

// relayLineWith is relayLine; noPunch keeps alice and bob from punching a
// direct connection after a relayed data connection (so that their data
// connections stay relayed).
func relayLineWith(t testing.TB, name string, noPunch bool) (a, r, b *testnet.Member, relayed func() [][]byte) {
	t.Helper()
	netPath := testnet.Netfile(t, name)
	one := pipes.WithTargetDegree(1)
	r = testnet.NewMember(t, netPath, "relay", one)
	var mu sync.Mutex
	var seen [][]byte
	pipes.SetForwardTap(r.N, func(dst, src [32]byte, payload []byte) {
		mu.Lock()
		seen = append(seen, payload)
		mu.Unlock()
	})
	r.Start(t)
	a = testnet.NewMember(t, netPath, "alice", one)
	b = testnet.NewMember(t, netPath, "bob", one)
	a.Gateway(t, r)
	b.Gateway(t, r)
	if noPunch {
		pipes.DisablePunching(a.N)
		pipes.DisablePunching(b.N)
	}
	a.Start(t)
	b.Start(t)
	testnet.Eventually(t, 30*time.Second, "all see all", testnet.AllSeeAll([]*testnet.Member{a, r, b}))
	return a, r, b, func() [][]byte {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seen)
	}
}
