package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pipesnet/pipes"
)

type networkJSON struct {
	ID        string   `json:"id"`
	Name      string   `json:"name"`
	Bootstrap bool     `json:"bootstrap"`
	HasSecret bool     `json:"has_secret"`
	Gateways  []string `json:"gateways"`
}

func netJSON(n *pipes.Network) networkJSON {
	j := networkJSON{ID: n.ID().String(), Name: n.Name(), Bootstrap: n.IsBootstrap(), HasSecret: n.HasSecret(), Gateways: []string{}}
	for _, g := range n.Gateways() {
		j.Gateways = append(j.Gateways, g.String())
	}
	return j
}

func (a *app) networkCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "network", Short: "Create and join networks"}
	cmd.AddCommand(a.networkCreateCmd(), a.networkAddCmd(), a.networkListCmd(), a.networkSetSecretCmd())
	return cmd
}

func (a *app) networkCreateCmd() *cobra.Command {
	var (
		out       string
		gateways  []string
		bootstrap bool
		fast      bool
		sec       secretFlags
	)
	cmd := &cobra.Command{
		Use:   "create NAME --out FILE",
		Short: "Write a new signed netfile (the secret is asked for, never stored)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return fmt.Errorf("say where to write the netfile: --out FILE")
			}
			secret, err := sec.read(a, true)
			if err != nil {
				return err
			}
			spec := pipes.NetworkSpec{Name: args[0], Secret: secret, Gateways: gateways, Bootstrap: bootstrap}
			if fast {
				spec.KDF = pipes.FastKDF
			}
			nf, err := pipes.CreateNetwork(out, spec)
			if err != nil {
				return err
			}
			return a.print(map[string]any{"id": nf.ID.String(), "name": nf.Name, "netfile": nf.Path, "admin_key": nf.AdminKeyPath}, func(w io.Writer) {
				fmt.Fprintf(w, "Network %q (%s) written to %s\n", nf.Name, nf.ID, nf.Path)
				fmt.Fprintf(w, "Admin key: %s (keep it private)\n", nf.AdminKeyPath)
			})
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "netfile to write")
	cmd.Flags().StringSliceVar(&gateways, "gateway", nil, "gateway host:port (repeatable)")
	cmd.Flags().BoolVar(&bootstrap, "bootstrap", false, "make a bootstrap network")
	cmd.Flags().BoolVar(&fast, "fast-kdf", false, "cheapest Argon2id setting (tests and demos only)")
	sec.add(cmd)
	return cmd
}

func (a *app) networkAddCmd() *cobra.Command {
	var sec secretFlags
	var setSecret bool
	cmd := &cobra.Command{
		Use:   "add NETFILE",
		Short: "Add a network from its netfile",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withPlatform(func(p *pipes.Platform) error {
				n, err := p.AddNetwork(args[0])
				if err != nil {
					return err
				}
				if setSecret {
					if err := a.setSecret(n, &sec); err != nil {
						return err
					}
				}
				return a.print(netJSON(n), func(w io.Writer) {
					fmt.Fprintf(w, "Network %q added (%s)\n", n.Name(), n.ID())
					if !n.HasSecret() {
						fmt.Fprintf(w, "Next: pipes network set-secret %s\n", n.Name())
					}
				})
			})
		},
	}
	cmd.Flags().BoolVar(&setSecret, "set-secret", false, "also set the secret")
	sec.add(cmd)
	return cmd
}

func (a *app) setSecret(n *pipes.Network, sec *secretFlags) error {
	secret, err := sec.read(a, false)
	if err != nil {
		return err
	}
	ok, err := n.SetSecret(secret)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w for network %q", pipes.ErrWrongSecret, n.Name())
	}
	return nil
}

func (a *app) networkListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List networks",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withPlatform(func(p *pipes.Platform) error {
				var out []networkJSON
				for _, n := range p.Networks() {
					out = append(out, netJSON(n))
				}
				return a.print(orEmpty(out), func(w io.Writer) {
					if len(out) == 0 {
						fmt.Fprintln(w, "No networks (pipes network add NETFILE).")
					}
					for _, n := range out {
						flags := []string{}
						if n.Bootstrap {
							flags = append(flags, "bootstrap")
						}
						if !n.HasSecret {
							flags = append(flags, "no secret")
						}
						fmt.Fprintf(w, "%s  %-20s gateways: %s  %s\n", n.ID[:16], n.Name, strings.Join(n.Gateways, ","), strings.Join(flags, ","))
					}
				})
			})
		},
	}
}

func (a *app) networkSetSecretCmd() *cobra.Command {
	var sec secretFlags
	cmd := &cobra.Command{
		Use:   "set-secret [NETWORK]",
		Short: "Set a network's secret (checked against the netfile)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withPlatform(func(p *pipes.Platform) error {
				n, err := findNetwork(p, first(args))
				if err != nil {
					return err
				}
				if err := a.setSecret(n, &sec); err != nil {
					return err
				}
				return a.print(netJSON(n), func(w io.Writer) {
					fmt.Fprintf(w, "Secret set for network %q\n", n.Name())
				})
			})
		},
	}
	sec.add(cmd)
	return cmd
}

func first(args []string) string {
	if len(args) > 0 {
		return args[0]
	}
	return ""
}
