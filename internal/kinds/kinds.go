// Package kinds allocates the numbers of every message kind that travels
// in the mesh: broadcast gossip (Gossip.kind) and routed messages
// (Routed.kind). It is the one place a number is chosen; every package
// that sends or handles a kind refers to these constants, and a test
// checks that no two kinds share a number.
//
// The numbers are part of the wire protocol: a number, once given, never
// changes meaning, even when its kind is retired (no longer sent or
// handled). A new service takes the next free number of its range and
// adds a line to Table.
//
// Ranges: 1..15 broadcast kinds; 16..99 routed kinds of the pipeline
// engine and the services above it; 100..127 routed kinds the mesh answers
// itself (diagnostics, hole punching, NAT checks).
package kinds

// Broadcast kinds: gossip that reaches every node of the network.
const (
	// Status is a node's presence status (mesh presence). The mesh keeps
	// it itself and never hands it to the dispatcher.
	Status uint32 = 1
	// Def is a pipeline definition (pb.PipelineDef); handled by the
	// pipeline engine's definitions registry.
	Def uint32 = 2
	// Batch is a signed batch of packets (pb.PacketBatch) of a broadcast
	// pipeline; handled by the pipeline engine's live delivery, or its
	// persistence for a persistent pipeline.
	Batch uint32 = 3
	// Holdings is a node's signed list of the files it holds (package
	// files, docs/protocol.md): broadcast when it changes and
	// periodically, routed to a node that comes online; handled by the
	// file service's holders index.
	Holdings uint32 = 4
	// ReadKeys are signed reader keys of identities (package files): the
	// public keys that files restricted to readers are sealed to;
	// broadcast by the nodes of each identity, routed to a node that
	// comes online; handled by the file service's key book.
	ReadKeys uint32 = 5
	// Duties are the file service's signed replication and archive
	// duties (package files): broadcast when one is set and periodically,
	// routed to a node that comes online; handled by the file service's
	// repairer.
	Duties uint32 = 6
)

// Routed kinds of the pipeline engine and its services.
const (
	// Sealed is an end-to-end encrypted envelope (pb.Sealed) whose body
	// (pb.SealedBody) is one of the other kinds; the pipeline engine
	// opens it and dispatches the body under the kind it stands for.
	Sealed uint32 = 16
	// Defs are pipeline definitions sent to a new peer (pb.PipelineDefs),
	// or, inside Sealed, one point-to-point definition (pb.PipelineDef);
	// handled by the pipeline engine's definitions registry.
	Defs uint32 = 17
	// Direct is a batch of packets for this node (pb.PacketBatch), sent
	// to a direct peer only and never relayed, or inside Sealed; handled
	// by the pipeline engine's delivery of point-to-point packets.
	Direct uint32 = 18
	// Sync is a synchronisation message of a persistent pipeline
	// (pb.Sync): to a direct peer only for a broadcast pipeline, inside
	// Sealed for a point-to-point one; handled by the engine's sync.
	Sync uint32 = 19
	// Notes are secret proofs and tombstones (pb.PipelineNotes):
	// broadcast, routed to a new peer, or inside Sealed; handled by the
	// engine's secrets and tombstones.
	Notes uint32 = 20
	// FileGet is retired: it asked for one chunk of a file packet
	// (pb.FileGet), in clear or inside Sealed. File packets' chunks travel
	// on the file service's data connections ("pipes/files") now; nothing
	// handles the kind, and its number stays reserved, never given again.
	FileGet uint32 = 21
	// FileData is retired: it answered a FileGet with the chunk
	// (pb.FileData). Like FileGet, unhandled, its number reserved.
	FileData uint32 = 22
	// RealtimeKey is the key of a realtime session (pb.RealtimeKey). It
	// travels only inside Sealed, never as a routed kind of its own;
	// handled by the engine's realtime sessions.
	RealtimeKey uint32 = 23
)

// Routed kinds the mesh answers itself, on its loop; they never reach the
// dispatcher.
const (
	// Ping carries an 8-byte nonce; the destination answers Pong.
	Ping uint32 = 100
	// Pong carries the ping's nonce.
	Pong uint32 = 101
	// Punch asks the destination to punch toward the sender; the payload
	// is the sender's candidate addresses, one "ip:port" a line.
	Punch uint32 = 102
	// PunchAck answers Punch with the destination's candidates.
	PunchAck uint32 = 103
	// Check asks the destination to send a NAT check probe: one byte of
	// mode ('p': from a new socket; 'a': from its socket), a 16-byte
	// nonce, the address to send to.
	Check uint32 = 104
	// CheckAck says the probe was sent: the request's nonce.
	CheckAck uint32 = 105
	// Observed tells a direct peer the address its packets come from now
	// (hop limit one, never relayed).
	Observed uint32 = 106
)

// Path is how a message of a kind may travel; a bit set.
type Path uint8

// Paths.
const (
	Broadcast Path = 1 << iota // gossip to every node
	Routed                     // routed to one node, in clear (signed inside, or to a direct peer)
	InSealed                   // the body of a Sealed envelope
)

// Info describes one kind: its number, name, the paths it takes and who
// handles it.
type Info struct {
	Kind    uint32
	Name    string
	Paths   Path
	Handler string
}

// Table lists every kind, in the order of its number. docs/architecture.md
// ("Services and the message registry") shows it. A retired kind stays
// listed, with the paths it took, and a Handler beginning "retired": its
// number is not given again.
var Table = []Info{
	{Status, "status", Broadcast, "mesh: presence"},
	{Def, "def", Broadcast, "pipeline engine: definitions"},
	{Batch, "batch", Broadcast, "pipeline engine: live delivery, persistence"},
	{Holdings, "holdings", Broadcast | Routed, "file service: holders index"},
	{ReadKeys, "read-keys", Broadcast | Routed, "file service: reader keys"},
	{Duties, "duties", Broadcast | Routed, "file service: replication and archives"},
	{Sealed, "sealed", Routed, "pipeline engine: opens, dispatches the body"},
	{Defs, "defs", Routed | InSealed, "pipeline engine: definitions"},
	{Direct, "direct", Routed | InSealed, "pipeline engine: point-to-point packets"},
	{Sync, "sync", Routed | InSealed, "pipeline engine: sync"},
	{Notes, "notes", Broadcast | Routed | InSealed, "pipeline engine: secrets and tombstones"},
	{FileGet, "file-get", Routed | InSealed, "retired: no handler (file packets ride the pipes/files data connections)"},
	{FileData, "file-data", Routed | InSealed, "retired: no handler (file packets ride the pipes/files data connections)"},
	{RealtimeKey, "realtime-key", InSealed, "pipeline engine: realtime sessions"},
	{Ping, "ping", Routed, "mesh: diagnostics"},
	{Pong, "pong", Routed, "mesh: diagnostics"},
	{Punch, "punch", Routed, "mesh: hole punching"},
	{PunchAck, "punch-ack", Routed, "mesh: hole punching"},
	{Check, "check", Routed, "mesh: NAT checks"},
	{CheckAck, "check-ack", Routed, "mesh: NAT checks"},
	{Observed, "observed", Routed, "mesh: observed address"},
}

// Name returns the name of kind k, or "" for a kind not allocated.
func Name(k uint32) string {
	for _, i := range Table {
		if i.Kind == k {
			return i.Name
		}
	}
	return ""
}

// Stream protocols: a QUIC stream a node opens to a direct peer begins
// with two bytes, its protocol, and the dispatcher hands the rest of the
// stream to the one handler registered for that number. Like the kinds,
// a number once given never changes meaning.
const (
	// StreamConns is a data connection ("pc"), handled by the data
	// connections service (package conns).
	StreamConns uint16 = 0x7063
)

// StreamInfo describes one stream protocol.
type StreamInfo struct {
	Proto   uint16
	Name    string
	Handler string
}

// StreamTable lists every stream protocol, in the order of its number.
var StreamTable = []StreamInfo{
	{StreamConns, "conns", "data connections: direct, relayed and spliced streams"},
}

// StreamName returns the name of stream protocol p, or "" for one not
// allocated.
func StreamName(p uint16) string {
	for _, i := range StreamTable {
		if i.Proto == p {
			return i.Name
		}
	}
	return ""
}
