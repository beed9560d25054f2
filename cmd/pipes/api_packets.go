package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"

	"github.com/pipesnet/pipes"
)

// Packets by id, and files. The daemon and the CLI run on the same
// machine as the same user: a file to put, or a path to write a packet's
// data to, is a path the daemon opens itself, and it must be absolute (the
// daemon's working directory is not the caller's).

// findPacket returns the packet with id packet from the persistent
// pipeline named by arg, or with an empty arg from any persistent pipeline
// of n.
func findPacket(n *pipes.Node, arg, packet string) (*pipes.Pipeline, *pipes.Packet, error) {
	pid, err := pipes.ParsePacketID(packet)
	if err != nil {
		return nil, nil, err
	}
	if arg != "" {
		p, err := findPipeline(n, arg)
		if err != nil {
			return nil, nil, err
		}
		pk, err := p.PacketWithID(pid)
		if err != nil {
			return nil, nil, err
		}
		return p, pk, nil
	}
	for _, p := range n.Pipelines() {
		if !p.Persistent() {
			continue
		}
		pk, err := p.PacketWithID(pid)
		if errors.Is(err, pipes.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		return p, pk, nil
	}
	return nil, nil, fmt.Errorf("%w: packet %s in the node's persistent pipelines", pipes.ErrNotFound, pid)
}

// readable returns nil if this node can read the data of p's packets,
// else an error that says what to do.
func readable(p *pipes.Pipeline) error {
	if p.Encrypted() && !p.HasSecret() {
		return noSecret(p)
	}
	return nil
}

// noSecret is the error for data of an encrypted pipeline on a node
// without its secret.
func noSecret(p *pipes.Pipeline) error {
	return fmt.Errorf("%w: pipeline %q is encrypted and this node does not have its secret (set it with `pipes pipeline secret %s`)",
		pipes.ErrNoSecret, p.Name(), p.Name())
}

// dataErr makes a data read's ErrNoSecret say what to do.
func dataErr(p *pipes.Pipeline, err error) error {
	if errors.Is(err, pipes.ErrNoSecret) {
		return noSecret(p)
	}
	return err
}

// absPath checks that a path the daemon is to open is absolute.
func absPath(path string) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("path %q is not absolute: the daemon opens it, and its working directory is not yours", path)
	}
	return nil
}

// dataErrorTrailer carries an error met after the data began to flow.
const dataErrorTrailer = "Pipes-Error"

// servePackets adds the endpoints of packets by id and of files. Each
// packet endpoint exists under /v1/nodes/{id}/packets/{packet} (any
// persistent pipeline of the node) and under
// /v1/nodes/{id}/pipelines/{pipeline}/packets/{packet}.
func servePackets(mux *http.ServeMux, node func(http.ResponseWriter, *http.Request) *pipes.Node,
	pipeline func(http.ResponseWriter, *http.Request) (*pipes.Node, *pipes.Pipeline)) {
	fail, reply := apiFail, apiReply
	packet := func(w http.ResponseWriter, r *http.Request) (*pipes.Pipeline, *pipes.Packet) {
		n := node(w, r)
		if n == nil {
			return nil, nil
		}
		p, pk, err := findPacket(n, r.PathValue("pipeline"), r.PathValue("packet"))
		if err == nil {
			err = readable(p)
		}
		if err != nil {
			fail(w, err)
			return nil, nil
		}
		return p, pk
	}
	for _, prefix := range []string{"/v1/nodes/{id}/packets/{packet}", "/v1/nodes/{id}/pipelines/{pipeline}/packets/{packet}"} {
		// The packet as JSON; the data of a file packet is not in it.
		mux.HandleFunc("GET "+prefix, func(w http.ResponseWriter, r *http.Request) {
			p, pk := packet(w, r)
			if pk == nil {
				return
			}
			j := describePacket(pk)
			if !j.IsFile {
				if _, err := pk.Data(); err != nil {
					fail(w, dataErr(p, err))
					return
				}
			}
			reply(w, struct {
				Pipeline string `json:"pipeline"`
				packetJSON
			}{p.Name(), j})
		})
		// The packet's data as is, a file's content included, waiting for
		// chunks still on their way until the client leaves. An error after
		// the first byte comes in the Pipes-Error trailer.
		mux.HandleFunc("GET "+prefix+"/data", func(w http.ResponseWriter, r *http.Request) {
			p, pk := packet(w, r)
			if pk == nil {
				return
			}
			rc, err := pk.OpenContext(r.Context())
			if err != nil {
				fail(w, dataErr(p, err))
				return
			}
			defer rc.Close()
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Header().Set("Trailer", dataErrorTrailer)
			if _, err := io.Copy(w, rc); err != nil && r.Context().Err() == nil {
				w.Header().Set(dataErrorTrailer, dataErr(p, err).Error())
			}
		})
		// Writes the packet's data to an absolute path of the daemon's
		// machine, waiting for a file's chunks until the client leaves.
		mux.HandleFunc("POST "+prefix+"/write", func(w http.ResponseWriter, r *http.Request) {
			p, pk := packet(w, r)
			if pk == nil {
				return
			}
			path, ok := pathRequest(w, r)
			if !ok {
				return
			}
			if err := pk.WriteDataToPathContext(r.Context(), path); err != nil {
				fail(w, dataErr(p, err))
				return
			}
			reply(w, writtenJSON{ID: pk.ID().String(), Pipeline: p.Name(), Path: path, Size: pk.Size(), IsFile: pk.IsFile()})
		})
	}
	// Puts the file at an absolute path of the daemon's machine as one
	// file packet; it gives up if the client leaves.
	mux.HandleFunc("POST /v1/nodes/{id}/pipelines/{pipeline}/files", func(w http.ResponseWriter, r *http.Request) {
		_, p := pipeline(w, r)
		if p == nil {
			return
		}
		path, ok := pathRequest(w, r)
		if !ok {
			return
		}
		id, err := p.PutFileContext(r.Context(), path)
		if err != nil {
			fail(w, dataErr(p, err))
			return
		}
		reply(w, map[string]string{"id": id.String()})
	})
}

// writtenJSON reports a packet's data written to a file.
type writtenJSON struct {
	ID       string `json:"id"`
	Pipeline string `json:"pipeline"`
	Path     string `json:"path"`
	Size     int64  `json:"size"`
	IsFile   bool   `json:"is_file"`
}

// pathRequest decodes a request that names an absolute path of the
// daemon's machine; on a bad one it answers with the error and reports
// false.
func pathRequest(w http.ResponseWriter, r *http.Request) (string, bool) {
	var req struct {
		Path string `json:"path"`
	}
	if err := decodeRequest(r, &req); err != nil {
		apiFail(w, err)
		return "", false
	}
	if err := absPath(req.Path); err != nil {
		apiFail(w, err)
		return "", false
	}
	return req.Path, true
}
