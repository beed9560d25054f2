// Package node assembles, starts and stops a Pipes node. This file holds
// the test hooks: what tests change in how a node runs, kept out of the
// public types and set by node id.
package node

import (
	"net"
	"sync"

	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/portmap"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

// TestHooks change how a node runs, for tests only. The zero value is how
// a node runs in production. A node reads its hooks when it starts.
type TestHooks struct {
	// ForwardTap sees every routed message the node relays for others.
	ForwardTap func(r *pb.Routed)
	// NoPunch keeps relayed data connections from leading to a punched
	// direct connection.
	NoPunch bool
	// ListenUDP opens the extra sockets of a hard-NAT punch (tests open
	// them in the network namespace of the node's socket).
	ListenUDP func(*net.UDPAddr) (*net.UDPConn, error)
	// PortMap changes the port mapping's configuration (the gateway).
	PortMap func(*portmap.Config)
}

var hooks struct {
	sync.Mutex
	m map[ids.Node]TestHooks
}

// SetTestHooks changes, with f, the hooks of the node with id (from its
// next start on).
func SetTestHooks(id ids.Node, f func(*TestHooks)) {
	hooks.Lock()
	defer hooks.Unlock()
	if hooks.m == nil {
		hooks.m = map[ids.Node]TestHooks{}
	}
	h := hooks.m[id]
	f(&h)
	hooks.m[id] = h
}

// Hooks returns the hooks of the node with id (the zero value unless a
// test set some).
func Hooks(id ids.Node) TestHooks {
	hooks.Lock()
	defer hooks.Unlock()
	return hooks.m[id]
}
