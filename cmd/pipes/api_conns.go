package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pipesnet/pipes"
)

// Port forwarding through the daemon. A forward or an expose lives as
// long as the request that made it: the daemon answers with one JSON line
// that describes it, then one line for each connection's events, and
// stops (closing its listener and its connections) when the client goes
// away or the daemon stops.

// forwardJSON is the first line of a forward: the local address it
// listens on and where its connections go.
type forwardJSON struct {
	Event    string `json:"event"` // "forwarding"
	Addr     string `json:"addr"`  // the local TCP address
	Node     string `json:"node"`  // the node dialled
	Name     string `json:"name"`
	Location string `json:"location"`
	Online   bool   `json:"online"` // when the forward began
	Service  string `json:"service"`
}

// exposeJSON is the first line of an expose.
type exposeJSON struct {
	Event   string        `json:"event"` // "exposing"
	Node    string        `json:"node"`  // this node
	Service string        `json:"service"`
	Target  string        `json:"target"`  // the TCP address dialled for each connection
	Allowed []allowedJSON `json:"allowed"` // empty: every member of the network
}

// allowedJSON is one entry of a service's access list.
type allowedJSON struct {
	ID string `json:"id"`
	// node, identity, or unknown: a full id of neither a node nor an
	// identity this node knows, allowed as both (ids of the two kinds
	// cannot coincide).
	Kind     string `json:"kind"`
	Name     string `json:"name,omitempty"`
	Location string `json:"location,omitempty"`
}

// inUseError: a local TCP address is taken.
type inUseError struct{ addr string }

func (e inUseError) Error() string {
	return fmt.Sprintf("%s is in use: pick another port (0 for a free one)", e.addr)
}

func (e inUseError) Unwrap() error { return syscall.EADDRINUSE }

// eventStream writes a streaming answer: JSON lines, each flushed, from
// any goroutine.
type eventStream struct {
	mu sync.Mutex
	w  http.ResponseWriter
}

// startEvents begins a streaming answer.
func startEvents(w http.ResponseWriter) *eventStream {
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	return &eventStream{w: w}
}

// send writes v as one line. Errors mean the client left, which ends the
// request's context: they are ignored.
func (s *eventStream) send(v any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	json.NewEncoder(s.w).Encode(v)
	http.NewResponseController(s.w).Flush()
}

// decodeWholeRequest decodes a JSON request and reads the body to its end:
// only then does the server notice a client that goes away, and end the
// request's context.
func decodeWholeRequest(r *http.Request, v any) error {
	if err := decodeRequest(r, v); err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(r.Body, 1<<16))
	return nil
}

// findRemoteNode matches a node n knows, other than n, by name@location,
// location or identity name, else by id prefix.
func findRemoteNode(n *pipes.Node, arg string) (pipes.NodeRef, error) {
	if arg == "" {
		return nil, errors.New("say which node: a name, location or id prefix")
	}
	refs := n.KnownNodes()
	var found []pipes.NodeRef
	for _, r := range refs {
		if r.Location() == arg || r.Name() == arg || r.Name()+"@"+r.Location() == arg {
			found = append(found, r)
		}
	}
	if len(found) == 0 {
		a := strings.ToLower(arg)
		for _, r := range refs {
			if strings.HasPrefix(r.ID().String(), a) {
				found = append(found, r)
			}
		}
	}
	self := n.Location() == arg || strings.HasPrefix(n.ID().String(), strings.ToLower(arg))
	switch {
	case len(found) == 1:
		return found[0], nil
	case len(found) > 1:
		return nil, fmt.Errorf("%w: %d nodes match %q: use name@location or a longer id prefix (see pipes node peers --all)", pipes.ErrAmbiguous, len(found), arg)
	case self:
		return nil, fmt.Errorf("%q is this node: connect to the service's own address instead", arg)
	}
	return nil, fmt.Errorf("%w: unknown node %q: no node this one knows has that name, location or id prefix (see pipes node peers --all)", pipes.ErrNotFound, arg)
}

// resolveAllowed sorts the ids of an access list into node and identity
// ids: each is a hex id or id prefix of a node n knows (itself included)
// or of the identity of one; a full id of neither goes to both lists.
func resolveAllowed(n *pipes.Node, args []string) (pipes.Allowed, []allowedJSON, error) {
	type candidate struct {
		allowedJSON
		node     pipes.NodeID
		identity pipes.IdentityID
	}
	var cands []candidate
	seenIdentity := map[pipes.IdentityID]bool{}
	addIdentity := func(id pipes.IdentityID, name string) {
		if id != (pipes.IdentityID{}) && !seenIdentity[id] {
			seenIdentity[id] = true
			cands = append(cands, candidate{allowedJSON: allowedJSON{ID: id.String(), Kind: "identity", Name: name}, identity: id})
		}
	}
	cands = append(cands, candidate{allowedJSON: allowedJSON{ID: n.ID().String(), Kind: "node", Location: n.Location()}, node: n.ID()})
	if me := n.Identity(); me != nil {
		cands[0].Name = me.Name()
		addIdentity(me.ID(), me.Name())
	}
	for _, r := range n.KnownNodes() {
		cands = append(cands, candidate{allowedJSON: allowedJSON{ID: r.ID().String(), Kind: "node", Name: r.Name(), Location: r.Location()}, node: r.ID()})
		addIdentity(pipes.Details(r).IdentityID, r.Name())
	}
	var a pipes.Allowed
	var out []allowedJSON
	listed := map[string]bool{}
	for _, arg := range args {
		arg = strings.ToLower(strings.TrimSpace(arg))
		if arg == "" || len(arg) > 64 || !isHex(arg) {
			return a, nil, fmt.Errorf("%w: --allow %q is not a node or identity id (hex digits, or a prefix of one)", pipes.ErrInvalidID, arg)
		}
		var found []candidate
		for _, c := range cands {
			if strings.HasPrefix(c.ID, arg) {
				found = append(found, c)
			}
		}
		var c candidate
		switch {
		case len(found) == 1:
			c = found[0]
		case len(found) > 1:
			return a, nil, fmt.Errorf("%w: %d nodes or identities have ids starting with %q: give a longer prefix", pipes.ErrAmbiguous, len(found), arg)
		case len(arg) == 64:
			b, _ := hex.DecodeString(arg)
			c = candidate{allowedJSON: allowedJSON{ID: arg, Kind: "unknown"}, node: pipes.NodeID(b), identity: pipes.IdentityID(b)}
		default:
			return a, nil, fmt.Errorf("%w: no node or identity this node knows has an id starting with %q (for one it has not seen, give the full 64-digit id)", pipes.ErrNotFound, arg)
		}
		if listed[c.ID] {
			continue
		}
		listed[c.ID] = true
		if c.Kind != "identity" {
			a.Nodes = append(a.Nodes, c.node)
		}
		if c.Kind != "node" {
			a.Identities = append(a.Identities, c.identity)
		}
		out = append(out, c.allowedJSON)
	}
	return a, out, nil
}

func isHex(s string) bool {
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// remoteName names the node of a data connection's remote address, as
// its id and name@location if n knows it.
func remoteName(n *pipes.Node, c net.Conn) (string, string) {
	addr, ok := c.RemoteAddr().(pipes.Addr)
	if !ok {
		return c.RemoteAddr().String(), ""
	}
	id := addr.Node.String()
	if r, err := n.NodeWithID(id); err == nil {
		return id, r.Name() + "@" + r.Location()
	}
	return id, ""
}

// tcpFrom names the TCP client of a connection.
func tcpFrom(c net.Conn) (string, string) { return c.RemoteAddr().String(), "" }

// serveConns adds the port forwarding endpoints.
func serveConns(mux *http.ServeMux, node func(http.ResponseWriter, *http.Request) *pipes.Node) {
	fail := apiFail
	// Listens on a local TCP address and splices each connection to a
	// data connection to a node's service.
	mux.HandleFunc("POST /v1/nodes/{id}/forward", func(w http.ResponseWriter, r *http.Request) {
		n := node(w, r)
		if n == nil {
			return
		}
		var req struct {
			Bind    string `json:"bind"`
			Port    int    `json:"port"`
			To      string `json:"to"`
			Service string `json:"service"`
		}
		if err := decodeWholeRequest(r, &req); err != nil {
			fail(w, err)
			return
		}
		switch {
		case req.Port < 0 || req.Port > 65535:
			fail(w, fmt.Errorf("port %d is not a TCP port (0 to 65535)", req.Port))
			return
		case req.Service == "" || len(req.Service) > 255:
			fail(w, errors.New("a service name has 1 to 255 bytes"))
			return
		}
		ref, err := findRemoteNode(n, req.To)
		if err != nil {
			fail(w, err)
			return
		}
		if req.Bind == "" {
			req.Bind = "127.0.0.1"
		}
		addr := net.JoinHostPort(req.Bind, strconv.Itoa(req.Port))
		ln, err := net.Listen("tcp", addr)
		if errors.Is(err, syscall.EADDRINUSE) {
			err = inUseError{addr}
		}
		if err != nil {
			fail(w, err)
			return
		}
		defer ln.Close()
		to, service := ref.ID(), req.Service
		online := false
		if cur, err := n.NodeWithID(to.String()); err == nil {
			online = cur.IsConnected()
		}
		ev := startEvents(w)
		// The address as asked for (0.0.0.0, not the [::] Go listens on), with
		// the port chosen.
		bound := net.JoinHostPort(req.Bind, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
		ev.send(forwardJSON{Event: "forwarding", Addr: bound, Node: to.String(), Name: ref.Name(),
			Location: ref.Location(), Online: online, Service: service})
		err = relay(r.Context(), ln, func(ctx context.Context) (net.Conn, error) { return n.Dial(ctx, to, service) },
			tcpFrom, func(e connEvent) { ev.send(e) })
		if r.Context().Err() == nil {
			ev.send(stoppedEvent(err))
		}
	})
	// Accepts the data connections to a service of the node that the
	// access list allows, and splices each to a TCP connection to a target.
	mux.HandleFunc("POST /v1/nodes/{id}/expose", func(w http.ResponseWriter, r *http.Request) {
		n := node(w, r)
		if n == nil {
			return
		}
		var req struct {
			Service string   `json:"service"`
			Target  string   `json:"target"`
			Allow   []string `json:"allow"`
		}
		if err := decodeWholeRequest(r, &req); err != nil {
			fail(w, err)
			return
		}
		if _, _, err := net.SplitHostPort(req.Target); err != nil {
			fail(w, fmt.Errorf("target %q is not HOST:PORT: %v", req.Target, err))
			return
		}
		allowed, list, err := resolveAllowed(n, req.Allow)
		if err != nil {
			fail(w, err)
			return
		}
		l, err := n.ListenAllowed(req.Service, allowed)
		if errors.Is(err, pipes.ErrExists) {
			err = fmt.Errorf("%w: service %q is exposed already on node %s (by another pipes expose)", pipes.ErrExists, req.Service, n.ID().String()[:8])
		}
		if err != nil {
			fail(w, err)
			return
		}
		defer l.Close()
		target := req.Target
		ev := startEvents(w)
		ev.send(exposeJSON{Event: "exposing", Node: n.ID().String(), Service: req.Service, Target: target, Allowed: orEmpty(list)})
		var d net.Dialer
		err = relay(r.Context(), l, func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", target) },
			func(c net.Conn) (string, string) { return remoteName(n, c) }, func(e connEvent) { ev.send(e) })
		if r.Context().Err() == nil {
			if errors.Is(err, net.ErrClosed) {
				err = fmt.Errorf("node %s stopped", n.ID().String()[:8])
			}
			ev.send(stoppedEvent(err))
		}
	})
}

// stoppedEvent is the last line of a forward or an expose that ended
// while its client was still there.
func stoppedEvent(err error) connEvent {
	e := connEvent{Event: "stopped", Time: time.Now(), Error: "the daemon stopped"}
	if err != nil {
		e.Error = err.Error()
	}
	return e
}
