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
	"time"

	"github.com/pipesnet/pipes"
)

type pipelineJSON struct {
	ID           string `json:"id"`
	Name         string `json:"name"`
	PointToPoint bool   `json:"point_to_point"`
	OtherNode    string `json:"other_node,omitempty"`
	Persistent   bool   `json:"persistent"`
	Delivered    uint64 `json:"delivered"`
	Dropped      uint64 `json:"dropped"`
	Rejected     uint64 `json:"rejected"`
	// Persistent pipelines only.
	Logged        int64 `json:"logged,omitempty"`
	LoggedBytes   int64 `json:"logged_bytes,omitempty"`
	Synchronizing bool  `json:"synchronizing,omitempty"`
}

type packetJSON struct {
	ID     string    `json:"id"`
	LogID  int64     `json:"log_id"` // -1 on live pipelines
	Sender string    `json:"sender"`
	Seq    uint64    `json:"seq"`
	Type   int       `json:"type"`
	Time   time.Time `json:"time"`
	Data   []byte    `json:"data"` // base64 in JSON
}

func describePacket(pk *pipes.Packet) packetJSON {
	data, _ := pk.Data()
	return packetJSON{ID: pk.ID().String(), LogID: pk.LogID(), Sender: pk.Sender().String(), Seq: pk.Seq(),
		Type: pk.Type(), Time: pk.Time(), Data: data}
}

func describePipeline(p *pipes.Pipeline) pipelineJSON {
	s := p.Stats()
	j := pipelineJSON{ID: p.ID().String(), Name: p.Name(), PointToPoint: p.IsPointToPoint(),
		Persistent: p.Persistent(), Delivered: s.Delivered, Dropped: s.Dropped, Rejected: s.Rejected,
		Logged: s.Logged, LoggedBytes: s.LoggedBytes, Synchronizing: s.Synchronizing}
	if o, ok := p.OtherNode(); ok {
		j.OtherNode = o.String()
	}
	return j
}

// findPipeline matches a pipeline of n by name or id prefix.
func findPipeline(n *pipes.Node, arg string) (*pipes.Pipeline, error) {
	return pick("pipeline", arg, n.Pipelines(), (*pipes.Pipeline).Name,
		func(p *pipes.Pipeline) string { return p.ID().String() })
}

// servePipelines adds the pipeline endpoints of the local API.
func servePipelines(ctx context.Context, mux *http.ServeMux, node func(http.ResponseWriter, *http.Request) *pipes.Node) {
	fail := func(w http.ResponseWriter, err error) {
		code := http.StatusBadRequest
		switch {
		case errors.Is(err, pipes.ErrNotFound):
			code = http.StatusNotFound
		case errors.Is(err, pipes.ErrDiskFull):
			code = http.StatusInsufficientStorage
		case errors.Is(err, pipes.ErrStore):
			code = http.StatusInternalServerError
		case errors.Is(err, pipes.ErrNotActive):
			code = http.StatusServiceUnavailable
		}
		http.Error(w, err.Error(), code)
	}
	reply := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET /v1/nodes/{id}/pipelines", func(w http.ResponseWriter, r *http.Request) {
		if n := node(w, r); n != nil {
			out := []pipelineJSON{}
			for _, p := range n.Pipelines() {
				out = append(out, describePipeline(p))
			}
			reply(w, out)
		}
	})
	mux.HandleFunc("POST /v1/nodes/{id}/pipelines", func(w http.ResponseWriter, r *http.Request) {
		n := node(w, r)
		if n == nil {
			return
		}
		var req struct {
			Name       string `json:"name"`
			To         string `json:"to"`
			Persistent bool   `json:"persistent"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
			fail(w, err)
			return
		}
		o := pipes.PipelineOptions{Persistent: req.Persistent}
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
		reply(w, describePipeline(p))
	})
	mux.HandleFunc("POST /v1/nodes/{id}/pipelines/{pipeline}/packets", func(w http.ResponseWriter, r *http.Request) {
		n := node(w, r)
		if n == nil {
			return
		}
		p, err := findPipeline(n, r.PathValue("pipeline"))
		if err != nil {
			fail(w, err)
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
	mux.HandleFunc("GET /v1/nodes/{id}/pipelines/{pipeline}", func(w http.ResponseWriter, r *http.Request) {
		if n := node(w, r); n != nil {
			p, err := findPipeline(n, r.PathValue("pipeline"))
			if err != nil {
				fail(w, err)
				return
			}
			reply(w, describePipeline(p))
		}
	})
	mux.HandleFunc("GET /v1/nodes/{id}/packets/{packet}", func(w http.ResponseWriter, r *http.Request) {
		n := node(w, r)
		if n == nil {
			return
		}
		pid, err := pipes.ParsePacketID(r.PathValue("packet"))
		if err != nil {
			fail(w, err)
			return
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
				fail(w, err)
				return
			}
			reply(w, struct {
				Pipeline string `json:"pipeline"`
				packetJSON
			}{p.Name(), describePacket(pk)})
			return
		}
		fail(w, fmt.Errorf("%w: packet %s in the node's persistent pipelines", pipes.ErrNotFound, pid))
	})
	mux.HandleFunc("GET /v1/nodes/{id}/pipelines/{pipeline}/tail", func(w http.ResponseWriter, r *http.Request) {
		n := node(w, r)
		if n == nil {
			return
		}
		p, err := findPipeline(n, r.PathValue("pipeline"))
		if err != nil {
			fail(w, err)
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
