package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/pipesnet/pipes"
)

// netcheckJSON is the answer of a NAT check (pipes.NATReport).
type netcheckJSON struct {
	Local        string           `json:"local"`
	Public       []string         `json:"public"`
	BehindNAT    bool             `json:"behind_nat"`
	Mapping      string           `json:"mapping"`
	Filtering    string           `json:"filtering"`
	Observations []observedJSON   `json:"observations"`
	PortHelper   string           `json:"port_helper,omitempty"`
	AddrHelper   string           `json:"addr_helper,omitempty"`
	PortMapping  *portMappingJSON `json:"port_mapping,omitempty"`
	Hint         string           `json:"hint"`
}

// observedJSON is one peer's view of the node's address.
type observedJSON struct {
	Peer     string `json:"peer"`
	PeerAddr string `json:"peer_addr"`
	Observed string `json:"observed"`
}

func describeNATReport(r pipes.NATReport) netcheckJSON {
	j := netcheckJSON{Local: r.Local.String(), Public: []string{}, BehindNAT: r.BehindNAT,
		Mapping: r.Mapping, Filtering: r.Filtering, Observations: []observedJSON{}}
	for _, a := range r.Public {
		j.Public = append(j.Public, a.String())
	}
	for _, o := range r.Observations {
		j.Observations = append(j.Observations, observedJSON{Peer: o.Peer.String(), PeerAddr: o.PeerAddr.String(), Observed: o.Observed.String()})
	}
	if r.PortHelper != (pipes.NodeID{}) {
		j.PortHelper = r.PortHelper.String()
	}
	if r.AddrHelper != (pipes.NodeID{}) {
		j.AddrHelper = r.AddrHelper.String()
	}
	j.PortMapping = describePortMapping(r.PortMapping)
	j.Hint = natHint(r)
	return j
}

// natHint says in a sentence what the report means for direct connections.
func natHint(r pipes.NATReport) string {
	switch {
	case len(r.Observations) == 0:
		return "no peers yet: nothing to compare with"
	case slices.Contains(r.Public, r.PortMapping.External): // listed only when public
		return "the router forwards a public port to this node: others can dial it directly"
	case r.PortMapping.External.IsValid():
		return "the router forwards a port, but its own address is private (another NAT beyond it): hole punching still decides"
	case !r.BehindNAT && r.Filtering == "endpoint-independent":
		return "no NAT and no filtering seen: others can dial this node directly"
	case r.Mapping == "endpoint-dependent":
		return "symmetric NAT: direct connections only with nodes whose NAT keeps one port per socket (with a filtering one, by the hard-NAT punch); with another symmetric NAT, relayed"
	case r.Filtering == "address-and-port-dependent":
		return "NAT that filters: direct connections by hole punching"
	case r.Mapping == "unknown":
		return "fewer than two peers at different addresses: the mapping is unknown"
	}
	return "NAT that does not filter by port: hole punching works"
}

// serveNetcheck adds the NAT check endpoint to the daemon's API.
func serveNetcheck(mux *http.ServeMux, node func(http.ResponseWriter, *http.Request) *pipes.Node) {
	mux.HandleFunc("GET /v1/nodes/{id}/netcheck", func(w http.ResponseWriter, r *http.Request) {
		n := node(w, r)
		if n == nil {
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		defer cancel()
		rep, err := n.CheckNAT(ctx)
		if err != nil {
			apiFail(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(describeNATReport(rep))
	})
}

func (a *app) netcheckCmd() *cobra.Command {
	var node string
	cmd := &cobra.Command{
		Use:   "netcheck",
		Short: "Report the NAT in front of the running node: public addresses, mapping and filtering behaviour, port mapping",
		Long: `Reports what the running node knows of its network: the address of its
socket, the public addresses its peers observe, how its NAT maps (one
public port per socket, or a new one per destination: a symmetric NAT),
how it filters unsolicited packets (a peer sends a probe from another
port, a node that is not a peer sends one from its own address), and the
port mapping at the router (NAT-PMP, PCP or UPnP-IGD). The node needs
peers at two addresses to judge the mapping, and a node that is not its
peer to judge address filtering.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := a.daemonNode(cmd.Context(), node)
			if err != nil {
				return err
			}
			var r netcheckJSON
			if err := apiGet(cmd.Context(), a.dir(), "/v1/nodes/"+n.ID+"/netcheck", &r); err != nil {
				return err
			}
			return a.print(r, func(w io.Writer) {
				fmt.Fprintf(w, "socket:      %s\n", r.Local)
				for _, o := range r.Observations {
					fmt.Fprintf(w, "seen by %s (at %s) as %s\n", o.Peer[:8], o.PeerAddr, o.Observed)
				}
				fmt.Fprintf(w, "public:      %v\n", r.Public)
				fmt.Fprintf(w, "behind NAT:  %v\n", r.BehindNAT)
				fmt.Fprintf(w, "mapping:     %s\n", r.Mapping)
				fmt.Fprintf(w, "filtering:   %s\n", r.Filtering)
				switch pm := r.PortMapping; {
				case pm == nil:
					fmt.Fprintf(w, "port map:    off\n")
				case pm.External != "":
					fmt.Fprintf(w, "port map:    %s %s\n", pm.Protocol, pm.External)
				case pm.Error != "":
					fmt.Fprintf(w, "port map:    none (%s)\n", pm.Error)
				default:
					fmt.Fprintf(w, "port map:    trying\n")
				}
				fmt.Fprintf(w, "%s\n", r.Hint)
			})
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "the local node (default: the only one)")
	return cmd
}
