package pipes

import (
	"errors"

	"github.com/pipesnet/pipes/internal/conns"
)

// Sentinel errors. Errors returned by this package wrap these where the
// condition applies, so callers can test with errors.Is.
var (
	// ErrLocked: another Platform, in this process or another, has the
	// data directory open.
	ErrLocked = errors.New("pipes: data directory is in use by another platform")
	// ErrClosed: the Platform was closed.
	ErrClosed = errors.New("pipes: platform is closed")
	// ErrNotFound: no such network, identity, node, pipeline or packet.
	ErrNotFound = errors.New("pipes: not found")
	// ErrAmbiguous: a node id prefix matches more than one node.
	ErrAmbiguous = errors.New("pipes: ambiguous id prefix")
	// ErrExists: the thing to create exists already.
	ErrExists = errors.New("pipes: already exists")
	// ErrInvalidID: an id string is not valid hex of the right length.
	ErrInvalidID = errors.New("pipes: invalid id")
	// ErrNoSecret: the network secret (or pipeline secret) is not set.
	ErrNoSecret = errors.New("pipes: secret not set")
	// ErrWrongSecret: a secret does not match the network.
	ErrWrongSecret = errors.New("pipes: wrong secret")
	// ErrNoIdentity: the platform has no identity yet.
	ErrNoIdentity = errors.New("pipes: no identity")
	// ErrActive: the node is already started.
	ErrActive = errors.New("pipes: node is active")
	// ErrNotActive: the node is not started (reading what it stored
	// needs no Start; see Node.Pipelines).
	ErrNotActive = errors.New("pipes: node is not active")
	// ErrNotConnected: the node has no path to the other node.
	ErrNotConnected = errors.New("pipes: not connected")
	// ErrNotBootstrap: a bootstrap call on a node of an ordinary network.
	ErrNotBootstrap = errors.New("pipes: not a bootstrap network")
	// ErrBadNetfile: a netfile is malformed, altered, truncated or of an
	// unsupported format.
	ErrBadNetfile = errors.New("pipes: bad netfile")
	// ErrConflict: a pipeline of that name exists with other options.
	ErrConflict = errors.New("pipes: a pipeline of that name exists with other options")
	// ErrTooLarge: a packet is larger than MaxPacketSize.
	ErrTooLarge = errors.New("pipes: packet too large")
	// ErrNotImplemented: the call belongs to a capability this build does
	// not have. Every kind of pipeline, files and data connections are
	// implemented; the error is kept so that callers that branch on it
	// keep compiling.
	ErrNotImplemented = errors.New("pipes: not implemented in this version")
	// ErrNotPersistent: a history operation (PacketWithID, PacketsSince,
	// SubscribeSince) on a live pipeline, which keeps no history.
	ErrNotPersistent = errors.New("pipes: not a persistent pipeline")
	// ErrDiskFull: the store refused a write because the disk is nearly
	// full. Nothing of the refused write is stored, nothing acknowledged
	// before is lost; writes succeed again once space is freed.
	ErrDiskFull = errors.New("pipes: disk full")
	// ErrStore: the store failed a read or write (the wrapped error says
	// why: damage on disk, an I/O error).
	ErrStore = errors.New("pipes: store error")
	// ErrNotEphemeral: Shutdown of a pipeline that is not ephemeral.
	ErrNotEphemeral = errors.New("pipes: not an ephemeral pipeline")
	// ErrClosedPipeline: the pipeline was shut down.
	ErrClosedPipeline = errors.New("pipes: pipeline was shut down")
	// ErrConnectionLost is matched by the errors of a data connection
	// whose path failed (the other node or a relay went away): dial again.
	ErrConnectionLost = conns.ErrLost
	// ErrRefused: a data connection was refused: nothing listens on the
	// service, or the listener does not allow this node.
	ErrRefused = errors.New("pipes: connection refused")
	// ErrNotRealtime: a UDP port map on a pipeline that is not realtime
	// and point-to-point.
	ErrNotRealtime = errors.New("pipes: not a realtime point-to-point pipeline")
	// ErrCannotRead: a packet of an encrypted pipeline does not decrypt
	// with the pipeline secret.
	ErrCannotRead = errors.New("pipes: packet does not decrypt")
)
