package netlab

import (
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
)

type impairment struct {
	loss      int
	partition bool
}

// SetLoss drops percent of the IPv4 packets in each direction of node's
// link to the public segment (0 removes the loss). The drop is an nftables
// rule in the public namespace's bridge: numgen random mod 100 < percent.
func (l *Lab) SetLoss(node Node, percent int) error {
	if percent < 0 || percent > 100 {
		return fmt.Errorf("netlab: loss %d%% out of range", percent)
	}
	return l.setImpair(node, func(im *impairment) { im.loss = percent })
}

// lockNode takes the lab's lock for a change to node, if the lab is open
// and node is one of its own; the caller unlocks l.mu when it succeeds.
func (l *Lab) lockNode(node Node) error {
	l.mu.Lock()
	if err := l.check(); err != nil {
		l.mu.Unlock()
		return err
	}
	if err := l.checkNode(node); err != nil {
		l.mu.Unlock()
		return err
	}
	return nil
}

// setImpair changes node's impairments and applies them.
func (l *Lab) setImpair(node Node, change func(*impairment)) error {
	if err := l.lockNode(node); err != nil {
		return err
	}
	defer l.mu.Unlock()
	im := l.impair[node.portName()]
	change(&im)
	l.impair[node.portName()] = im
	return l.applyPublicRules()
}

// Partition cuts (on) or restores node's link to the public segment: every
// IPv4 packet to or from it is dropped silently. ARP still passes, so
// neighbours stay resolved and no ICMP errors appear.
func (l *Lab) Partition(node Node, on bool) error {
	return l.setImpair(node, func(im *impairment) { im.partition = on })
}

// SetUDPTimeout sets how long the router keeps an idle UDP mapping:
// the namespace's nf_conntrack_udp_timeout and nf_conntrack_udp_timeout_stream
// (the latter applies once a flow has seen traffic both ways), and for
// FullCone the lifetime of its inbound port map. For FullCone this forgets
// the current inbound port map; call it before traffic starts.
func (l *Lab) SetUDPTimeout(n *NAT, seconds int) error {
	if seconds < 1 {
		return fmt.Errorf("netlab: timeout %d s out of range", seconds)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.check(); err != nil {
		return err
	}
	for _, key := range []string{"nf_conntrack_udp_timeout", "nf_conntrack_udp_timeout_stream"} {
		if err := writeSysctl(n.ns, "net/netfilter/"+key, fmt.Sprint(seconds)); err != nil {
			return err
		}
	}
	n.timeout = seconds
	if n.kind == FullCone {
		return n.applyRules()
	}
	return nil
}

// ChangePublicAddr moves the router's WAN to a new public address and
// flushes its conntrack table (and FullCone's port map), as when an ISP
// hands out a new address: every mapping is lost, and outbound packets
// leave from the new address. It returns the new address.
func (l *Lab) ChangePublicAddr(n *NAT) (netip.Addr, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.check(); err != nil {
		return netip.Addr{}, err
	}
	if n.kind == None {
		return netip.Addr{}, errors.New("netlab: a None router has no public address")
	}
	old, addr := n.pubAddr, l.allocPublic()
	// Delete first: deleting a primary address also deletes the secondary
	// addresses of its subnet.
	if err := l.ipBatch(n.ns,
		fmt.Sprintf("addr del %s/%d dev wan", old, publicBits),
		fmt.Sprintf("addr add %s/%d dev wan", addr, publicBits),
	); err != nil {
		return netip.Addr{}, err
	}
	n.pubAddr = addr
	if err := n.flushConntrack(); err != nil {
		return addr, err
	}
	// Re-applying the rules empties FullCone's port map.
	return addr, n.applyRules()
}

// flushConntrack empties the router's conntrack table (conntrack -F).
func (n *NAT) flushConntrack() error {
	if _, err := exec.LookPath("conntrack"); err != nil {
		return fmt.Errorf("netlab: ChangePublicAddr needs the conntrack tool (Debian package conntrack): %w", err)
	}
	_, err := runIn(n.lab.ctx, n.ns, []string{"conntrack", "-F"})
	return err
}

// checkNode checks that node is on the public segment of this lab.
func (l *Lab) checkNode(node Node) error {
	switch v := node.(type) {
	case *NAT:
		if v != nil && v.lab == l {
			return nil
		}
	case *Host:
		if v != nil && v.lab == l {
			if v.behind != nil {
				return errors.New("netlab: impair the host's NAT: the host is not on the public segment")
			}
			return nil
		}
	}
	return fmt.Errorf("netlab: %v is not a node of this lab", node)
}
