package pipes

import (
	"errors"
	"fmt"
	"io/fs"
	"syscall"
	"testing"

	"github.com/pipesnet/pipes/internal/blob"
	"github.com/pipesnet/pipes/internal/conns"
	"github.com/pipesnet/pipes/internal/files"
	"github.com/pipesnet/pipes/internal/history"
	"github.com/pipesnet/pipes/internal/mesh"
	"github.com/pipesnet/pipes/internal/pipeline"
	"github.com/pipesnet/pipes/internal/store"
)

// TestErrorMapping: each internal error callers branch on becomes the
// package's sentinel, and the cause stays in the chain (errors.Is finds
// both), with or without a detail, wrapped further inside or not.
func TestErrorMapping(t *testing.T) {
	cases := []struct {
		from, to error
	}{
		{pipeline.ErrClosed, ErrNotActive},
		{conns.ErrClosed, ErrNotActive},
		{pipeline.ErrFileIncomplete, ErrNotActive},
		{pipeline.ErrTooLarge, ErrTooLarge},
		{pipeline.ErrFileTooLarge, ErrTooLarge},
		{pipeline.ErrRemoved, ErrClosedPipeline},
		{pipeline.ErrUnknown, ErrClosedPipeline},
		{pipeline.ErrWrongSecret, ErrWrongSecret},
		{pipeline.ErrSecretRequired, ErrNoSecret},
		{pipeline.ErrNoSecret, ErrNoSecret},
		{pipeline.ErrCannotRead, ErrCannotRead},
		{pipeline.ErrNotImplemented, ErrNotImplemented},
		{pipeline.ErrConflict, ErrConflict},
		{pipeline.ErrNotEphemeral, ErrNotEphemeral},
		{pipeline.ErrNoKey, ErrNotConnected},
		{mesh.ErrNoRoute, ErrNotConnected},
		{conns.ErrNoRoute, ErrNotConnected},
		{conns.ErrNoService, ErrRefused},
		{conns.ErrNotAllowed, ErrRefused},
		{conns.ErrBusy, ErrRefused},
		{conns.ErrInUse, ErrExists},
		{history.ErrNotFound, ErrNotFound},
		{store.ErrDiskFull, ErrDiskFull},
		{store.ErrCorrupt, ErrStore},
		{store.ErrFailed, ErrStore},
		{history.ErrDamaged, ErrStore},
		{&mesh.DatagramTooLargeError{Max: 1200}, ErrTooLarge},
		{files.ErrNotFound, ErrNotFound},
		{fs.ErrNotExist, ErrNotFound},
		{files.ErrIsDir, ErrIsDir},
		{blob.ErrChanged, ErrChanged},
		{files.ErrBusy, ErrBusy},
		{files.ErrIncomplete, ErrIncomplete},
		{files.ErrNoSource, ErrNotConnected},
		{files.ErrClosed, ErrNotActive},
		{blob.ErrClosed, ErrNotActive},
		{files.ErrTooLarge, ErrTooLarge},
		{files.ErrNoSecret, ErrNoSecret},
		{files.ErrTooFewNodes, ErrTooFewNodes},
		{files.ErrInvalid, ErrInvalid},
		{syscall.ENOSPC, ErrDiskFull},
	}
	for _, c := range cases {
		for _, detail := range []string{"", `pipeline "chat"`} {
			cause := fmt.Errorf("inner layer: %w", c.from)
			got := mapErr(cause, detail)
			if !errors.Is(got, c.to) {
				t.Errorf("%v (detail %q): %v does not match %v", c.from, detail, got, c.to)
			}
			if !errors.Is(got, cause) || !errors.Is(got, c.from) {
				t.Errorf("%v (detail %q): %v lost its cause", c.from, detail, got)
			}
		}
	}

	// Every row of the map is in the table above.
	for _, m := range errorMap {
		for _, f := range m.from {
			found := false
			for _, c := range cases {
				found = found || c.from == f && c.to == m.to
			}
			if !found {
				t.Errorf("errorMap's %v -> %v is not tested", f, m.to)
			}
		}
	}

	var tl *DatagramTooLargeError
	if got := mapErr(&mesh.DatagramTooLargeError{Max: 1200}, ""); !errors.As(got, &tl) || tl.Max != 1200 {
		t.Errorf("datagram too large: got %v, want a *DatagramTooLargeError with Max 1200", got)
	}
	if !errors.Is(&DatagramTooLargeError{Max: 1}, ErrTooLarge) {
		t.Error("a DatagramTooLargeError made without a cause does not match ErrTooLarge")
	}

	// An error no sentinel covers keeps its chain and matches none.
	other := errors.New("something else")
	got := mapErr(other, "detail")
	if !errors.Is(got, other) {
		t.Errorf("unmapped error lost its cause: %v", got)
	}
	for _, m := range errorMap {
		if errors.Is(got, m.to) {
			t.Errorf("unmapped error %v matches %v", got, m.to)
		}
	}
	if mapErr(nil, "detail") != nil {
		t.Error("mapErr(nil) is not nil")
	}
}
