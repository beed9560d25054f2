package pipes

import (
	"context"
	"io"
	"iter"
	"net"
	"time"
)

// PipelineOptions choose the kind of pipeline CreatePipeline makes.
type PipelineOptions struct {
	ToNode     NodeID // non-zero: point-to-point with that node
	Persistent bool   // else live
	Encrypted  bool
	Secret     []byte // pipeline secret, with Encrypted
	Ephemeral  bool
	Realtime   bool // live only
	Unsalted   bool
	Salt       []byte
}

// PutOption modifies one Put.
type PutOption func(*putOptions)

type putOptions struct {
	packetType  int
	destination NodeID
}

// WithPacketType sets the application's integer type of the packet.
func WithPacketType(t int) PutOption { return func(o *putOptions) { o.packetType = t } }

// WithDestination delivers the packet to one node only (live pipelines).
func WithDestination(id NodeID) PutOption { return func(o *putOptions) { o.destination = id } }

// Pipeline is a communication channel of a network. Pipelines arrive with
// a later version; in this version no Pipeline value is ever returned and
// the calls that would create one return ErrNotImplemented.
type Pipeline struct {
	id   PipelineID
	name string
	opts PipelineOptions
}

// Pipelines returns the pipelines available on the node (none in this
// version).
func (n *Node) Pipelines() []*Pipeline { return []*Pipeline{} }

// Pipeline returns the pipeline with id (ErrNotFound in this version).
func (n *Node) Pipeline(id PipelineID) (*Pipeline, error) { return nil, ErrNotFound }

// CreatePipeline requests a new pipeline (ErrNotImplemented in this version).
func (n *Node) CreatePipeline(name string, o PipelineOptions) (PipelineID, error) {
	return PipelineID{}, ErrNotImplemented
}

// WaitPipeline waits for a pipeline to become available (ErrNotImplemented
// in this version).
func (n *Node) WaitPipeline(ctx context.Context, id PipelineID) (*Pipeline, error) {
	return nil, ErrNotImplemented
}

// Dial opens a data connection to service on node to (ErrNotImplemented in
// this version).
func (n *Node) Dial(ctx context.Context, to NodeID, service string) (net.Conn, error) {
	return nil, ErrNotImplemented
}

// Listen accepts data connections for service (ErrNotImplemented in this
// version).
func (n *Node) Listen(service string) (net.Listener, error) { return nil, ErrNotImplemented }

// ID returns the pipeline's id.
func (p *Pipeline) ID() PipelineID { return p.id }

// Name returns the pipeline's name.
func (p *Pipeline) Name() string { return p.name }

// Encrypted reports whether packets are encrypted with a pipeline secret.
func (p *Pipeline) Encrypted() bool { return p.opts.Encrypted }

// IsPointToPoint reports whether the pipeline joins two nodes only.
func (p *Pipeline) IsPointToPoint() bool { return p.opts.ToNode != NodeID{} }

// OtherNode returns the other node of a point-to-point pipeline.
func (p *Pipeline) OtherNode() (NodeID, bool) { return p.opts.ToNode, p.IsPointToPoint() }

// Persistent reports whether the pipeline keeps its history on every node.
func (p *Pipeline) Persistent() bool { return p.opts.Persistent }

// Live reports whether the pipeline delivers to online nodes only.
func (p *Pipeline) Live() bool { return !p.opts.Persistent }

// Realtime reports whether the pipeline uses datagrams.
func (p *Pipeline) Realtime() bool { return p.opts.Realtime }

// Shutdown removes an ephemeral pipeline (ErrNotImplemented in this version).
func (p *Pipeline) Shutdown() error { return ErrNotImplemented }

// NodesWithEncryptionSecret lists the nodes that proved they hold the
// pipeline secret (none in this version).
func (p *Pipeline) NodesWithEncryptionSecret() []NodeID { return nil }

// SetSecret sets the pipeline secret (ErrNotImplemented in this version).
func (p *Pipeline) SetSecret(secret []byte) (bool, error) { return false, ErrNotImplemented }

// Put sends a packet (ErrNotImplemented in this version).
func (p *Pipeline) Put(data []byte, opts ...PutOption) (PacketID, error) {
	return PacketID{}, ErrNotImplemented
}

// PutFile sends a file as one packet (ErrNotImplemented in this version).
func (p *Pipeline) PutFile(path string) (PacketID, error) { return PacketID{}, ErrNotImplemented }

// PacketWithID returns a stored packet (ErrNotImplemented in this version).
func (p *Pipeline) PacketWithID(id PacketID) (*Packet, error) { return nil, ErrNotImplemented }

// PacketsSince yields the packets with LogID > logID in order (-1 for all).
// In this version it yields ErrNotImplemented once.
func (p *Pipeline) PacketsSince(logID int64) iter.Seq2[*Packet, error] {
	return func(yield func(*Packet, error) bool) { yield(nil, ErrNotImplemented) }
}

// Subscribe returns the pipeline's packets until ctx ends, then closes the
// channel. In this version the channel closes when ctx ends and carries
// nothing.
func (p *Pipeline) Subscribe(ctx context.Context) <-chan *Packet {
	ch := make(chan *Packet)
	go func() { <-ctx.Done(); close(ch) }()
	return ch
}

// IsSynchronizing reports whether a persistent pipeline is catching up.
func (p *Pipeline) IsSynchronizing() bool { return false }

// SetupUDPPortMap bridges a local UDP port to a realtime point-to-point
// pipeline (ErrNotImplemented in this version).
func (p *Pipeline) SetupUDPPortMap(host string, port int) error { return ErrNotImplemented }

// UDPAddr returns the local address of the UDP port map (nil without one).
func (p *Pipeline) UDPAddr() *net.UDPAddr { return nil }

// AddListener adds a pipeline listener.
func (p *Pipeline) AddListener(l PipelineListener) {}

// RemoveListener removes a pipeline listener.
func (p *Pipeline) RemoveListener(l PipelineListener) {}

// Packet is one unit of data on a pipeline.
type Packet struct {
	id     PacketID
	typ    int
	size   int64
	logID  int64
	sender NodeID
	time   time.Time
	data   []byte
}

// ID returns the packet id (SHA-256 of header and data).
func (pk *Packet) ID() PacketID { return pk.id }

// Type returns the application's packet type.
func (pk *Packet) Type() int { return pk.typ }

// Size returns the size of the data in bytes.
func (pk *Packet) Size() int64 { return pk.size }

// LogID returns the local log position (-1 on live pipelines).
func (pk *Packet) LogID() int64 { return pk.logID }

// Sender returns the node that put the packet.
func (pk *Packet) Sender() NodeID { return pk.sender }

// Time returns the packet's hybrid-logical-clock time.
func (pk *Packet) Time() time.Time { return pk.time }

// Data returns the packet's data.
func (pk *Packet) Data() ([]byte, error) { return pk.data, nil }

// Open returns a reader of the packet's data.
func (pk *Packet) Open() (io.ReadCloser, error) { return nil, ErrNotImplemented }

// WriteDataToPath writes the packet's data to path.
func (pk *Packet) WriteDataToPath(path string) error { return ErrNotImplemented }
