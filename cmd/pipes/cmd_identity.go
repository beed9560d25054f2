package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/pipesnet/pipes"
)

type identityJSON struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

func (a *app) initCmd() *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create the data directory, and an identity with --name",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withPlatform(func(p *pipes.Platform) error {
				var id *pipes.Identity
				if name != "" {
					var err error
					if id, err = p.AddIdentity(name); err != nil {
						return err
					}
				}
				res := map[string]any{"home": p.Dir()}
				if id != nil {
					res["identity"] = identityJSON{id.ID().String(), id.Name()}
				}
				return a.print(res, func(w io.Writer) {
					fmt.Fprintf(w, "Data directory ready: %s\n", p.Dir())
					if id != nil {
						fmt.Fprintf(w, "Identity %q: %s\n", id.Name(), id.ID())
					}
				})
			})
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "also create an identity with this name")
	return cmd
}

func (a *app) identityCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "identity", Short: "Manage identities"}
	cmd.AddCommand(&cobra.Command{
		Use:   "add NAME",
		Short: "Create an identity (a named Ed25519 key)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withPlatform(func(p *pipes.Platform) error {
				id, err := p.AddIdentity(args[0])
				if err != nil {
					return err
				}
				return a.print(identityJSON{id.ID().String(), id.Name()}, func(w io.Writer) {
					fmt.Fprintf(w, "Identity %q: %s\n", id.Name(), id.ID())
				})
			})
		},
	}, &cobra.Command{
		Use:   "list",
		Short: "List identities",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withPlatform(func(p *pipes.Platform) error {
				var out []identityJSON
				for _, id := range p.Identities() {
					out = append(out, identityJSON{id.ID().String(), id.Name()})
				}
				return a.print(orEmpty(out), func(w io.Writer) {
					if len(out) == 0 {
						fmt.Fprintln(w, "No identities (pipes identity add NAME).")
					}
					for _, i := range out {
						fmt.Fprintf(w, "%s  %s\n", i.ID[:16], i.Name)
					}
				})
			})
		},
	})
	return cmd
}

// orEmpty makes a nil slice print as [] in JSON.
func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
