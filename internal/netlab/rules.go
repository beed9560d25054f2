package netlab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// applyPublicRules renders the public namespace's impairments. Caller holds mu.
func (l *Lab) applyPublicRules() error {
	var b strings.Builder
	b.WriteString("flush ruleset\ntable bridge netlab {\n\tchain impair {\n\t\ttype filter hook forward priority 0; policy accept;\n")
	for port, im := range l.impair {
		switch {
		case im.partition:
			fmt.Fprintf(&b, "\t\tiifname %q ether type ip drop\n\t\toifname %q ether type ip drop\n", port, port)
		case im.loss >= 100:
			fmt.Fprintf(&b, "\t\tiifname %q ether type ip drop\n\t\toifname %q ether type ip drop\n", port, port)
		case im.loss > 0:
			fmt.Fprintf(&b, "\t\tiifname %q ether type ip numgen random mod 100 < %d drop\n", port, im.loss)
			fmt.Fprintf(&b, "\t\toifname %q ether type ip numgen random mod 100 < %d drop\n", port, im.loss)
		}
	}
	b.WriteString("\t}\n}\n")
	if err := nft(l.ctx, l.pubNS(), b.String()); err != nil {
		return err
	}
	return l.applyDelays()
}

// Rules is the nftables ruleset the router runs, as nft -f reads it.
func (n *NAT) Rules() string {
	n.lab.mu.Lock()
	defer n.lab.mu.Unlock()
	return n.rules()
}

func (n *NAT) rules() string {
	var b strings.Builder
	b.WriteString("flush ruleset\n")
	switch n.kind {
	case None:
		return b.String()
	case EIMAddrPortFiltering, Symmetric:
		// Drop unsolicited inbound before conntrack confirms an entry for it
		// (conntrack runs at -200, NAT at -100): the entry would otherwise
		// take the mapping's tuple and force the next outbound packet of
		// the inside socket onto a new public port.
		b.WriteString(`table ip netlab {
	chain filter_in {
		type filter hook prerouting priority -150; policy accept;
		iifname "wan" ct state new drop
	}
	chain postrouting {
		type nat hook postrouting priority 100; policy accept;
`)
		if n.kind == Symmetric {
			b.WriteString("\t\toifname \"wan\" masquerade fully-random\n")
		} else {
			b.WriteString("\t\toifname \"wan\" masquerade\n")
		}
		b.WriteString("\t}\n}\n")
	case PlainMasquerade:
		b.WriteString(`table ip netlab {
	chain postrouting {
		type nat hook postrouting priority 100; policy accept;
		oifname "wan" masquerade
	}
}
`)
	case FullCone:
		// Masquerade keeps the inside port when it is free. Every UDP packet
		// from the LAN records (or refreshes) inside port -> inside address
		// in a map; inbound UDP to a recorded port is sent to that address,
		// whoever sends it. Ports that masquerade had to change (two inside
		// sockets on one port) are not reachable unsolicited.
		timeout := n.timeout
		if timeout == 0 {
			timeout = 120
		}
		fmt.Fprintf(&b, `table ip netlab {
	map cone {
		type inet_service : ipv4_addr
		flags dynamic,timeout
		timeout %ds
	}
	chain lan_in {
		type filter hook prerouting priority -150; policy accept;
		iifname != "wan" meta l4proto udp update @cone { udp sport : ip saddr }
	}
	chain prerouting {
		type nat hook prerouting priority -100; policy accept;
		iifname "wan" meta l4proto udp dnat to udp dport map @cone
	}
	chain postrouting {
		type nat hook postrouting priority 100; policy accept;
		oifname "wan" masquerade
	}
}
`, timeout)
	}
	return b.String()
}

func (n *NAT) applyRules() error { return nft(n.lab.ctx, n.ns, n.rules()) }

func nft(ctx context.Context, ns, ruleset string) error {
	_, err := run(ctx, []byte(ruleset), "ip", "netns", "exec", ns, "nft", "-f", "-")
	if err != nil {
		return fmt.Errorf("%w\nruleset:\n%s", err, ruleset)
	}
	return nil
}

func runIn(ctx context.Context, ns string, cmd []string) (string, error) {
	if len(cmd) == 0 {
		return "", errors.New("netlab: empty command")
	}
	return run(ctx, nil, "ip", append([]string{"netns", "exec", ns}, cmd...)...)
}

func run(ctx context.Context, stdin []byte, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("netlab: %s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// writeSysctl writes /proc/sys/<key> inside namespace ns.
func writeSysctl(ns, key, value string) error {
	return doIn(ns, func() error {
		return os.WriteFile("/proc/sys/"+key, []byte(value), 0)
	})
}
