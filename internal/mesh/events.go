package mesh

// EventKind says what an Event reports.
type EventKind int

const (
	// EventConnection: the local node gained its first peer or lost its last.
	EventConnection EventKind = iota + 1
	// EventNode: another node's presence changed (online, offline, peer,
	// name, location, version, addresses or neighbours).
	EventNode
)

// Event is one notification to the mesh's owner. Events go through a
// bounded queue (Config.EventQueue): when it is full the newest event is
// dropped and counted (Stats.EventsDropped); presence is level-triggered,
// so the owner can always re-read the current state.
type Event struct {
	Kind      EventKind
	Connected bool     // EventConnection
	Node      NodeInfo // EventNode
}

// nodeEvent tells listeners of a change of a node, online as Nodes lists
// it.
func (m *Mesh) nodeEvent(info NodeInfo) {
	info.Online = m.listed(info)
	m.told[info.ID] = info.Online
	m.events.Push(Event{Kind: EventNode, Node: info})
}
