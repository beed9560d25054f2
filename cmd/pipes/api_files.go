package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pipesnet/pipes"
)

// The file service of the local API (pipes file). As with file packets,
// the daemon opens the paths it is given itself: they are absolute paths
// of its machine, where the CLI runs as the same user.

// fileJSON is a pipes.FileInfo.
type fileJSON struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Size     int64  `json:"size"`
	Local    bool   `json:"local"` // this node holds it complete
	Readable bool   `json:"readable"`
	// The identities whose nodes can read it; empty: every node of the
	// network.
	Readers []readerJSON `json:"readers"`
	Holders []holderJSON `json:"holders"`
	Copies  int          `json:"copies"` // the copies the network keeps (replicate), 0: no such duty
	Archive *archiveJSON `json:"archive,omitempty"`
}

// readerJSON is an identity allowed to read a file.
type readerJSON struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"` // empty for an identity this node does not know
}

// archiveJSON is a pipes.FileArchive.
type archiveJSON struct {
	Data       int         `json:"data"`
	Parity     int         `json:"parity"`
	Compressed bool        `json:"compressed"`
	Shards     []shardJSON `json:"shards"`
}

// shardJSON is a pipes.FileShard.
type shardJSON struct {
	Index   int          `json:"index"`
	ID      string       `json:"id"`
	Holders []holderJSON `json:"holders"`
}

// fetchEvent is one line of the progress stream of a fetch
// (POST /v1/nodes/{id}/files/{file}/fetch): newline-delimited JSON, each
// event with the bytes present and the bytes in all, the last one with
// the result or the error. The bytes are those the node stores: the
// file's size, or for a file restricted to readers its ciphertext, a
// little more (the result has the file's size).
type fetchEvent struct {
	Done   int64        `json:"done"`
	Total  int64        `json:"total"`
	Result *fetchResult `json:"result,omitempty"` // the last event of a fetch that succeeded
	Error  string       `json:"error,omitempty"`  // the last event of one that failed
	Status int          `json:"status,omitempty"` // with Error: the HTTP status of its kind
}

// fetchResult is what a fetch did.
type fetchResult struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Size    int64  `json:"size"`
	Path    string `json:"path,omitempty"` // where the daemon wrote it, if asked to
	Holders int    `json:"holders"`        // the other nodes that held it when the fetch began
}

// final reports whether ev ends the stream.
func (ev fetchEvent) final() bool { return ev.Result != nil || ev.Error != "" }

// encodeEvent writes ev as one line of JSON.
func encodeEvent(w io.Writer, ev fetchEvent) error {
	return json.NewEncoder(w).Encode(ev)
}

// errNoResult means a progress stream ended without its final event.
var errNoResult = errors.New("the daemon ended the fetch without a result (did it stop?)")

// decodeEvents reads a progress stream, calls each (if not nil) with
// every event, the final one included, and returns the final event; a
// final event with an error is returned with that error.
func decodeEvents(r io.Reader, each func(fetchEvent)) (fetchEvent, error) {
	dec := json.NewDecoder(r)
	for {
		var ev fetchEvent
		if err := dec.Decode(&ev); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return ev, errNoResult
			}
			return ev, fmt.Errorf("fetch progress: %w", err)
		}
		if each != nil {
			each(ev)
		}
		switch {
		case ev.Error != "":
			return ev, errors.New(ev.Error)
		case ev.Result != nil:
			return ev, nil
		}
	}
}

// eventWriter streams the progress of a fetch. The response begins with
// the first event, so an error met before it still gets an HTTP status.
type eventWriter struct {
	w       http.ResponseWriter
	started bool
	last    time.Time
	done    int64
	total   int64
}

// eventEvery is how often at most a fetch reports progress.
const eventEvery = 100 * time.Millisecond

// progress sends the bytes present, at most every eventEvery but always
// the first and the last.
func (e *eventWriter) progress(done, total int64) {
	e.done, e.total = done, total
	if e.started && done < total && time.Since(e.last) < eventEvery {
		return
	}
	e.send(fetchEvent{Done: done, Total: total})
}

func (e *eventWriter) send(ev fetchEvent) {
	if !e.started {
		e.started = true
		e.w.Header().Set("Content-Type", "application/x-ndjson")
		e.w.WriteHeader(http.StatusOK)
	}
	e.last = time.Now()
	encodeEvent(e.w, ev) // a client that left is seen by the fetch's context
	http.NewResponseController(e.w).Flush()
}

// fileFail answers with err's message and the HTTP status of its kind.
func fileFail(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, pipes.ErrTooFewNodes):
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
	case errors.Is(err, pipes.ErrBusy), errors.Is(err, pipes.ErrIncomplete):
		http.Error(w, err.Error(), http.StatusConflict)
	default:
		apiFail(w, err)
	}
}

// fileStatus is the HTTP status fileFail gives err.
func fileStatus(err error) int {
	rec := httptest.NewRecorder()
	fileFail(rec, err)
	return rec.Code
}

// resolveFile finds the file arg names: a full id, or a prefix of the id
// of a file the node keeps.
func resolveFile(n *pipes.Node, arg string) (pipes.FileID, error) {
	if id, err := pipes.ParseFileID(arg); err == nil {
		return id, nil
	}
	a := strings.ToLower(arg)
	if a == "" || len(a) > 64 || strings.Trim(a, "0123456789abcdef") != "" {
		return pipes.FileID{}, fmt.Errorf("%w: a file id is 64 hex digits (or a prefix of the id of a file this node keeps), not %q", pipes.ErrInvalidID, arg)
	}
	var found []pipes.FileID
	for _, fi := range n.Files().List() {
		if strings.HasPrefix(fi.ID.String(), a) {
			found = append(found, fi.ID)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return pipes.FileID{}, fmt.Errorf("%w: no file of this node's starts with %q (a file it does not keep takes its full id)", pipes.ErrNotFound, arg)
	}
	return pipes.FileID{}, fmt.Errorf("%w: %d files start with %q: use a longer id prefix", pipes.ErrAmbiguous, len(found), arg)
}

// identityRef is an identity a node knows: its own, its platform's, or a
// known node's.
type identityRef struct {
	id   pipes.IdentityID
	name string
}

// resolveReaders finds the identities args name: each a full identity id,
// or a name or id prefix of an identity the node knows.
func resolveReaders(p *pipes.Platform, n *pipes.Node, args []string) ([]pipes.IdentityID, error) {
	known := knownIdentities(p, n)
	var out []pipes.IdentityID
	for _, arg := range args {
		if id, err := pipes.ParseIdentityID(arg); err == nil {
			out = append(out, id)
			continue
		}
		r, err := pick("identity", arg, known, func(r identityRef) string { return r.name },
			func(r identityRef) string { return r.id.String() })
		if err != nil {
			return nil, err
		}
		out = append(out, r.id)
	}
	return out, nil
}

// knownIdentities lists the identities of the platform and of the nodes n
// knows, each once.
func knownIdentities(p *pipes.Platform, n *pipes.Node) []identityRef {
	var out []identityRef
	seen := map[pipes.IdentityID]bool{}
	add := func(id pipes.IdentityID, name string) {
		if id != (pipes.IdentityID{}) && !seen[id] {
			seen[id] = true
			out = append(out, identityRef{id, name})
		}
	}
	for _, id := range p.Identities() {
		add(id.ID(), id.Name())
	}
	for _, r := range n.KnownNodes() {
		add(pipes.Details(r).IdentityID, r.Name())
	}
	return out
}

// describeHolders names the nodes of ids as n knows them.
func describeHolders(n *pipes.Node, ids []pipes.NodeID) []holderJSON {
	known := map[pipes.NodeID]pipes.NodeRef{}
	for _, r := range n.KnownNodes() {
		known[r.ID()] = r
	}
	out := []holderJSON{}
	for _, id := range ids {
		h := holderJSON{ID: id.String()}
		switch r, ok := known[id]; {
		case id == n.ID():
			h.Location = n.Location()
			if me := n.Identity(); me != nil {
				h.Name = me.Name()
			}
		case ok:
			h.Name, h.Location = r.Name(), r.Location()
		}
		out = append(out, h)
	}
	return out
}

// describeFile describes fi as n sees it.
func describeFile(p *pipes.Platform, n *pipes.Node, fi pipes.FileInfo) fileJSON {
	j := fileJSON{ID: fi.ID.String(), Name: fi.Name, Size: fi.Size, Local: fi.Local, Readable: fi.Readable,
		Readers: []readerJSON{}, Holders: describeHolders(n, fi.Holders), Copies: fi.Copies}
	if len(fi.Readers) > 0 {
		names := map[pipes.IdentityID]string{}
		for _, r := range knownIdentities(p, n) {
			names[r.id] = r.name
		}
		for _, id := range fi.Readers {
			j.Readers = append(j.Readers, readerJSON{ID: id.String(), Name: names[id]})
		}
	}
	if a := fi.Archive; a != nil {
		j.Archive = &archiveJSON{Data: a.Data, Parity: a.Parity, Compressed: a.Compressed, Shards: []shardJSON{}}
		for _, s := range a.Shards {
			j.Archive.Shards = append(j.Archive.Shards, shardJSON{Index: s.Index, ID: s.ID.String(), Holders: describeHolders(n, s.Holders)})
		}
	}
	return j
}

// serveFiles adds the endpoints of the file service under
// /v1/nodes/{id}/files.
func serveFiles(mux *http.ServeMux, p *pipes.Platform, node func(http.ResponseWriter, *http.Request) *pipes.Node) {
	reply := apiReply
	// file finds the node and the file of the request; it answers with
	// the error and returns nil if either is missing.
	file := func(w http.ResponseWriter, r *http.Request) (*pipes.Node, pipes.FileID, bool) {
		n := node(w, r)
		if n == nil {
			return nil, pipes.FileID{}, false
		}
		id, err := resolveFile(n, r.PathValue("file"))
		if err != nil {
			fileFail(w, err)
			return nil, id, false
		}
		return n, id, true
	}
	// stat answers with the file as it is now.
	stat := func(w http.ResponseWriter, r *http.Request, n *pipes.Node, id pipes.FileID) {
		fi, err := n.Files().Stat(r.Context(), id)
		if err != nil {
			fileFail(w, err)
			return
		}
		reply(w, describeFile(p, n, fi))
	}
	mux.HandleFunc("GET /v1/nodes/{id}/files", func(w http.ResponseWriter, r *http.Request) {
		if n := node(w, r); n != nil {
			out := []fileJSON{}
			for _, fi := range n.Files().List() {
				out = append(out, describeFile(p, n, fi))
			}
			reply(w, out)
		}
	})
	// Imports the file at an absolute path of the daemon's machine; it
	// gives up if the client leaves.
	mux.HandleFunc("POST /v1/nodes/{id}/files", func(w http.ResponseWriter, r *http.Request) {
		n := node(w, r)
		if n == nil {
			return
		}
		var req struct {
			Path    string   `json:"path"`
			Readers []string `json:"readers"`
		}
		if err := decodeRequest(r, &req); err != nil {
			fileFail(w, err)
			return
		}
		if err := absPath(req.Path); err != nil {
			fileFail(w, err)
			return
		}
		var opts []pipes.FileOption
		if len(req.Readers) > 0 {
			readers, err := resolveReaders(p, n, req.Readers)
			if err != nil {
				fileFail(w, err)
				return
			}
			opts = append(opts, pipes.WithReaders(readers...))
		}
		id, err := n.Files().Add(r.Context(), req.Path, opts...)
		if err != nil {
			fileFail(w, err)
			return
		}
		stat(w, r, n, id)
	})
	mux.HandleFunc("GET /v1/nodes/{id}/files/{file}", func(w http.ResponseWriter, r *http.Request) {
		if n, id, ok := file(w, r); ok {
			stat(w, r, n, id)
		}
	})
	mux.HandleFunc("DELETE /v1/nodes/{id}/files/{file}", func(w http.ResponseWriter, r *http.Request) {
		n, id, ok := file(w, r)
		if !ok {
			return
		}
		if err := n.Files().Remove(r.Context(), id); err != nil {
			fileFail(w, err)
			return
		}
		reply(w, map[string]any{"id": id.String(), "removed": true})
	})
	// Fetches the file from its holders, streaming the progress (see
	// fetchEvent), and writes it to the request's path if it has one. The
	// fetch stops when the client leaves, and a later one resumes it.
	mux.HandleFunc("POST /v1/nodes/{id}/files/{file}/fetch", func(w http.ResponseWriter, r *http.Request) {
		n, id, ok := file(w, r)
		if !ok {
			return
		}
		var req struct {
			Path string `json:"path"`
		}
		if err := decodeRequest(r, &req); err != nil {
			fileFail(w, err)
			return
		}
		if req.Path != "" {
			if err := absPath(req.Path); err != nil {
				fileFail(w, err)
				return
			}
		}
		f := n.Files()
		fi, err := f.Stat(r.Context(), id)
		if err != nil {
			fileFail(w, err)
			return
		}
		target := ""
		if req.Path != "" {
			if target, err = outPath(req.Path, fi.Name); err != nil {
				fileFail(w, err)
				return
			}
		}
		res := &fetchResult{ID: id.String(), Name: fi.Name, Size: fi.Size, Path: target}
		for _, h := range fi.Holders {
			if h != n.ID() {
				res.Holders++
			}
		}
		ev := &eventWriter{w: w}
		err = f.Fetch(r.Context(), id, ev.progress)
		if err == nil {
			// The node's own copy describes it best (a restricted file's
			// size, for one).
			if fi, err := f.Stat(r.Context(), id); err == nil {
				res.Size = fi.Size
			}
		}
		if err == nil && target != "" {
			err = writeFile(f, id, target)
		}
		switch {
		case err != nil && !ev.started:
			fileFail(w, err)
		case err != nil:
			ev.send(fetchEvent{Done: ev.done, Total: ev.total, Error: err.Error(), Status: fileStatus(err)})
		case !ev.started: // no progress reported: nothing was to fetch
			ev.send(fetchEvent{Done: fi.Size, Total: fi.Size, Result: res})
		default:
			ev.send(fetchEvent{Done: ev.total, Total: ev.total, Result: res})
		}
	})
	// The content of this node's copy, as is. An error after the first
	// byte comes in the Pipes-Error trailer.
	mux.HandleFunc("GET /v1/nodes/{id}/files/{file}/data", func(w http.ResponseWriter, r *http.Request) {
		n, id, ok := file(w, r)
		if !ok {
			return
		}
		rc, err := n.Files().Open(id)
		if err != nil {
			fileFail(w, err)
			return
		}
		defer rc.Close()
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Trailer", dataErrorTrailer)
		if _, err := io.Copy(w, rc); err != nil && r.Context().Err() == nil {
			w.Header().Set(dataErrorTrailer, err.Error())
		}
	})
	// Replicate and Archive wait until the network holds what they ask
	// for; a client that leaves ends the wait, not the duty.
	mux.HandleFunc("POST /v1/nodes/{id}/files/{file}/replicate", func(w http.ResponseWriter, r *http.Request) {
		n, id, ok := file(w, r)
		if !ok {
			return
		}
		var req struct {
			Copies int `json:"copies"`
		}
		if err := decodeRequest(r, &req); err != nil {
			fileFail(w, err)
			return
		}
		if err := n.Files().Replicate(r.Context(), id, req.Copies); err != nil {
			fileFail(w, err)
			return
		}
		stat(w, r, n, id)
	})
	mux.HandleFunc("POST /v1/nodes/{id}/files/{file}/archive", func(w http.ResponseWriter, r *http.Request) {
		n, id, ok := file(w, r)
		if !ok {
			return
		}
		var req struct {
			Data   int `json:"data"`
			Parity int `json:"parity"`
		}
		if err := decodeRequest(r, &req); err != nil {
			fileFail(w, err)
			return
		}
		if err := n.Files().Archive(r.Context(), id, req.Data, req.Parity); err != nil {
			fileFail(w, err)
			return
		}
		stat(w, r, n, id)
	})
}

// outPath is where a fetched file named name goes for the path asked:
// the path itself, or name inside it if it is a directory. Its directory
// must exist.
func outPath(path, name string) (string, error) {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		if name == "" || name != filepath.Base(name) || name == "." || name == ".." {
			return "", fmt.Errorf("%w: %s is a directory and the file has no usable name: give a file path", pipes.ErrIsDir, path)
		}
		return filepath.Join(path, name), nil
	}
	dir := filepath.Dir(path)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("%w: directory %s", pipes.ErrNotFound, dir)
	}
	return path, nil
}

// writeFile writes this node's copy of id to path, through a temporary
// file in the same directory, so that path is either left as it was or
// holds the whole content.
func writeFile(f *pipes.Files, id pipes.FileID, path string) error {
	rc, err := f.Open(id)
	if err != nil {
		return err
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(filepath.Dir(path), ".pipes-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // fails once renamed
	err = tmp.Chmod(0o644)
	if err == nil {
		_, err = io.Copy(tmp, rc)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
