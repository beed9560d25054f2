package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// Port forwarding commands: each is one long request to the daemon, which
// forwards while the command runs and stops when it ends.

func (a *app) forwardCmd() *cobra.Command {
	var node, bind string
	cmd := &cobra.Command{
		Use:   "forward LOCAL-PORT NODE:SERVICE",
		Short: "Forward a local TCP port to a service of another node (like ssh -L), until interrupted",
		Long: `Forward a local TCP port to a service of another node, like ssh -L, until
Ctrl-C or SIGTERM.

The running daemon listens on LOCAL-PORT (of 127.0.0.1, or of --bind HOST;
0 picks a free port, printed at once) and joins each TCP connection to a
data connection to SERVICE on NODE (a name, location, name@location or id
prefix), which 'pipes expose' or an application publishes there. When the
command ends, the daemon closes the port and the connections. A connection
that fails (NODE unreachable, SERVICE refused) is reported on standard
error and closed; forwarding goes on. With --json every connection's
events are printed as JSON lines.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			port, err := strconv.Atoi(args[0])
			if err != nil || port < 0 || port > 65535 {
				return fmt.Errorf("local port %q is not a TCP port (0 to 65535)", args[0])
			}
			to, service, ok := strings.Cut(args[1], ":")
			if !ok || to == "" || service == "" {
				return fmt.Errorf("%q is not NODE:SERVICE", args[1])
			}
			n, err := a.daemonNode(cmd.Context(), node)
			if err != nil {
				return err
			}
			var f forwardJSON
			return a.stream(cmd.Context(), "/v1/nodes/"+n.ID+"/forward",
				map[string]any{"bind": bind, "port": port, "to": to, "service": service}, &f, func(w io.Writer) {
					state := ""
					if !f.Online {
						state = ", offline now"
					}
					fmt.Fprintf(w, "Forwarding %s to service %q of %s@%s (%s%s); Ctrl-C to stop.\n", f.Addr, f.Service, f.Name, f.Location, f.Node[:8], state)
				})
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "node id prefix or location (default: the only one)")
	cmd.Flags().StringVar(&bind, "bind", "127.0.0.1", "local address to listen on (0.0.0.0 for every interface)")
	return cmd
}

func (a *app) exposeCmd() *cobra.Command {
	var node string
	var allow []string
	cmd := &cobra.Command{
		Use:   "expose SERVICE HOST:PORT",
		Short: "Publish a local TCP service to the network as SERVICE of this node, until interrupted",
		Long: `Publish a local TCP service to the network as SERVICE of the running node,
until Ctrl-C or SIGTERM.

The daemon accepts the data connections other nodes open to SERVICE
('pipes forward PORT NODE:SERVICE', or an application's Dial) and joins each
to a TCP connection to HOST:PORT. Every member of the network may connect,
or with --allow only the nodes and identities listed: node ids or identity
ids (hex; a prefix of one this node knows, or a full id). A node that is
not allowed is refused before any data flows. When the command ends the
daemon stops accepting and closes the connections. With --json every
connection's events are printed as JSON lines.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, _, err := net.SplitHostPort(args[1]); err != nil {
				return fmt.Errorf("%q is not HOST:PORT (e.g. 127.0.0.1:8080)", args[1])
			}
			n, err := a.daemonNode(cmd.Context(), node)
			if err != nil {
				return err
			}
			var e exposeJSON
			return a.stream(cmd.Context(), "/v1/nodes/"+n.ID+"/expose",
				map[string]any{"service": args[0], "target": args[1], "allow": orEmpty(allow)}, &e, func(w io.Writer) {
					who := "every member of the network may connect"
					if len(e.Allowed) > 0 {
						who = "only these may connect:"
					}
					fmt.Fprintf(w, "Exposing %s as service %q of node %s; %s\n", e.Target, e.Service, e.Node[:8], who)
					for _, al := range e.Allowed {
						name := al.Name
						if al.Location != "" {
							name += "@" + al.Location
						}
						if al.Kind == "unknown" {
							name = "(not seen yet: allowed as a node or an identity)"
						}
						fmt.Fprintf(w, "  %-8s %s  %s\n", al.Kind, al.ID[:16], name)
					}
					fmt.Fprintln(w, "Ctrl-C to stop.")
				})
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "node id prefix or location (default: the only one)")
	cmd.Flags().StringSliceVar(&allow, "allow", nil, "allow only this node or identity id (hex, or a prefix of a known one); repeatable")
	return cmd
}

// stream sends req to a streaming endpoint of the daemon, decodes the
// first line into first and prints it (human, or as JSON), then prints the
// connection events until ctx ends (nil) or the daemon ends the stream (an
// error).
func (a *app) stream(ctx context.Context, path string, req any, first any, human func(w io.Writer)) error {
	body, _ := json.Marshal(req)
	resp, err := apiDo(ctx, a.dir(), http.MethodPost, path, "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	if err := dec.Decode(first); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("the daemon's answer: %w", err)
	}
	if a.jsonOut {
		json.NewEncoder(a.out).Encode(first)
	} else {
		human(a.out)
	}
	for {
		var e connEvent
		if err := dec.Decode(&e); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, io.EOF) {
				err = errors.New("the daemon stopped")
			}
			return err
		}
		switch {
		case a.jsonOut:
			json.NewEncoder(a.out).Encode(e)
		case e.Event == "error":
			from := ""
			if e.From != "" {
				from = " from " + e.From
				if len(e.From) == 64 && isHex(e.From) {
					from = " from node " + e.From[:8]
				}
				if e.FromName != "" {
					from += " (" + e.FromName + ")"
				}
			}
			what := fmt.Sprintf("connection %d%s failed", e.Conn, from)
			if e.Conn == 0 {
				what = "accepting a connection failed"
			}
			fmt.Fprintf(a.errOut, "%s %s: %s\n", e.Time.Local().Format(time.TimeOnly), what, strings.TrimPrefix(e.Error, "pipes: "))
		}
		if e.Event == "stopped" {
			return errors.New(e.Error)
		}
	}
}
