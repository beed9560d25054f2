package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pipesnet/pipes"
)

// The local API: `pipes node start` serves the state of its nodes as JSON
// over HTTP on a Unix socket in the data directory (mode 0600), and the
// other node commands ask it while the daemon holds the directory.

// socketPath is the API socket of the data directory dir. Unix socket
// paths are short (108 bytes on Linux), so a long dir uses a name in the
// temporary directory derived from dir.
func socketPath(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		abs = dir
	}
	p := filepath.Join(abs, "api.sock")
	if len(p) < 100 {
		return p
	}
	h := sha256.Sum256([]byte(abs))
	return filepath.Join(os.TempDir(), "pipes-"+hex.EncodeToString(h[:8])+".sock")
}

type nodeJSON struct {
	ID          string   `json:"id"`
	Network     string   `json:"network"`
	NetworkID   string   `json:"network_id"`
	Identity    string   `json:"identity"`
	IdentityID  string   `json:"identity_id"`
	Location    string   `json:"location"`
	Active      bool     `json:"active"`
	Connected   bool     `json:"connected"`
	ListenAddrs []string `json:"listen_addrs"`
	Peers       int      `json:"peers"`
	OnlineNodes int      `json:"online_nodes"`
	KnownNodes  int      `json:"known_nodes"`
	// The port mapping at the router, while the node runs with port
	// mapping on.
	PortMapping *portMappingJSON `json:"port_mapping,omitempty"`
}

// portMappingJSON is a pipes.PortMapping.
type portMappingJSON struct {
	Protocol string `json:"protocol,omitempty"` // natpmp, pcp or upnp; empty without a mapping
	External string `json:"external,omitempty"` // the router's address and port for the node
	Error    string `json:"error,omitempty"`    // why there is no mapping
}

type refJSON struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	IdentityID string `json:"identity_id,omitempty"`
	Location   string `json:"location"`
	Version    string `json:"version"`
	Connected  bool   `json:"connected"`
	Peer       bool   `json:"peer"`
	// How the node reaches it now (absent if it cannot).
	Path *pathJSON `json:"path,omitempty"`
}

// pingJSON is the answer of a ping.
type pingJSON struct {
	ID       string    `json:"id"`
	Name     string    `json:"name"`
	Location string    `json:"location"`
	Path     *pathJSON `json:"path,omitempty"`
	RTTMs    []float64 `json:"rtt_ms"`
	Lost     int       `json:"lost"`
}

// pathJSON is a pipes.Path.
type pathJSON struct {
	Direct        bool    `json:"direct"`
	Via           string  `json:"via"`
	RTTMs         float64 `json:"rtt_ms"`
	BytesSent     uint64  `json:"bytes_sent"`
	BytesReceived uint64  `json:"bytes_received"`
	Remote        string  `json:"remote"`
}

func describePath(p pipes.Path) *pathJSON {
	return &pathJSON{Direct: p.Direct, Via: p.Via.String(), RTTMs: float64(p.RTT.Microseconds()) / 1000,
		BytesSent: p.BytesSent, BytesReceived: p.BytesReceived, Remote: p.Remote}
}

func describeNode(n *pipes.Node) nodeJSON {
	j := nodeJSON{ID: n.ID().String(), Location: n.Location(), Active: n.IsActive(),
		Connected: n.IsConnected(), ListenAddrs: []string{}}
	if nw := n.Network(); nw != nil {
		j.Network, j.NetworkID = nw.Name(), nw.ID().String()
	}
	if id := n.Identity(); id != nil {
		j.Identity, j.IdentityID = id.Name(), id.ID().String()
	}
	for _, a := range n.ListenAddrs() {
		j.ListenAddrs = append(j.ListenAddrs, a.String())
	}
	j.Peers = len(n.ConnectedPeers())
	j.OnlineNodes = len(n.ConnectedNodes())
	j.KnownNodes = len(n.KnownNodes())
	j.PortMapping = describePortMapping(n.PortMapping())
	return j
}

// describePortMapping is nil when port mapping is off.
func describePortMapping(pm pipes.PortMapping) *portMappingJSON {
	if !pm.Enabled {
		return nil
	}
	j := &portMappingJSON{Protocol: pm.Protocol}
	if pm.External.IsValid() {
		j.External = pm.External.String()
	}
	if pm.Err != nil {
		j.Error = pm.Err.Error()
	}
	return j
}

func describeRefs(ctx context.Context, n *pipes.Node, rs []pipes.NodeRef) []refJSON {
	out := []refJSON{}
	for _, r := range rs {
		var identity string
		if id := pipes.Details(r).IdentityID; id != (pipes.IdentityID{}) {
			identity = id.String()
		}
		j := refJSON{ID: r.ID().String(), Name: r.Name(), IdentityID: identity, Location: r.Location(),
			Version: r.Version(), Connected: r.IsConnected(), Peer: r.IsPeer()}
		if p, err := n.PathTo(ctx, r.ID()); err == nil {
			j.Path = describePath(p)
		}
		out = append(out, j)
	}
	return out
}

// serveAPI serves the local API until ctx ends.
func serveAPI(ctx context.Context, p *pipes.Platform) (func(), error) {
	path := socketPath(p.Dir())
	os.Remove(path) // a stale socket of a daemon that died; the platform lock proves none runs
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("local API: %w", err)
	}
	os.Chmod(path, 0o600)
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v)
	}
	node := func(w http.ResponseWriter, r *http.Request) *pipes.Node {
		id, err := pipes.ParseNodeID(r.PathValue("id"))
		if err == nil {
			var n *pipes.Node
			if n, err = p.Node(id); err == nil {
				return n
			}
		}
		http.Error(w, err.Error(), http.StatusNotFound)
		return nil
	}
	mux.HandleFunc("GET /v1/nodes", func(w http.ResponseWriter, r *http.Request) {
		out := []nodeJSON{}
		for _, n := range p.Nodes() {
			out = append(out, describeNode(n))
		}
		reply(w, out)
	})
	mux.HandleFunc("GET /v1/nodes/{id}/peers", func(w http.ResponseWriter, r *http.Request) {
		if n := node(w, r); n != nil {
			reply(w, describeRefs(r.Context(), n, n.ConnectedPeers()))
		}
	})
	mux.HandleFunc("GET /v1/nodes/{id}/nodes", func(w http.ResponseWriter, r *http.Request) {
		if n := node(w, r); n != nil {
			reply(w, describeRefs(r.Context(), n, n.ConnectedNodes()))
		}
	})
	// Pings a node (id prefix, name or name@location) a few times and
	// reports the path and the round trips.
	mux.HandleFunc("GET /v1/nodes/{id}/ping/{target}", func(w http.ResponseWriter, r *http.Request) {
		n := node(w, r)
		if n == nil {
			return
		}
		ref, err := findRemoteNode(n, r.PathValue("target"))
		if err != nil {
			apiFail(w, err)
			return
		}
		out := pingJSON{ID: ref.ID().String(), Name: ref.Name(), Location: ref.Location()}
		if p, err := n.PathTo(r.Context(), ref.ID()); err == nil {
			out.Path = describePath(p)
		}
		count := 3
		if c, err := strconv.Atoi(r.URL.Query().Get("count")); err == nil && c > 0 && c <= 100 {
			count = c
		}
		for range count {
			ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
			rtt, err := n.Ping(ctx, ref.ID())
			cancel()
			if err != nil {
				if len(out.RTTMs) == 0 && r.Context().Err() == nil && !errors.Is(err, context.DeadlineExceeded) {
					apiFail(w, err)
					return
				}
				out.Lost++
				continue
			}
			out.RTTMs = append(out.RTTMs, float64(rtt.Microseconds())/1000)
		}
		reply(w, out)
	})
	servePipelines(ctx, mux, node)
	serveConns(mux, node)
	serveNetcheck(mux, node)
	serveFiles(mux, p, node)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
		<-done
		os.Remove(path)
	}, nil
}

// errNoDaemon means no `pipes node start` serves this data directory.
var errNoDaemon = errors.New("no running node: start one with `pipes node start`")

// apiGet fetches path from the daemon of dir into v.
func apiGet(ctx context.Context, dir, path string, v any) error {
	resp, err := apiDo(ctx, dir, http.MethodGet, path, "", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

// apiDo sends a request to the daemon of dir. A response other than 200
// becomes an error with the daemon's message; the caller closes the body
// of a successful one.
func apiDo(ctx context.Context, dir, method, path, contentType string, body io.Reader) (*http.Response, error) {
	sock := socketPath(dir)
	if _, err := os.Stat(sock); err != nil {
		return nil, errNoDaemon
	}
	c := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
	req, err := http.NewRequestWithContext(ctx, method, "http://pipes"+path, body)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, errNoDaemon
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return nil, errors.New(strings.TrimSpace(string(msg)))
	}
	return resp, nil
}
