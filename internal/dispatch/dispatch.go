// Package dispatch hands each message that arrives from the mesh to the
// one handler registered for its kind (numbers in package kinds), and
// each stream a peer opens to the one handler of its protocol
// (streams.go).
//
// Handlers come in groups. A group with a queue has one worker goroutine
// of its own: its messages run in the order they arrived, one after the
// other, and a slow handler delays its own group only. A group without a
// queue (inline) runs its handlers on the goroutine that dispatches, which
// is the mesh loop for broadcast and routed messages: such handlers must
// not block.
//
// Policy: a kind has one handler (a second registration is an error); a
// message of a kind nobody registered, or on a path its registration does
// not accept, is counted and dropped; a message whose group's queue is
// full is counted, reported to the group's OnFull and dropped (the
// senders of every kind heal loss: they ask or send again). Nothing a
// peer sends makes the dispatcher panic or block.
package dispatch

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/proto"

	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/kinds"
	"github.com/pipesnet/pipes/internal/worker"
)

// Errors.
var (
	ErrDuplicate   = errors.New("dispatch: kind registered twice")
	ErrUnknownKind = errors.New("dispatch: unknown message kind")
	ErrWrongPath   = errors.New("dispatch: message on a path its kind does not take")
	ErrClosed      = errors.New("dispatch: dispatcher closed")
)

// Msg is one message for a handler.
type Msg struct {
	From    ids.Node   // the origin of a broadcast, the source of a routed message
	Kind    uint32     // a number of package kinds
	Via     kinds.Path // how it came: exactly one of kinds.Broadcast, Routed, InSealed
	Payload []byte     // the encoded body; nil when Body holds it decoded
	// Body is the decoded body, if the message was decoded already: what
	// Route.Validate returned for a broadcast, or the body of a Sealed
	// envelope. Nil otherwise.
	Body any
}

// Handler handles one message. An error drops the message and is logged
// (at debug level: peers send what they like).
type Handler func(Msg) error

// Route is what a registration says of one kind.
type Route struct {
	// Paths are the paths the kind may take; a message on another path is
	// dropped and counted.
	Paths kinds.Path
	// Validate, for a broadcast kind, checks a payload before the mesh
	// delivers or forwards it. It runs on the reader goroutine of the peer
	// that sent it (in parallel across peers); its result reaches Handle as
	// Msg.Body. Nil accepts every payload.
	Validate func(payload []byte, origin ids.Node) (any, error)
	// Handle handles the message, on its group's worker (or inline).
	Handle Handler
}

// GroupConfig configures a handler group.
type GroupConfig struct {
	// Queue is how many messages may wait for the group's worker. Zero
	// makes an inline group: no worker, handlers run on the dispatching
	// goroutine and must not block.
	Queue int
	// OnFull, if set, is told of each message dropped because the queue
	// was full, on the dispatching goroutine. It must not block.
	OnFull func(Msg)
}

// Stats count messages the dispatcher did not hand to a handler.
type Stats struct {
	Unknown uint64 // of a kind (or stream protocol) nobody registered
	Refused uint64 // on a path their kind does not take
	Dropped uint64 // their group's queue was full, or the dispatcher closed (streams: or too many waiting)
}

// Dispatcher routes messages to the handlers registered for their kind.
type Dispatcher struct {
	log *slog.Logger

	mu     sync.RWMutex
	routes map[uint32]route
	groups map[string]*Group
	closed bool

	streams streams // handlers of the streams peers open (streams.go)

	unknown, refused, dropped atomic.Uint64
}

type route struct {
	g *Group
	r Route
}

// Group is a set of handlers that share one worker (or run inline).
type Group struct {
	d      *Dispatcher
	name   string
	pool   *worker.Pool[job] // nil: inline
	onFull func(Msg)
}

type job struct {
	m Msg
	h Handler
}

// New returns a dispatcher with no kinds registered. log may be nil.
func New(log *slog.Logger) *Dispatcher {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Dispatcher{log: log, routes: map[uint32]route{}, groups: map[string]*Group{}}
	d.streams.init()
	return d
}

// Group makes a handler group named name, with its worker unless the
// group is inline. Two groups may not share a name.
func (d *Dispatcher) Group(name string, cfg GroupConfig) (*Group, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, ErrClosed
	}
	if _, ok := d.groups[name]; ok {
		return nil, fmt.Errorf("dispatch: group %q made twice", name)
	}
	g := &Group{d: d, name: name, onFull: cfg.OnFull}
	if cfg.Queue > 0 {
		g.pool = worker.New(cfg.Queue, 1, func(j job) { d.run(g, j.m, j.h) })
	}
	d.groups[name] = g
	return g, nil
}

// Handle registers r for kind in group g. A kind already registered (in
// any group) is ErrDuplicate.
func (g *Group) Handle(kind uint32, r Route) error {
	if r.Handle == nil || r.Paths == 0 {
		return fmt.Errorf("dispatch: kind %d (%s): a route needs a handler and paths", kind, kinds.Name(kind))
	}
	d := g.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	if old, ok := d.routes[kind]; ok {
		return fmt.Errorf("%w: %d (%s), in group %q already", ErrDuplicate, kind, kinds.Name(kind), old.g.name)
	}
	d.routes[kind] = route{g: g, r: r}
	return nil
}

// lookup returns the route of m's kind, counting what it refuses.
func (d *Dispatcher) lookup(m Msg) (route, error) {
	d.mu.RLock()
	rt, ok := d.routes[m.Kind]
	closed := d.closed
	d.mu.RUnlock()
	switch {
	case closed:
		d.dropped.Add(1)
		return route{}, ErrClosed
	case !ok:
		d.unknown.Add(1)
		return route{}, fmt.Errorf("%w %d", ErrUnknownKind, m.Kind)
	case m.Via&(m.Via-1) != 0 || rt.r.Paths&m.Via == 0:
		d.refused.Add(1)
		return route{}, fmt.Errorf("%w: kind %d (%s) by path %d", ErrWrongPath, m.Kind, kinds.Name(m.Kind), m.Via)
	}
	return rt, nil
}

// Validate runs the validator of a broadcast kind (see Route.Validate).
// It fails for a kind nobody registered or that is not broadcast, so the
// mesh neither delivers nor forwards it.
func (d *Dispatcher) Validate(kind uint32, payload []byte, origin ids.Node) (any, error) {
	rt, err := d.lookup(Msg{From: origin, Kind: kind, Via: kinds.Broadcast})
	if err != nil {
		return nil, err
	}
	if rt.r.Validate == nil {
		return nil, nil
	}
	return rt.r.Validate(payload, origin)
}

// Dispatch hands m to its kind's group without blocking, and reports
// whether it was taken. An inline group's handler runs before Dispatch
// returns.
func (d *Dispatcher) Dispatch(m Msg) bool {
	rt, err := d.lookup(m)
	if err != nil {
		return false
	}
	g := rt.g
	if g.pool == nil {
		d.run(g, m, rt.r.Handle)
		return true
	}
	if !g.pool.TryPut(job{m: m, h: rt.r.Handle}) {
		d.dropped.Add(1)
		if g.onFull != nil {
			g.onFull(m)
		}
		return false
	}
	return true
}

// Run handles m on the calling goroutine, whatever its kind's group, and
// returns the handler's error (tests and fuzzing drive handlers so).
func (d *Dispatcher) Run(m Msg) error {
	rt, err := d.lookup(m)
	if err != nil {
		return err
	}
	return rt.r.Handle(m)
}

func (d *Dispatcher) run(g *Group, m Msg, h Handler) {
	if err := h(m); err != nil {
		d.log.Debug("dropped message", "group", g.name, "kind", kinds.Name(m.Kind),
			"from", fmt.Sprintf("%x", m.From[:4]), "err", err)
	}
}

// Stats returns the dispatcher's counters.
func (d *Dispatcher) Stats() Stats {
	return Stats{Unknown: d.unknown.Load(), Refused: d.refused.Load(), Dropped: d.dropped.Load()}
}

// Close stops every group's worker, each after the message it handles,
// and waits for them; messages still queued are dropped. Streams whose
// protocol is still awaited are reset, later ones too. The owner ends
// what its handlers wait on (its context) first. Later messages are
// dropped. Close must not be called from a handler.
func (d *Dispatcher) Close() {
	d.mu.Lock()
	d.closed = true
	groups := make([]*Group, 0, len(d.groups))
	for _, g := range d.groups {
		groups = append(groups, g)
	}
	d.mu.Unlock()
	d.streams.close()
	for _, g := range groups {
		if g.pool != nil {
			g.pool.Close()
		}
	}
}

// Proto makes a Handler of a typed one: the body is m.Body when that is a
// *T already (decoded by a validator, or the body of a Sealed envelope),
// else m.Payload decoded as protobuf.
func Proto[T any, P interface {
	*T
	proto.Message
}](h func(m Msg, body P) error) Handler {
	return func(m Msg) error {
		if b, ok := m.Body.(P); ok {
			if b == nil {
				return fmt.Errorf("dispatch: empty %s body", kinds.Name(m.Kind))
			}
			return h(m, b)
		}
		if m.Body != nil {
			return fmt.Errorf("dispatch: %s body of type %T", kinds.Name(m.Kind), m.Body)
		}
		b := P(new(T))
		if err := proto.Unmarshal(m.Payload, b); err != nil {
			return fmt.Errorf("dispatch: %s: %w", kinds.Name(m.Kind), err)
		}
		return h(m, b)
	}
}
