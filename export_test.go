package pipes

// KillNode stops n as a crash would: no leaving status, no goodbye. Tests
// use it to check how others notice a node that vanishes.
func KillNode(n *Node) {
	n.startMu.Lock()
	defer n.startMu.Unlock()
	n.mu.Lock()
	m := n.mu.mesh
	n.mu.mesh, n.mu.tr = nil, nil
	n.mu.Unlock()
	if m != nil {
		m.Kill()
	}
}
