package main

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/pipesnet/pipes"
)

// TestFetchEventsRoundTrip: the events a fetch streams decode to the same
// events, in order, one JSON object a line, and the stream ends at the
// final one.
func TestFetchEventsRoundTrip(t *testing.T) {
	res := &fetchResult{ID: strings.Repeat("ab", 32), Name: "photos.tar", Size: 10, Path: "/tmp/photos.tar", Holders: 2}
	sent := []fetchEvent{{Done: 0, Total: 10}, {Done: 4, Total: 10}, {Done: 10, Total: 10}, {Done: 10, Total: 10, Result: res}}
	var buf bytes.Buffer
	for _, ev := range sent {
		if err := encodeEvent(&buf, ev); err != nil {
			t.Fatal(err)
		}
	}
	if lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n"); len(lines) != len(sent) {
		t.Fatalf("%d events in %d lines: %q", len(sent), len(lines), buf.String())
	}
	if !strings.Contains(buf.String(), `{"done":4,"total":10}`) {
		t.Fatalf("a progress event is not {done, total}: %q", buf.String())
	}
	buf.WriteString(`{"done":99,"total":99}` + "\n") // after the final event: not read
	var got []fetchEvent
	final, err := decodeEvents(&buf, func(ev fetchEvent) { got = append(got, ev) })
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, sent) {
		t.Fatalf("decoded %+v, sent %+v", got, sent)
	}
	if !reflect.DeepEqual(final.Result, res) || !final.final() {
		t.Fatalf("final event %+v", final)
	}
}

// TestFetchEventsErrors: a final error event is the error, and a stream
// that stops without a final event, or is not JSON, is an error too.
func TestFetchEventsErrors(t *testing.T) {
	var buf bytes.Buffer
	encodeEvent(&buf, fetchEvent{Done: 3, Total: 10})
	encodeEvent(&buf, fetchEvent{Done: 3, Total: 10, Error: "pipes: not connected: file 0123abcd", Status: http.StatusServiceUnavailable})
	ev, err := decodeEvents(&buf, nil)
	if err == nil || err.Error() != "pipes: not connected: file 0123abcd" || ev.Status != http.StatusServiceUnavailable || !ev.final() {
		t.Fatalf("error event: %+v, %v", ev, err)
	}
	for name, stream := range map[string]string{
		"empty":            "",
		"no final event":   `{"done":1,"total":2}` + "\n",
		"cut in mid-event": `{"done":1,"total":2}` + "\n" + `{"done":2,"to`,
	} {
		if _, err := decodeEvents(strings.NewReader(stream), nil); !errors.Is(err, errNoResult) {
			t.Errorf("%s: %v, want errNoResult", name, err)
		}
	}
	if _, err := decodeEvents(strings.NewReader("<html>oops</html>"), nil); err == nil || errors.Is(err, errNoResult) {
		t.Errorf("not JSON: %v", err)
	}
}

// TestEventWriter: the stream starts with the first event (so an error
// before it still gets a status), sends the first and the last progress,
// and what it sends decodes in order with the final result.
func TestEventWriter(t *testing.T) {
	rec := httptest.NewRecorder()
	e := &eventWriter{w: rec}
	if e.started {
		t.Fatal("started before any event")
	}
	const total = 1 << 20
	for done := int64(0); done <= total; done += 1 << 16 {
		e.progress(done, total)
	}
	e.send(fetchEvent{Done: total, Total: total, Result: &fetchResult{Size: total}})
	if ct := rec.Header().Get("Content-Type"); ct != "application/x-ndjson" || rec.Code != http.StatusOK {
		t.Fatalf("status %d, content type %q", rec.Code, ct)
	}
	var got []fetchEvent
	final, err := decodeEvents(rec.Body, func(ev fetchEvent) { got = append(got, ev) })
	if err != nil {
		t.Fatal(err)
	}
	if len(got) < 3 || got[0].Done != 0 || got[len(got)-2].Done != total || final.Result == nil || final.Result.Size != total {
		t.Fatalf("events %+v", got)
	}
	for i := 1; i < len(got); i++ {
		if got[i].Done < got[i-1].Done || got[i].Total != total {
			t.Fatalf("events not monotonic: %+v", got)
		}
	}
}

// TestFileStatus: the file service's sentinels get the HTTP status of
// their kind.
func TestFileStatus(t *testing.T) {
	for _, c := range []struct {
		err  error
		code int
	}{
		{pipes.ErrNotFound, http.StatusNotFound},
		{pipes.ErrIsDir, http.StatusBadRequest},
		{pipes.ErrInvalid, http.StatusBadRequest},
		{pipes.ErrInvalidID, http.StatusBadRequest},
		{pipes.ErrNoSecret, http.StatusForbidden},
		{pipes.ErrTooFewNodes, http.StatusServiceUnavailable},
		{pipes.ErrNotConnected, http.StatusServiceUnavailable},
		{pipes.ErrBusy, http.StatusConflict},
		{pipes.ErrDiskFull, http.StatusInsufficientStorage},
	} {
		if got := fileStatus(fmt.Errorf("%w: file 0123", c.err)); got != c.code {
			t.Errorf("%v: status %d, want %d", c.err, got, c.code)
		}
	}
}

// TestOutPath: a directory gets the file under its name; a missing
// directory is an error before any fetch.
func TestOutPath(t *testing.T) {
	dir := t.TempDir()
	if p, err := outPath(dir, "photos.tar"); err != nil || p != dir+"/photos.tar" {
		t.Fatalf("into a directory: %q %v", p, err)
	}
	if p, err := outPath(dir+"/x.bin", "photos.tar"); err != nil || p != dir+"/x.bin" {
		t.Fatalf("a file path: %q %v", p, err)
	}
	if _, err := outPath(dir+"/missing/x.bin", "photos.tar"); !errors.Is(err, pipes.ErrNotFound) {
		t.Fatalf("a missing directory: %v", err)
	}
	if _, err := outPath(dir, "../escape"); !errors.Is(err, pipes.ErrIsDir) {
		t.Fatalf("a name that is a path: %v", err)
	}
}

// TestResolveFileBadIDs: what is not hex, or is longer than an id, is
// ErrInvalidID before any node is asked; a full id is taken as it is.
func TestResolveFileBadIDs(t *testing.T) {
	for _, arg := range []string{"", "not-an-id", "xyz", "12 34", strings.Repeat("a", 65), strings.Repeat("g", 64)} {
		if _, err := resolveFile(nil, arg); !errors.Is(err, pipes.ErrInvalidID) {
			t.Errorf("%q: %v, want ErrInvalidID", arg, err)
		}
	}
	full := strings.Repeat("0f", 32)
	if id, err := resolveFile(nil, strings.ToUpper(full)); err != nil || id.String() != full {
		t.Fatalf("a full id: %v %v", id, err)
	}
}
