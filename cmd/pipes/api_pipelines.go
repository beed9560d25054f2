package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pipesnet/pipes"
)

type pipelineJSON struct {
	ID           string `json:"id"`
	Name         string `json:"name"`
	PointToPoint bool   `json:"point_to_point"`
	OtherNode    string `json:"other_node,omitempty"`
	Persistent   bool   `json:"persistent"`
	Encrypted    bool   `json:"encrypted"`
	Ephemeral    bool   `json:"ephemeral"`
	Realtime     bool   `json:"realtime"`
	Closed       bool   `json:"closed,omitempty"` // shut down (ephemeral)
	Delivered    uint64 `json:"delivered"`
	Dropped      uint64 `json:"dropped"`
	Rejected     uint64 `json:"rejected"`
	// Persistent pipelines only.
	Logged        int64 `json:"logged,omitempty"`
	LoggedBytes   int64 `json:"logged_bytes,omitempty"`
	Synchronizing bool  `json:"synchronizing,omitempty"`
	// Encrypted pipelines only: whether this node holds the pipeline
	// secret, and the nodes that proved they do (this one included).
	HasSecret     bool         `json:"has_secret"`
	SecretHolders []holderJSON `json:"secret_holders,omitempty"`
	// Realtime point-to-point pipelines: the UDP port map's address.
	UDPAddr string `json:"udp_addr,omitempty"`
}

// holderJSON is a node that holds an encrypted pipeline's secret.
type holderJSON struct {
	ID       string `json:"id"`
	Name     string `json:"name,omitempty"` // empty for a node this one never saw
	Location string `json:"location,omitempty"`
}

type packetJSON struct {
	ID     string    `json:"id"`
	LogID  int64     `json:"log_id"` // -1 on live pipelines
	Sender string    `json:"sender"`
	Seq    uint64    `json:"seq"`
	Type   int       `json:"type"`
	Time   time.Time `json:"time"`
	Size   int64     `json:"size"`
	IsFile bool      `json:"is_file,omitempty"` // the data is a file's content: not in Data (pipes get --out)
	Data   []byte    `json:"data"`              // base64 in JSON
	// Why Data is missing, e.g. an encrypted pipeline without its secret.
	Unreadable string `json:"unreadable,omitempty"`
}

func describePacket(pk *pipes.Packet) packetJSON {
	j := packetJSON{ID: pk.ID().String(), LogID: pk.LogID(), Sender: pk.Sender().String(), Seq: pk.Seq(),
		Type: pk.Type(), Time: pk.Time(), Size: pk.Size(), IsFile: pk.IsFile()}
	if j.IsFile {
		return j // a file can be large: its content is read with /data or written with /write
	}
	data, err := pk.Data()
	switch {
	case errors.Is(err, pipes.ErrNoSecret):
		j.Unreadable = "sealed: this node does not have the pipeline secret"
	case err != nil:
		j.Unreadable = err.Error()
	}
	j.Data = data
	return j
}

// describePipeline describes p, a pipeline of n.
func describePipeline(n *pipes.Node, p *pipes.Pipeline) pipelineJSON {
	s := p.Stats()
	j := pipelineJSON{ID: p.ID().String(), Name: p.Name(), PointToPoint: p.IsPointToPoint(),
		Persistent: p.Persistent(), Encrypted: p.Encrypted(), Ephemeral: p.Ephemeral(), Realtime: p.Realtime(),
		Closed: p.Closed(), Delivered: s.Delivered, Dropped: s.Dropped, Rejected: s.Rejected,
		Logged: s.Logged, LoggedBytes: s.LoggedBytes, Synchronizing: s.Synchronizing}
	if o, ok := p.OtherNode(); ok {
		j.OtherNode = o.String()
	}
	if a := p.UDPAddr(); a != nil {
		j.UDPAddr = a.String()
	}
	if p.Encrypted() {
		j.HasSecret = p.HasSecret()
		holders := p.NodesWithEncryptionSecret()
		if len(holders) > 0 {
			known := map[pipes.NodeID]pipes.NodeRef{}
			for _, r := range n.KnownNodes() {
				known[r.ID()] = r
			}
			for _, id := range holders {
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
				j.SecretHolders = append(j.SecretHolders, h)
			}
		}
	}
	return j
}

// findPipeline matches a pipeline of n by name or id prefix.
func findPipeline(n *pipes.Node, arg string) (*pipes.Pipeline, error) {
	return pick("pipeline", arg, n.Pipelines(), (*pipes.Pipeline).Name,
		func(p *pipes.Pipeline) string { return p.ID().String() })
}

// apiFail answers with err's message and the HTTP status of its kind.
func apiFail(w http.ResponseWriter, err error) {
	code := http.StatusBadRequest
	switch {
	case errors.Is(err, pipes.ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, pipes.ErrDiskFull):
		code = http.StatusInsufficientStorage
	case errors.Is(err, pipes.ErrStore):
		code = http.StatusInternalServerError
	case errors.Is(err, pipes.ErrNotActive), errors.Is(err, pipes.ErrNotConnected):
		code = http.StatusServiceUnavailable
	case errors.Is(err, pipes.ErrWrongSecret), errors.Is(err, pipes.ErrNoSecret):
		code = http.StatusForbidden
	case errors.Is(err, pipes.ErrConflict), errors.Is(err, pipes.ErrExists), errors.Is(err, pipes.ErrNotEphemeral),
		errors.Is(err, pipes.ErrNotRealtime), errors.Is(err, pipes.ErrNotPersistent),
		errors.Is(err, syscall.EADDRINUSE): // a local port (pipes forward)
		code = http.StatusConflict
	case errors.Is(err, pipes.ErrClosedPipeline):
		code = http.StatusGone
	case errors.Is(err, pipes.ErrTooLarge):
		code = http.StatusRequestEntityTooLarge
	case errors.Is(err, pipes.ErrNotImplemented):
		code = http.StatusNotImplemented
	}
	http.Error(w, err.Error(), code)
}

// apiReply answers with v as JSON.
func apiReply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// decodeRequest reads a JSON request body of up to 64 KiB into v.
func decodeRequest(r *http.Request, v any) error {
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(v); err != nil {
		return fmt.Errorf("request: %w", err)
	}
	return nil
}

// servePipelines adds the pipeline endpoints of the local API.
func servePipelines(ctx context.Context, mux *http.ServeMux, node func(http.ResponseWriter, *http.Request) *pipes.Node) {
	fail, reply := apiFail, apiReply
	// pipeline finds the node and the pipeline of the request; it answers
	// with the error and returns nil if either is missing.
	pipeline := func(w http.ResponseWriter, r *http.Request) (*pipes.Node, *pipes.Pipeline) {
		n := node(w, r)
		if n == nil {
			return nil, nil
		}
		p, err := findPipeline(n, r.PathValue("pipeline"))
		if err != nil {
			fail(w, err)
			return nil, nil
		}
		return n, p
	}
	mux.HandleFunc("GET /v1/nodes/{id}/pipelines", func(w http.ResponseWriter, r *http.Request) {
		if n := node(w, r); n != nil {
			out := []pipelineJSON{}
			for _, p := range n.Pipelines() {
				out = append(out, describePipeline(n, p))
			}
			reply(w, out)
		}
	})
	// The pipeline secret travels in the request body on the Unix
	// socket, which only the daemon's user can open; it is not logged.
	mux.HandleFunc("POST /v1/nodes/{id}/pipelines", func(w http.ResponseWriter, r *http.Request) {
		n := node(w, r)
		if n == nil {
			return
		}
		var req struct {
			Name       string `json:"name"`
			To         string `json:"to"`
			Persistent bool   `json:"persistent"`
			Encrypted  bool   `json:"encrypted"`
			Secret     []byte `json:"secret"`
			Salt       string `json:"salt"`
			Unsalted   bool   `json:"unsalted"`
			Ephemeral  bool   `json:"ephemeral"`
			Realtime   bool   `json:"realtime"`
		}
		if err := decodeRequest(r, &req); err != nil {
			fail(w, err)
			return
		}
		if !req.Encrypted && (len(req.Secret) > 0 || req.Salt != "" || req.Unsalted) {
			fail(w, errors.New("a secret, a salt and unsalted apply to encrypted pipelines only"))
			return
		}
		o := pipes.PipelineOptions{Persistent: req.Persistent, Encrypted: req.Encrypted, Secret: req.Secret,
			Unsalted: req.Unsalted, Ephemeral: req.Ephemeral, Realtime: req.Realtime}
		if req.Salt != "" {
			o.Salt = []byte(req.Salt)
		}
		if req.To != "" {
			ref, err := n.NodeWithID(req.To)
			if err != nil {
				fail(w, err)
				return
			}
			o.ToNode = ref.ID()
		}
		id, err := n.CreatePipeline(req.Name, o)
		if err != nil {
			fail(w, err)
			return
		}
		p, err := n.Pipeline(id)
		if err != nil {
			fail(w, err)
			return
		}
		reply(w, describePipeline(n, p))
	})
	mux.HandleFunc("GET /v1/nodes/{id}/pipelines/{pipeline}", func(w http.ResponseWriter, r *http.Request) {
		if n, p := pipeline(w, r); p != nil {
			reply(w, describePipeline(n, p))
		}
	})
	mux.HandleFunc("POST /v1/nodes/{id}/pipelines/{pipeline}/secret", func(w http.ResponseWriter, r *http.Request) {
		n, p := pipeline(w, r)
		if p == nil {
			return
		}
		var req struct {
			Secret []byte `json:"secret"`
		}
		if err := decodeRequest(r, &req); err != nil {
			fail(w, err)
			return
		}
		if !p.Encrypted() {
			fail(w, fmt.Errorf("%w: pipeline %q is not encrypted: it has no secret", pipes.ErrConflict, p.Name()))
			return
		}
		ok, err := p.SetSecret(req.Secret)
		if err != nil {
			fail(w, err)
			return
		}
		if !ok {
			fail(w, fmt.Errorf("%w for pipeline %q", pipes.ErrWrongSecret, p.Name()))
			return
		}
		reply(w, describePipeline(n, p))
	})
	mux.HandleFunc("POST /v1/nodes/{id}/pipelines/{pipeline}/shutdown", func(w http.ResponseWriter, r *http.Request) {
		_, p := pipeline(w, r)
		if p == nil {
			return
		}
		if err := p.Shutdown(); err != nil {
			fail(w, err)
			return
		}
		reply(w, map[string]string{"id": p.ID().String(), "name": p.Name()})
	})
	mux.HandleFunc("POST /v1/nodes/{id}/pipelines/{pipeline}/packets", func(w http.ResponseWriter, r *http.Request) {
		n, p := pipeline(w, r)
		if p == nil {
			return
		}
		data, err := io.ReadAll(io.LimitReader(r.Body, pipes.MaxPacketSize+1))
		if err != nil {
			fail(w, err)
			return
		}
		var opts []pipes.PutOption
		if t := r.URL.Query().Get("type"); t != "" {
			typ, err := strconv.Atoi(t)
			if err != nil {
				fail(w, fmt.Errorf("type %q is not a number", t))
				return
			}
			opts = append(opts, pipes.WithPacketType(typ))
		}
		if to := r.URL.Query().Get("to"); to != "" {
			ref, err := n.NodeWithID(to)
			if err != nil {
				fail(w, err)
				return
			}
			opts = append(opts, pipes.WithDestination(ref.ID()))
		}
		id, err := p.Put(data, opts...)
		if err != nil {
			fail(w, err)
			return
		}
		reply(w, map[string]string{"id": id.String()})
	})
	mux.HandleFunc("GET /v1/nodes/{id}/pipelines/{pipeline}/tail", func(w http.ResponseWriter, r *http.Request) {
		_, p := pipeline(w, r)
		if p == nil {
			return
		}
		var packets <-chan *pipes.Packet
		if s := r.URL.Query().Get("since"); s != "" {
			since, err := strconv.ParseInt(s, 10, 64)
			if err != nil || since < -1 {
				fail(w, fmt.Errorf("since %q is not a LogID (-1 or more)", s))
				return
			}
			if packets, err = p.SubscribeSince(r.Context(), since); err != nil {
				fail(w, err)
				return
			}
		} else {
			packets = p.Subscribe(r.Context())
		}
		// Packets as JSON lines until the client leaves or the daemon stops.
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		flusher, _ := w.(http.Flusher)
		if flusher != nil {
			flusher.Flush()
		}
		enc := json.NewEncoder(w)
		for pk := range packets {
			if enc.Encode(describePacket(pk)) != nil {
				return
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
	})
	// The UDP port map of a realtime point-to-point pipeline lives in the
	// daemon, until DELETE or the daemon stops.
	mux.HandleFunc("POST /v1/nodes/{id}/pipelines/{pipeline}/udp-map", func(w http.ResponseWriter, r *http.Request) {
		_, p := pipeline(w, r)
		if p == nil {
			return
		}
		var req struct {
			Host string `json:"host"`
			Port int    `json:"port"`
		}
		if err := decodeRequest(r, &req); err != nil {
			fail(w, err)
			return
		}
		if err := p.SetupUDPPortMap(req.Host, req.Port); err != nil {
			if a := p.UDPAddr(); errors.Is(err, pipes.ErrExists) && a != nil {
				err = fmt.Errorf("%w: pipeline %q is mapped to %s already (remove it with --close)", pipes.ErrExists, p.Name(), a)
			}
			fail(w, err)
			return
		}
		reply(w, udpMapJSON{Pipeline: p.Name(), Addr: p.UDPAddr().String()})
	})
	mux.HandleFunc("DELETE /v1/nodes/{id}/pipelines/{pipeline}/udp-map", func(w http.ResponseWriter, r *http.Request) {
		_, p := pipeline(w, r)
		if p == nil {
			return
		}
		j := udpMapJSON{Pipeline: p.Name()}
		if a := p.UDPAddr(); a != nil {
			j.Addr = a.String()
		}
		p.ClosePortMap()
		j.Closed = true
		reply(w, j)
	})
	servePackets(mux, node, pipeline)
}

// udpMapJSON describes a pipeline's UDP port map.
type udpMapJSON struct {
	Pipeline string `json:"pipeline"`
	Addr     string `json:"addr,omitempty"` // the local address; with closed, the one it had (empty: none)
	Closed   bool   `json:"closed,omitempty"`
}

// printable renders packet data for people: text as is, anything else as
// a byte count.
func printable(b []byte) string {
	for _, c := range string(b) {
		if c == 0xfffd || (c < 0x20 && c != '\t' && c != '\n') {
			return fmt.Sprintf("<%d bytes>", len(b))
		}
	}
	return strings.TrimRight(string(b), "\n")
}
