package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pipesnet/pipes"
)

func (a *app) nodeCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "node", Short: "Add, run and inspect nodes"}
	cmd.AddCommand(a.nodeAddCmd(), a.nodeListCmd(), a.nodeStartCmd(), a.nodeStatusCmd(), a.nodePeersCmd())
	return cmd
}

func (a *app) nodeAddCmd() *cobra.Command {
	var network, ident, listen string
	var degree int
	var heartbeat, offline time.Duration
	var noPortmap bool
	cmd := &cobra.Command{
		Use:   "add LOCATION",
		Short: "Add a node of a network as an identity at a location (e.g. laptop)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withPlatform(func(p *pipes.Platform) error {
				nw, err := findNetwork(p, network)
				if err != nil {
					return err
				}
				id, err := findIdentity(p, ident)
				if err != nil {
					return err
				}
				var opts []pipes.NodeOption
				if listen != "" {
					opts = append(opts, pipes.WithListenAddr(listen))
				}
				if degree > 0 {
					opts = append(opts, pipes.WithTargetDegree(degree))
				}
				if heartbeat > 0 || offline > 0 {
					opts = append(opts, pipes.WithPresenceTiming(heartbeat, offline))
				}
				if noPortmap {
					opts = append(opts, pipes.WithPortMapping(false))
				}
				n, err := p.AddNode(nw, id, args[0], opts...)
				if err != nil {
					return err
				}
				return a.print(describeNode(n), func(w io.Writer) {
					fmt.Fprintf(w, "Node %s: %s@%s in network %q\n", n.ID(), id.Name(), n.Location(), nw.Name())
				})
			})
		},
	}
	cmd.Flags().StringVar(&network, "network", "", "network name or id prefix (default: the only one)")
	cmd.Flags().StringVar(&ident, "identity", "", "identity name or id prefix (default: the only one)")
	cmd.Flags().StringVar(&listen, "listen", "", "UDP host:port to listen on (default from PIPES_LISTEN / PIPES_PORT_START)")
	cmd.Flags().IntVar(&degree, "degree", 0, "direct peers to aim for (default 6)")
	cmd.Flags().DurationVar(&heartbeat, "heartbeat", 0, "how often the node announces itself (default 5s)")
	cmd.Flags().DurationVar(&offline, "offline-after", 0, "silence after which others are reported offline (default 20s)")
	cmd.Flags().BoolVar(&noPortmap, "no-portmap", false, "do not ask the router to forward a port (NAT-PMP, PCP, UPnP) to the node")
	return cmd
}

func (a *app) nodeListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the nodes of this data directory",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out []nodeJSON
			err := a.withPlatform(func(p *pipes.Platform) error {
				for _, n := range p.Nodes() {
					out = append(out, describeNode(n))
				}
				return nil
			})
			if errors.Is(err, pipes.ErrLocked) {
				err = apiGet(cmd.Context(), a.dir(), "/v1/nodes", &out)
			}
			if err != nil {
				return err
			}
			return a.print(orEmpty(out), func(w io.Writer) { printNodes(w, out) })
		},
	}
}

func printNodes(w io.Writer, nodes []nodeJSON) {
	if len(nodes) == 0 {
		fmt.Fprintln(w, "No nodes (pipes node add LOCATION).")
	}
	for _, n := range nodes {
		state := "stopped"
		if n.Active {
			state = fmt.Sprintf("running, %d peers, %d nodes online, listening on %s", n.Peers, n.OnlineNodes, strings.Join(n.ListenAddrs, " "))
			if pm := n.PortMapping; pm != nil && pm.External != "" {
				state += fmt.Sprintf(", port mapping %s (%s)", pm.External, pm.Protocol)
			}
		}
		fmt.Fprintf(w, "%s  %s@%s  network %q  %s\n", n.ID[:16], n.Identity, n.Location, n.Network, state)
	}
}

func (a *app) nodeStartCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "start [NODE...]",
		Short: "Run nodes in the foreground until interrupted (all nodes by default)",
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := a.open()
			if err != nil {
				return err
			}
			defer p.Close()
			nodes := p.Nodes()
			if len(args) > 0 {
				nodes = nil
				for _, arg := range args {
					n, err := findNode(p, arg)
					if err != nil {
						return err
					}
					nodes = append(nodes, n)
				}
			}
			if len(nodes) == 0 {
				return errors.New("no nodes to start: add one with `pipes node add LOCATION`")
			}
			ctx := cmd.Context()
			stopAPI, err := serveAPI(ctx, p)
			if err != nil {
				return err
			}
			defer stopAPI()
			for _, n := range nodes {
				n.AddListener(a.eventPrinter())
				if err := n.Start(ctx); err != nil {
					return fmt.Errorf("node %s: %w", n.ID().String()[:8], err)
				}
				a.event("started", map[string]any{"node": n.ID().String(), "location": n.Location(),
					"network": n.Network().Name(), "listen": fmt.Sprint(n.ListenAddrs())},
					"node %s (%s) of network %q listening on %v", n.ID().String()[:8], n.Location(), n.Network().Name(), n.ListenAddrs())
			}
			<-ctx.Done()
			a.event("stopping", nil, "shutting down")
			return p.Close()
		},
	}
}

// event prints one line: JSON with --json, else a timestamped sentence.
func (a *app) event(kind string, fields map[string]any, format string, args ...any) {
	if a.jsonOut {
		m := map[string]any{"event": kind, "time": time.Now().UTC().Format(time.RFC3339Nano)}
		for k, v := range fields {
			m[k] = v
		}
		a.print(m, nil)
		return
	}
	fmt.Fprintf(a.out, "%s %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

func (a *app) eventPrinter() pipes.NodeListener {
	return &pipes.NodeListenerFuncs{
		ConnectionUpdate: func(c bool, n *pipes.Node) {
			a.event("connection", map[string]any{"node": n.ID().String(), "connected": c},
				"node %s connected to the network: %v", n.ID().String()[:8], c)
		},
		NodeStatusUpdate: func(r pipes.NodeRef, n *pipes.Node) {
			a.event("node", map[string]any{"node": n.ID().String(), "peer_node": r.ID().String(), "name": r.Name(),
				"location": r.Location(), "online": r.IsConnected(), "peer": r.IsPeer()},
				"node %s sees %s@%s (%s): online=%v peer=%v", n.ID().String()[:8], r.Name(), r.Location(), r.ID().String()[:8], r.IsConnected(), r.IsPeer())
		},
	}
}

// daemonNode finds the node arg among the daemon's nodes.
func (a *app) daemonNode(ctx context.Context, arg string) (nodeJSON, error) {
	var nodes []nodeJSON
	if err := apiGet(ctx, a.dir(), "/v1/nodes", &nodes); err != nil {
		return nodeJSON{}, err
	}
	return pick("node", arg, nodes, func(n nodeJSON) string { return n.Location }, func(n nodeJSON) string { return n.ID })
}

func (a *app) nodeStatusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status [NODE]",
		Short: "Show a node's state (asks the running daemon if there is one)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := a.daemonNode(cmd.Context(), first(args))
			if errors.Is(err, errNoDaemon) {
				err = a.withPlatform(func(p *pipes.Platform) error {
					nd, err := findNode(p, first(args))
					if err == nil {
						n = describeNode(nd)
					}
					return err
				})
			}
			if err != nil {
				return err
			}
			return a.print(n, func(w io.Writer) { printNodes(w, []nodeJSON{n}) })
		},
	}
}

func (a *app) nodePeersCmd() *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "peers [NODE]",
		Short: "List a running node's direct peers (--all: every online node)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := a.daemonNode(cmd.Context(), first(args))
			if err != nil {
				return err
			}
			what := "peers"
			if all {
				what = "nodes"
			}
			var refs []refJSON
			if err := apiGet(cmd.Context(), a.dir(), "/v1/nodes/"+n.ID+"/"+what, &refs); err != nil {
				return err
			}
			return a.print(orEmpty(refs), func(w io.Writer) {
				if len(refs) == 0 {
					fmt.Fprintf(w, "Node %s has no %s yet.\n", n.ID[:8], what)
				}
				for _, r := range refs {
					kind := "peer"
					if !r.Peer {
						kind = "via mesh"
					}
					identity := ""
					if r.IdentityID != "" {
						identity = "  identity " + r.IdentityID[:16]
					}
					fmt.Fprintf(w, "%s  %s@%s  %s  v%s%s  (%s)\n", r.ID[:16], r.Name, r.Location, kind, r.Version, identity, describePathText(r.Path))
				}
			})
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "every online node, not only direct peers")
	return cmd
}

// describePathText says how a node is reached, for people.
func describePathText(p *pathJSON) string {
	if p == nil {
		return "no path"
	}
	how := "direct"
	if !p.Direct {
		how = "via " + p.Via[:8]
	}
	return fmt.Sprintf("%s, rtt %.2f ms, %s out, %s in", how, p.RTTMs, bytesText(p.BytesSent), bytesText(p.BytesReceived))
}

func bytesText(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func (a *app) pingCmd() *cobra.Command {
	var node string
	var count int
	cmd := &cobra.Command{
		Use:   "ping NODE",
		Short: "Show the path to a node (direct or through which relay) and the round-trip time of a few pings",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := a.daemonNode(cmd.Context(), node)
			if err != nil {
				return err
			}
			var p pingJSON
			path := "/v1/nodes/" + n.ID + "/ping/" + url.PathEscape(args[0]) + "?count=" + strconv.Itoa(count)
			if err := apiGet(cmd.Context(), a.dir(), path, &p); err != nil {
				return err
			}
			return a.print(p, func(w io.Writer) {
				fmt.Fprintf(w, "%s@%s (%s): %s\n", p.Name, p.Location, p.ID[:16], describePathText(p.Path))
				for i, rtt := range p.RTTMs {
					fmt.Fprintf(w, "ping %d: %.2f ms\n", i+1, rtt)
				}
				if p.Lost > 0 {
					fmt.Fprintf(w, "%d of %d pings lost\n", p.Lost, p.Lost+len(p.RTTMs))
				}
			})
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "the local node (default: the only one)")
	cmd.Flags().IntVarP(&count, "count", "c", 3, "pings to send (1 to 100)")
	return cmd
}
