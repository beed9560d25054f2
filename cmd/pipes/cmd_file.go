package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// The file commands talk to the running daemon (pipes node start), whose
// node keeps the files; paths are opened and written by the daemon, which
// runs on this machine as the same user (see api_files.go).

func (a *app) fileCmd() *cobra.Command {
	var node string
	cmd := &cobra.Command{
		Use:   "file",
		Short: "Add, fetch, list and keep files on the network (through a running node)",
		Long: `Add, fetch, list and keep files on the network, through a running node.

A file's id is the BLAKE3 root of its content: the same content has the same
id on every node. A node that holds a file announces it, and a fetch takes
it from every holder at once, verifying each chunk. ID arguments are the
full id, or a prefix of the id of a file the node keeps.`,
	}
	cmd.PersistentFlags().StringVar(&node, "node", "", "node id prefix or location (default: the only one)")
	cmd.AddCommand(a.fileAddCmd(&node), a.fileGetCmd(&node), a.fileListCmd(&node), a.fileStatCmd(&node),
		a.fileReplicateCmd(&node), a.fileArchiveCmd(&node), a.fileRemoveCmd(&node))
	return cmd
}

// filesPath is the API path of the files of the daemon's node arg, or of
// one file of them.
func (a *app) filesPath(ctx context.Context, node string, file ...string) (string, error) {
	n, err := a.daemonNode(ctx, node)
	if err != nil {
		return "", err
	}
	p := "/v1/nodes/" + n.ID + "/files"
	for _, f := range file {
		p += "/" + url.PathEscape(f)
	}
	return p, nil
}

// postJSON sends the daemon req as JSON and decodes its answer into out.
func (a *app) postJSON(ctx context.Context, path string, req, out any) error {
	body, _ := json.Marshal(req)
	resp, err := apiDo(ctx, a.dir(), http.MethodPost, path, "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(out)
}

func (a *app) fileAddCmd(node *string) *cobra.Command {
	var readers []string
	cmd := &cobra.Command{
		Use:   "add PATH",
		Short: "Add a file: the node imports it, holds it and announces it; prints its id",
		Long: `Add a file: the node imports it, holds it and announces it; prints its id.

The daemon reads the file itself (relative paths are taken from the current
directory). --readers ID... restricts reading to the nodes of these
identities (full ids, or a name or id prefix of an identity the node knows):
other nodes may hold and serve the file's ciphertext, but cannot read it.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := a.filesPath(cmd.Context(), *node)
			if err != nil {
				return err
			}
			abs, err := filepath.Abs(args[0])
			if err != nil {
				return err
			}
			var f fileJSON
			if err := a.postJSON(cmd.Context(), path, map[string]any{"path": abs, "readers": readers}, &f); err != nil {
				return err
			}
			return a.print(f, func(w io.Writer) { fmt.Fprintln(w, f.ID) })
		},
	}
	cmd.Flags().StringSliceVar(&readers, "readers", nil, "only the nodes of these identities can read it (repeat the flag or separate with commas)")
	return cmd
}

func (a *app) fileGetCmd(node *string) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "get ID [--out PATH]",
		Short: "Fetch a file from every node that holds it, and write it to PATH (or to standard output)",
		Long: `Fetch a file from every node that holds it at once, verifying each chunk,
and write it to PATH, or without --out to standard output.

The daemon writes PATH itself (relative paths are taken from the current
directory; a directory gets the file under its name). A progress bar shows
on standard error when it is a terminal; with --json, the progress events
are printed instead, one JSON object a line: {"done":N,"total":N}, and last
one with "result" (or "error"). Ctrl-C stops the fetch: the node keeps the
verified chunks, and the next 'pipes file get' resumes from there.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" && a.jsonOut {
				return errors.New("--json prints the progress events on standard output: give --out PATH for the file")
			}
			ctx := cmd.Context()
			path, err := a.filesPath(ctx, *node, args[0])
			if err != nil {
				return err
			}
			abs := ""
			if out != "" {
				if abs, err = filepath.Abs(out); err != nil {
					return err
				}
			}
			final, err := a.fetch(ctx, path, abs)
			if err != nil {
				if ctx.Err() != nil {
					return fmt.Errorf("interrupted: the node keeps the chunks it verified, and `pipes file get %s` resumes from there", args[0])
				}
				return err
			}
			if out == "" {
				return a.copyData(ctx, path+"/data")
			}
			if a.jsonOut {
				return nil // the events are printed
			}
			r := final.Result
			fmt.Fprintf(a.out, "Fetched %s (%s, %s) from %d holder(s) to %s\n", r.Name, r.ID[:16], bytesText(uint64(r.Size)), r.Holders, r.Path)
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "have the daemon write the file here (default: standard output)")
	return cmd
}

// fetch has the daemon fetch the file at path (and write it to out, if
// not empty), shows its progress, and returns the final event.
func (a *app) fetch(ctx context.Context, path, out string) (fetchEvent, error) {
	body, _ := json.Marshal(map[string]string{"path": out})
	resp, err := apiDo(ctx, a.dir(), http.MethodPost, path+"/fetch", "application/json", bytes.NewReader(body))
	if err != nil {
		return fetchEvent{}, err
	}
	defer resp.Body.Close()
	var each func(fetchEvent)
	switch {
	case a.jsonOut:
		enc := json.NewEncoder(a.out)
		each = func(ev fetchEvent) { enc.Encode(ev) }
	case terminal(a.errOut):
		bar := newFetchBar(a.errOut)
		defer bar.stop()
		each = bar.show
	}
	return decodeEvents(resp.Body, each)
}

// terminal reports whether w is a terminal.
func terminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// fetchBar draws a fetch's progress bar, made at the first event (which
// gives the size).
type fetchBar struct {
	w   io.Writer
	bar *progressbar.ProgressBar
}

func newFetchBar(w io.Writer) *fetchBar { return &fetchBar{w: w} }

func (p *fetchBar) show(ev fetchEvent) {
	if p.bar == nil {
		if ev.final() && ev.Error != "" {
			return
		}
		p.bar = progressbar.NewOptions64(ev.Total,
			progressbar.OptionSetWriter(p.w),
			progressbar.OptionSetDescription("fetching"),
			progressbar.OptionShowBytes(true),
			progressbar.OptionSetWidth(30),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionClearOnFinish())
	}
	if ev.Result != nil {
		p.bar.Finish()
		return
	}
	p.bar.Set64(ev.Done)
}

// stop leaves the terminal's line to what follows.
func (p *fetchBar) stop() {
	if p.bar != nil && !p.bar.IsFinished() {
		p.bar.Exit()
		fmt.Fprintln(p.w)
	}
}

func (a *app) fileListCmd(node *string) *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the files the node keeps, complete or being fetched",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, err := a.filesPath(cmd.Context(), *node)
			if err != nil {
				return err
			}
			var fs []fileJSON
			if err := apiGet(cmd.Context(), a.dir(), path, &fs); err != nil {
				return err
			}
			return a.print(orEmpty(fs), func(w io.Writer) {
				if len(fs) == 0 {
					fmt.Fprintln(w, "No files (pipes file add PATH).")
				}
				for _, f := range fs {
					state := "complete"
					if !f.Local {
						state = "partial"
					}
					fmt.Fprintf(w, "%s  %10s  %-8s  %d holder(s)  %s\n", f.ID[:16], bytesText(uint64(f.Size)), state, len(f.Holders), f.Name)
				}
			})
		},
	}
}

func (a *app) fileStatCmd(node *string) *cobra.Command {
	return &cobra.Command{
		Use:   "stat ID",
		Short: "Show a file: name, size, readers, holders, copies kept, archive shards",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := a.filesPath(cmd.Context(), *node, args[0])
			if err != nil {
				return err
			}
			var f fileJSON
			if err := apiGet(cmd.Context(), a.dir(), path, &f); err != nil {
				return err
			}
			return a.print(f, func(w io.Writer) { printFile(w, f) })
		},
	}
}

// printFile prints a file's description for people.
func printFile(w io.Writer, f fileJSON) {
	local := "no (pipes file get " + f.ID[:16] + ")"
	if f.Local {
		local = "yes, complete on this node"
	}
	fmt.Fprintf(w, "File:     %s\nName:     %s\nSize:     %d bytes (%s)\nLocal:    %s\n", f.ID, f.Name, f.Size, bytesText(uint64(f.Size)), local)
	if len(f.Readers) == 0 {
		fmt.Fprintln(w, "Readers:  every node of the network")
	} else {
		var rs []string
		for _, r := range f.Readers {
			rs = append(rs, whoText(r.Name, "", r.ID))
		}
		can := "no"
		if f.Readable {
			can = "yes"
		}
		fmt.Fprintf(w, "Readers:  %s (this node can read it: %s)\n", strings.Join(rs, ", "), can)
	}
	fmt.Fprintf(w, "Holders:  %d\n", len(f.Holders))
	printHolders(w, "          ", f.Holders)
	if f.Copies > 0 {
		fmt.Fprintf(w, "Copies:   %d kept by the network\n", f.Copies)
	} else {
		fmt.Fprintln(w, "Copies:   no duty (pipes file replicate)")
	}
	if a := f.Archive; a != nil {
		how := ""
		if a.Compressed {
			how = ", compressed"
		}
		fmt.Fprintf(w, "Archive:  %d data + %d parity shards%s; any %d restore it\n", a.Data, a.Parity, how, a.Data)
		for _, s := range a.Shards {
			fmt.Fprintf(w, "          shard %d  %s  %d holder(s)\n", s.Index, s.ID[:16], len(s.Holders))
			printHolders(w, "            ", s.Holders)
		}
	} else {
		fmt.Fprintln(w, "Archive:  none (pipes file archive)")
	}
}

func printHolders(w io.Writer, indent string, hs []holderJSON) {
	for _, h := range hs {
		fmt.Fprintf(w, "%s%s  %s\n", indent, h.ID[:16], whoText(h.Name, h.Location, ""))
	}
}

// whoText names a node or an identity for people.
func whoText(name, location, id string) string {
	switch {
	case name != "" && location != "":
		return name + "@" + location
	case name != "" && id != "":
		return name + " (" + id[:16] + ")"
	case name != "":
		return name
	case id != "":
		return id[:16]
	}
	return "(a node this one has not seen)"
}

func (a *app) fileReplicateCmd(node *string) *cobra.Command {
	var copies int
	cmd := &cobra.Command{
		Use:   "replicate ID --copies N",
		Short: "Have the network keep N copies of a file on online nodes, repairing them as holders leave",
		Long: `Have the network keep at least N copies of a file on online nodes from now on:
nodes take copies until N hold it, and take new ones when holders leave for
good. The nodes store the duty; --copies 0 ends it. The command waits until N
nodes hold the file; Ctrl-C stops the wait, not the duty.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("copies") {
				return errors.New("give --copies N")
			}
			path, err := a.filesPath(cmd.Context(), *node, args[0])
			if err != nil {
				return err
			}
			var f fileJSON
			if err := a.postJSON(cmd.Context(), path+"/replicate", map[string]int{"copies": copies}, &f); err != nil {
				if cmd.Context().Err() != nil {
					return errors.New("interrupted: the duty stays, and the network goes on meeting it")
				}
				return err
			}
			return a.print(f, func(w io.Writer) {
				fmt.Fprintf(w, "%d node(s) hold %s; the network keeps %d copies.\n", len(f.Holders), f.Name, f.Copies)
			})
		},
	}
	cmd.Flags().IntVar(&copies, "copies", 0, "how many copies the network keeps (0 ends the duty)")
	return cmd
}

func (a *app) fileArchiveCmd(node *string) *cobra.Command {
	var data, parity int
	cmd := &cobra.Command{
		Use:   "archive ID --data K --parity M",
		Short: "Store an erasure-coded archive of a file: K+M shards on distinct nodes, any K restore it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("data") || !cmd.Flags().Changed("parity") {
				return errors.New("give --data K and --parity M")
			}
			path, err := a.filesPath(cmd.Context(), *node, args[0])
			if err != nil {
				return err
			}
			var f fileJSON
			if err := a.postJSON(cmd.Context(), path+"/archive", map[string]int{"data": data, "parity": parity}, &f); err != nil {
				return err
			}
			return a.print(f, func(w io.Writer) {
				if f.Archive == nil {
					fmt.Fprintf(w, "Archived %s.\n", f.Name)
					return
				}
				fmt.Fprintf(w, "Archived %s: %d shards on distinct nodes; any %d of them restore it.\n",
					f.Name, len(f.Archive.Shards), f.Archive.Data)
			})
		},
	}
	cmd.Flags().IntVar(&data, "data", 0, "data shards (any this many restore the file)")
	cmd.Flags().IntVar(&parity, "parity", 0, "parity shards (how many shard holders may be lost)")
	return cmd
}

func (a *app) fileRemoveCmd(node *string) *cobra.Command {
	return &cobra.Command{
		Use:   "rm ID",
		Short: "Remove the node's copy of a file and its duty to hold it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := a.filesPath(cmd.Context(), *node, args[0])
			if err != nil {
				return err
			}
			resp, err := apiDo(cmd.Context(), a.dir(), http.MethodDelete, path, "", nil)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			var r struct {
				ID      string `json:"id"`
				Removed bool   `json:"removed"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
				return err
			}
			return a.print(r, func(w io.Writer) { fmt.Fprintf(w, "Removed file %s from this node.\n", r.ID[:16]) })
		},
	}
}
