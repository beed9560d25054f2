package store

import (
	"log/slog"
	"strings"
	"testing"
)

func TestPebbleLogger(t *testing.T) {
	var buf syncBuffer
	l := pebbleLogger{slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))}
	l.Infof("info %d", 1)
	l.Errorf("error %d", 2)
	if got := buf.String(); strings.Contains(got, "info 1") || !strings.Contains(got, "level=ERROR msg=\"pebble: error 2\"") {
		t.Fatalf("log:\n%s", got)
	}
	func() {
		defer func() {
			if r := recover(); r == nil || !strings.Contains(r.(string), "fatal 3") {
				t.Fatalf("Fatalf returned or panicked with %v", r)
			}
		}()
		l.Fatalf("fatal %d", 3)
	}()
	if !strings.Contains(buf.String(), "fatal 3") {
		t.Fatalf("Fatalf not logged:\n%s", buf.String())
	}
}

// TestLoggerAtDebug checks that Pebble's informational lines reach a
// Debug logger through Open.
func TestLoggerAtDebug(t *testing.T) {
	var buf syncBuffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	db, err := Open(t.TempDir(), Options{Logger: log, CacheSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	mustSet(t, db, []byte("k"), []byte("v"))
	db.Close()
	if !strings.Contains(buf.String(), "level=DEBUG msg=\"pebble: ") {
		t.Fatalf("no pebble lines at Debug:\n%s", buf.String())
	}
}
