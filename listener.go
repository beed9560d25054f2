package pipes

import "slices"

// NodeListener receives a node's notifications. Callbacks run one at a
// time, in order, on a goroutine of the node, never under a lock of the
// package; they may call any method of the node except Shutdown. A slow
// callback delays later notifications but never the network: up to 4096
// notifications wait, and beyond that the newest are dropped and counted
// (Node.Stats().EventsDropped). State is always current through
// ConnectedPeers, ConnectedNodes and IsConnected.
type NodeListener interface {
	// HandleConnectionUpdate reports that the node got its first peer
	// (connected true) or lost its last one.
	HandleConnectionUpdate(connected bool, n *Node)
	// HandleNodeStatusUpdate reports that another node joined, left,
	// became or stopped being a peer, or changed its status.
	HandleNodeStatusUpdate(peer NodeRef, n *Node)
	// HandlePipeline reports a pipeline that became available.
	HandlePipeline(p *Pipeline, n *Node)
}

// NodeListenerFuncs is a NodeListener whose nil fields ignore their event.
// Use a pointer to it with AddListener and RemoveListener.
type NodeListenerFuncs struct {
	ConnectionUpdate func(connected bool, n *Node)
	NodeStatusUpdate func(peer NodeRef, n *Node)
	Pipeline         func(p *Pipeline, n *Node)
}

// HandleConnectionUpdate calls f.ConnectionUpdate if set.
func (f *NodeListenerFuncs) HandleConnectionUpdate(c bool, n *Node) {
	if f.ConnectionUpdate != nil {
		f.ConnectionUpdate(c, n)
	}
}

// HandleNodeStatusUpdate calls f.NodeStatusUpdate if set.
func (f *NodeListenerFuncs) HandleNodeStatusUpdate(r NodeRef, n *Node) {
	if f.NodeStatusUpdate != nil {
		f.NodeStatusUpdate(r, n)
	}
}

// HandlePipeline calls f.Pipeline if set.
func (f *NodeListenerFuncs) HandlePipeline(p *Pipeline, n *Node) {
	if f.Pipeline != nil {
		f.Pipeline(p, n)
	}
}

// AddListener adds l to the node's listeners. It stays registered across
// Shutdown and Start.
func (n *Node) AddListener(l NodeListener) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.mu.listeners = append(n.mu.listeners, l)
}

// RemoveListener removes l (compared with ==). A callback already running
// may still complete.
func (n *Node) RemoveListener(l NodeListener) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.mu.listeners = slices.DeleteFunc(n.mu.listeners, func(x NodeListener) bool { return x == l })
}

// PipelineListener receives a pipeline's notifications, under the same rules
// as NodeListener.
type PipelineListener interface {
	HandlePacket(pk *Packet, p *Pipeline)
	HandleStatusUpdate(p *Pipeline)
	HandleUDPPortMap(p *Pipeline)
	HandleSyncUpdate(synchronized bool, p *Pipeline)
}

// PipelineListenerFuncs is a PipelineListener whose nil fields ignore their
// event.
type PipelineListenerFuncs struct {
	Packet       func(pk *Packet, p *Pipeline)
	StatusUpdate func(p *Pipeline)
	UDPPortMap   func(p *Pipeline)
	SyncUpdate   func(synchronized bool, p *Pipeline)
}

// HandlePacket calls f.Packet if set.
func (f *PipelineListenerFuncs) HandlePacket(pk *Packet, p *Pipeline) {
	if f.Packet != nil {
		f.Packet(pk, p)
	}
}

// HandleStatusUpdate calls f.StatusUpdate if set.
func (f *PipelineListenerFuncs) HandleStatusUpdate(p *Pipeline) {
	if f.StatusUpdate != nil {
		f.StatusUpdate(p)
	}
}

// HandleUDPPortMap calls f.UDPPortMap if set.
func (f *PipelineListenerFuncs) HandleUDPPortMap(p *Pipeline) {
	if f.UDPPortMap != nil {
		f.UDPPortMap(p)
	}
}

// HandleSyncUpdate calls f.SyncUpdate if set.
func (f *PipelineListenerFuncs) HandleSyncUpdate(s bool, p *Pipeline) {
	if f.SyncUpdate != nil {
		f.SyncUpdate(s, p)
	}
}
