package main

import (
	"fmt"
	"strings"

	"github.com/pipesnet/pipes"
)

// pick returns the one item whose name equals arg or whose id starts with
// arg; with an empty arg, the only item. kind names the thing in errors.
func pick[T any](kind, arg string, items []T, name func(T) string, id func(T) string) (T, error) {
	var zero T
	if arg == "" {
		switch len(items) {
		case 1:
			return items[0], nil
		case 0:
			return zero, fmt.Errorf("no %s yet: add one first (pipes %s add)", kind, kind)
		}
		return zero, fmt.Errorf("%d %ss: say which (name or id prefix)", len(items), kind)
	}
	var found []T
	for _, it := range items {
		if name(it) == arg {
			found = append(found, it)
		}
	}
	if len(found) == 0 {
		a := strings.ToLower(arg)
		for _, it := range items {
			if strings.HasPrefix(id(it), a) {
				found = append(found, it)
			}
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return zero, fmt.Errorf("%w: no %s named %q or with that id prefix (see pipes %s list)", pipes.ErrNotFound, kind, arg, kind)
	}
	return zero, fmt.Errorf("%w: %d %ss match %q: use a longer id prefix", pipes.ErrAmbiguous, len(found), kind, arg)
}

func findNetwork(p *pipes.Platform, arg string) (*pipes.Network, error) {
	return pick("network", arg, p.Networks(), (*pipes.Network).Name,
		func(n *pipes.Network) string { return n.ID().String() })
}

func findIdentity(p *pipes.Platform, arg string) (*pipes.Identity, error) {
	return pick("identity", arg, p.Identities(), (*pipes.Identity).Name,
		func(i *pipes.Identity) string { return i.ID().String() })
}

// findNode matches a node by id prefix or by its location.
func findNode(p *pipes.Platform, arg string) (*pipes.Node, error) {
	return pick("node", arg, p.Nodes(), (*pipes.Node).Location,
		func(n *pipes.Node) string { return n.ID().String() })
}
