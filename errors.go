package pipes

import (
	"errors"
	"fmt"
	"io/fs"
	"syscall"

	"github.com/pipesnet/pipes/internal/blob"
	"github.com/pipesnet/pipes/internal/conns"
	"github.com/pipesnet/pipes/internal/files"
	"github.com/pipesnet/pipes/internal/history"
	"github.com/pipesnet/pipes/internal/mesh"
	"github.com/pipesnet/pipes/internal/pipeline"
	"github.com/pipesnet/pipes/internal/store"
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
	// not have. No call of this version returns it: every kind of
	// pipeline (live, persistent, encrypted, ephemeral, realtime), file
	// packets and data connections are implemented. It is kept so that
	// callers that branch on it keep compiling.
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
	// ErrIsDir: Files.Add of a directory.
	ErrIsDir = errors.New("pipes: is a directory")
	// ErrChanged: a file changed (its size) while it was added; nothing
	// of it was stored.
	ErrChanged = errors.New("pipes: the file changed while it was added")
	// ErrBusy: the file is being fetched on this node.
	ErrBusy = errors.New("pipes: a fetch of the file is in progress")
	// ErrIncomplete: a read of a part of a file that is not on this node,
	// with no fetch of it running.
	ErrIncomplete = errors.New("pipes: that part of the file is not here")
	// ErrInvalid: an argument out of its range (a number of copies below
	// one, more shards than a code allows, ...).
	ErrInvalid = errors.New("pipes: invalid argument")
	// ErrTooFewNodes: the network has fewer nodes than a placement needs
	// (copies of a file, shards of an archive on distinct nodes).
	ErrTooFewNodes = errors.New("pipes: too few nodes")
)

// DatagramTooLargeError is returned by Put on a realtime pipeline for a
// packet larger than one datagram on the path to a receiver. Max is the
// largest data that fits now (QUIC probes the path, so it may grow). It
// matches ErrTooLarge with errors.Is.
type DatagramTooLargeError struct {
	Max int
	err error // the cause, when the error comes from the network layer
}

func (e *DatagramTooLargeError) Error() string {
	return fmt.Sprintf("pipes: realtime packet larger than a datagram on the path (at most %d bytes now)", e.Max)
}

// Unwrap makes errors.Is(err, ErrTooLarge) true, and keeps the cause in
// the chain.
func (e *DatagramTooLargeError) Unwrap() []error {
	if e.err == nil {
		return []error{ErrTooLarge}
	}
	return []error{ErrTooLarge, e.err}
}

// errorMap is the one translation of the internal layers' errors into the
// package's sentinels, first match wins. mapErr applies it.
var errorMap = []struct {
	to   error
	from []error
}{
	{ErrNotActive, []error{pipeline.ErrClosed, conns.ErrClosed, pipeline.ErrFileIncomplete, files.ErrClosed, blob.ErrClosed}},
	{ErrTooLarge, []error{pipeline.ErrTooLarge, pipeline.ErrFileTooLarge, files.ErrTooLarge}},
	{ErrClosedPipeline, []error{pipeline.ErrRemoved, pipeline.ErrUnknown}},
	{ErrWrongSecret, []error{pipeline.ErrWrongSecret}},
	{ErrNoSecret, []error{pipeline.ErrSecretRequired, pipeline.ErrNoSecret}},
	{ErrCannotRead, []error{pipeline.ErrCannotRead}},
	{ErrNotImplemented, []error{pipeline.ErrNotImplemented}},
	{ErrConflict, []error{pipeline.ErrConflict}},
	{ErrNotEphemeral, []error{pipeline.ErrNotEphemeral}},
	{ErrNotConnected, []error{pipeline.ErrNoKey, mesh.ErrNoRoute, conns.ErrNoRoute, files.ErrNoSource}},
	{ErrRefused, []error{conns.ErrNoService, conns.ErrNotAllowed, conns.ErrBusy}},
	{ErrExists, []error{conns.ErrInUse}},
	{ErrNotFound, []error{history.ErrNotFound, files.ErrNotFound, fs.ErrNotExist}},
	{ErrIsDir, []error{files.ErrIsDir}},
	{ErrChanged, []error{blob.ErrChanged}},
	{ErrBusy, []error{files.ErrBusy}},
	{ErrIncomplete, []error{files.ErrIncomplete}},
	{ErrInvalid, []error{files.ErrInvalid}},
	{ErrTooFewNodes, []error{files.ErrTooFewNodes}},
	{ErrNoSecret, []error{files.ErrNoSecret}},
	{ErrDiskFull, []error{store.ErrDiskFull, syscall.ENOSPC}},
	{ErrStore, []error{store.ErrCorrupt, store.ErrFailed, history.ErrDamaged}},
}

// sentinelOf returns the package's sentinel for an error of the internal
// layers, or nil if none applies.
func sentinelOf(err error) error {
	for _, m := range errorMap {
		for _, f := range m.from {
			if errors.Is(err, f) {
				return m.to
			}
		}
	}
	return nil
}

// mapErr translates an error of the internal layers into the package's:
// the result matches the sentinel that applies (see errorMap) with
// errors.Is, and keeps err in its chain. detail, if not empty, says what
// the call was about (a pipeline's name, a node, a service). A datagram
// too large for the path becomes a *DatagramTooLargeError; an error no
// sentinel covers is only prefixed. nil stays nil.
func mapErr(err error, detail string) error {
	if err == nil {
		return nil
	}
	var tl *mesh.DatagramTooLargeError
	if errors.As(err, &tl) {
		return &DatagramTooLargeError{Max: tl.Max, err: err}
	}
	to := sentinelOf(err)
	switch {
	case to != nil && detail != "":
		return fmt.Errorf("%w: %s: %w", to, detail, err)
	case to != nil:
		return fmt.Errorf("%w: %w", to, err)
	case detail != "":
		return fmt.Errorf("pipes: %s: %w", detail, err)
	}
	return fmt.Errorf("pipes: %w", err)
}
