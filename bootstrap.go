package pipes

import (
	"slices"

	"github.com/pipesnet/pipes/internal/store"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

// NetworkInfo names a network listed on a bootstrap network.
type NetworkInfo struct {
	ID   NetworkID
	Name string
}

// BootstrapNetworks returns the networks listed on this node's bootstrap
// network: those added here and those announced by the other online nodes.
// It fails with ErrNotBootstrap on an ordinary network.
func (n *Node) BootstrapNetworks() ([]NetworkInfo, error) {
	if nw := n.Network(); nw == nil || !nw.IsBootstrap() {
		return nil, ErrNotBootstrap
	}
	seen := map[NetworkID]string{}
	n.mu.Lock()
	for id, name := range n.mu.boot {
		seen[id] = name
	}
	n.mu.Unlock()
	if m := n.meshOrNil(); m != nil {
		for _, i := range m.Nodes() {
			for _, ni := range i.Networks {
				id := NetworkID(ni.NetworkId)
				if _, ok := seen[id]; !ok {
					seen[id] = ni.Name
				}
			}
		}
	}
	out := make([]NetworkInfo, 0, len(seen))
	for id, name := range seen {
		out = append(out, NetworkInfo{ID: id, Name: name})
	}
	slices.SortFunc(out, func(a, b NetworkInfo) int { return compareStrings(a.Name+a.ID.String(), b.Name+b.ID.String()) })
	return out, nil
}

// AddBootstrapNetwork lists network id on this node's bootstrap network. The
// network must be known to the platform (AddNetwork). The list is stored and
// announced with the node's presence, so every node of the bootstrap network
// sees it while this node is online. It fails with ErrNotBootstrap on an
// ordinary network.
func (n *Node) AddBootstrapNetwork(id NetworkID) error {
	nw := n.Network()
	if nw == nil || !nw.IsBootstrap() {
		return ErrNotBootstrap
	}
	listed, err := n.p.Network(id)
	if err != nil {
		return err
	}
	name := listed.Name()
	if err := putJSON(n.p.db, store.Key(tBoot, nw.id[:], id[:]), bootRecord{Name: name}); err != nil {
		return mapErr(err, "")
	}
	n.mu.Lock()
	n.mu.boot[id] = name
	n.mu.Unlock()
	return nil
}

// bootList is the bootstrap list announced in the node's status.
func (n *Node) bootList() []*pb.NetworkInfo {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]*pb.NetworkInfo, 0, len(n.mu.boot))
	for id, name := range n.mu.boot {
		out = append(out, &pb.NetworkInfo{NetworkId: id[:], Name: name})
	}
	slices.SortFunc(out, func(a, b *pb.NetworkInfo) int { return compareStrings(string(a.NetworkId), string(b.NetworkId)) })
	return out
}
