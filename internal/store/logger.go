package store

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/cockroachdb/pebble/v2"
)

// pebbleLogger forwards Pebble's log to slog: Infof at Debug, Errorf at
// Error.
//
// Fatalf must not return: that is Pebble's contract (its own logger calls
// os.Exit), and Pebble calls it only when it cannot go on safely, with its
// in-memory state possibly inconsistent with the disk. The adapter logs the
// message at Error and then panics with it, so the process stops with a
// message and a stack trace instead of exiting silently, and a caller that
// recovers at least knows why. On-disk corruption found while reading is
// not fatal here: see eventListener.
type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	p.logf(slog.LevelDebug, format, args...)
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	p.logf(slog.LevelError, format, args...)
}

func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.l.Error("pebble: fatal: " + msg)
	panic("store: pebble fatal error: " + msg)
}

func (p pebbleLogger) logf(level slog.Level, format string, args ...any) {
	ctx := context.Background()
	if p.l.Enabled(ctx, level) {
		p.l.Log(ctx, level, "pebble: "+fmt.Sprintf(format, args...))
	}
}

// eventListener logs on-disk corruption at Error. Pebble's default calls
// Fatalf, which would bring the whole process down for one damaged table;
// with this listener the read that met the damage fails instead (with an
// error wrapping ErrCorrupt). Pebble fills in its defaults for the other
// events: background errors are logged through pebbleLogger.Errorf.
func eventListener(l *slog.Logger) *pebble.EventListener {
	return &pebble.EventListener{
		DataCorruption: func(info pebble.DataCorruptionInfo) {
			l.Error("store: on-disk corruption", "path", info.Path, "err", info.Details)
		},
	}
}
