package pipes

import (
	"log/slog"
	"time"
)

// Option configures Open.
type Option func(*platformOptions)

type platformOptions struct {
	logger   *slog.Logger
	logTag   string
	testMode bool
	reserve  int64
}

// WithDiskReserve sets the free disk space the store keeps in reserve:
// a write that would leave less fails with ErrDiskFull, before the disk
// is actually full (the database cannot survive running out of space in
// the middle of a write). The default is 64 MiB; a negative value turns
// the check off.
func WithDiskReserve(bytes int64) Option { return func(o *platformOptions) { o.reserve = bytes } }

// WithLogger sets the logger of the platform and its nodes. Without it the
// platform logs warnings and errors to standard error, or everything from
// debug up when PIPES_DEBUG is set.
func WithLogger(l *slog.Logger) Option { return func(o *platformOptions) { o.logger = l } }

// WithLogTag adds the attribute tag=<tag> to every log record of the
// platform, to tell several platforms in one process apart (the spec's
// logTag).
func WithLogTag(tag string) Option { return func(o *platformOptions) { o.logTag = tag } }

// WithTestMode is the spec's tester flag. It changes only timings and the
// defaults of the listen address and of port mapping, never security:
//   - nodes listen on 127.0.0.1 with a free port unless an address is given
//     (PIPES_PORT_START, PIPES_PORT_RANGE and PIPES_LISTEN are ignored);
//   - heartbeat 250ms, offline after 2s, redial backoff from 100ms to 2s,
//     QUIC idle timeout 3s (keep-alive 1s), so departures and restarts are
//     seen within seconds;
//   - nodes do not map a port at the router unless WithPortMapping(true)
//     is given.
func WithTestMode(on bool) Option { return func(o *platformOptions) { o.testMode = on } }

// NodeOption configures AddNode. Options are stored with the node and apply
// every time it starts.
type NodeOption func(*nodeConfig)

// nodeConfig is persisted with the node (JSON in the store).
type nodeConfig struct {
	ListenAddr   string        `json:"listen_addr,omitempty"`
	TargetDegree int           `json:"target_degree,omitempty"`
	Heartbeat    time.Duration `json:"heartbeat,omitempty"`
	OfflineAfter time.Duration `json:"offline_after,omitempty"`
	PortMapping  *bool         `json:"port_mapping,omitempty"` // nil: the default (see WithPortMapping)
	RelayRate    int           `json:"relay_rate,omitempty"`
}

// WithRelayRate bounds how many bytes a second of pipeline messages and
// datagrams one peer may have the node relay for others (default 32 MiB/s
// per peer); the rest are dropped, so one member cannot take all of a
// relay's bandwidth. Relayed data connections are bounded by count (256
// per peer, 1024 in all).
func WithRelayRate(bytesPerSecond int) NodeOption {
	return func(c *nodeConfig) { c.RelayRate = bytesPerSecond }
}

// WithListenAddr sets the UDP address the node listens on. "127.0.0.1:0"
// means any free port on loopback. Without it the address comes from
// PIPES_LISTEN, else the first free port of PIPES_PORT_START ..
// PIPES_PORT_START+PIPES_PORT_RANGE on all interfaces (see the README).
func WithListenAddr(hostport string) NodeOption {
	return func(c *nodeConfig) { c.ListenAddr = hostport }
}

// WithTargetDegree sets how many direct peers the node aims for (default 6).
func WithTargetDegree(n int) NodeOption { return func(c *nodeConfig) { c.TargetDegree = n } }

// WithPresenceTiming sets how often the node re-announces its status
// (default 5s) and after how much silence other nodes are reported offline
// (default 20s; at least twice the heartbeat). A node that shuts down
// cleanly is reported offline at once. The QUIC idle timeout follows the
// offline time (between 3s and 15s), so a dead direct peer is noticed as
// quickly as a silent remote one.
func WithPresenceTiming(heartbeat, offlineAfter time.Duration) NodeOption {
	return func(c *nodeConfig) { c.Heartbeat, c.OfflineAfter = heartbeat, offlineAfter }
}

// WithPortMapping turns port mapping on or off. With it on, a running node
// asks its router to forward a public port to its UDP socket, by NAT-PMP,
// PCP or UPnP-IGD (whichever the router grants first), renews the mapping
// before it expires, and deletes it when the node shuts down. The mapped
// address is advertised to peers as one more address to dial (so nodes
// behind a router that grants mappings are reachable without hole
// punching) and is reported by PublicAddrs and PortMapping.
//
// The router is the gateway of the default route (read from
// /proc/net/route on Linux), or a UPnP gateway device found by SSDP.
// Without this option port mapping is on, except for a node that listens
// on a loopback address or on a specific IPv6 address, and for nodes of a
// platform in test mode: those do not send discovery traffic to the LAN.
// Opening the mapping never delays Start; a router that does not answer
// or refuses is asked again every few minutes.
func WithPortMapping(on bool) NodeOption {
	return func(c *nodeConfig) { c.PortMapping = &on }
}
