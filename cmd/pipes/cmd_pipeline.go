package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/pipesnet/pipes"
)

// The pipeline commands talk to the running daemon (pipes node start),
// which holds the data directory.

func (a *app) pipelineCmd() *cobra.Command {
	var node string
	cmd := &cobra.Command{Use: "pipeline", Short: "Create and list pipelines of a running node"}
	cmd.PersistentFlags().StringVar(&node, "node", "", "node id prefix or location (default: the only one)")
	var to string
	var persistent bool
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a pipeline: live, or --persistent; broadcast, or point-to-point with --to NODE",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := a.daemonNode(cmd.Context(), node)
			if err != nil {
				return err
			}
			body, _ := json.Marshal(map[string]any{"name": args[0], "to": to, "persistent": persistent})
			resp, err := apiDo(cmd.Context(), a.dir(), http.MethodPost, "/v1/nodes/"+n.ID+"/pipelines", "application/json", bytes.NewReader(body))
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			var p pipelineJSON
			if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
				return err
			}
			return a.print(p, func(w io.Writer) { fmt.Fprintf(w, "Pipeline %q: %s\n", p.Name, p.ID) })
		},
	}
	create.Flags().StringVar(&to, "to", "", "make a point-to-point pipeline with this node (id prefix)")
	create.Flags().BoolVar(&persistent, "persistent", false, "keep the history on every node and catch up nodes that were away")
	list := &cobra.Command{
		Use:   "list",
		Short: "List the pipelines the node knows",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			n, err := a.daemonNode(cmd.Context(), node)
			if err != nil {
				return err
			}
			var ps []pipelineJSON
			if err := apiGet(cmd.Context(), a.dir(), "/v1/nodes/"+n.ID+"/pipelines", &ps); err != nil {
				return err
			}
			return a.print(orEmpty(ps), func(w io.Writer) {
				if len(ps) == 0 {
					fmt.Fprintln(w, "No pipelines (pipes pipeline create NAME).")
				}
				for _, p := range ps {
					fmt.Fprintf(w, "%s  %-20s %s  delivered %d, dropped %d, rejected %d\n", p.ID[:16], p.Name, kindOf(p), p.Delivered, p.Dropped, p.Rejected)
				}
			})
		},
	}
	info := &cobra.Command{
		Use:   "info PIPELINE",
		Short: "Show a pipeline: its kind, counters, and for a persistent one the log size and sync state",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := a.daemonNode(cmd.Context(), node)
			if err != nil {
				return err
			}
			var p pipelineJSON
			if err := apiGet(cmd.Context(), a.dir(), "/v1/nodes/"+n.ID+"/pipelines/"+url.PathEscape(args[0]), &p); err != nil {
				return err
			}
			return a.print(p, func(w io.Writer) {
				fmt.Fprintf(w, "Pipeline:  %s\nID:        %s\nKind:      %s\n", p.Name, p.ID, kindOf(p))
				fmt.Fprintf(w, "Delivered: %d\nDropped:   %d\nRejected:  %d\n", p.Delivered, p.Dropped, p.Rejected)
				if p.Persistent {
					state := "synchronized"
					if p.Synchronizing {
						state = "synchronizing"
					}
					fmt.Fprintf(w, "Logged:    %d packets, %d bytes of data\nSync:      %s\n", p.Logged, p.LoggedBytes, state)
				}
			})
		},
	}
	cmd.AddCommand(create, list, info)
	return cmd
}

// kindOf describes a pipeline's kind in a few words.
func kindOf(p pipelineJSON) string {
	kind := "live"
	if p.Persistent {
		kind = "persistent"
	}
	if p.PointToPoint {
		return kind + " point-to-point with " + p.OtherNode[:8]
	}
	return kind + " broadcast"
}

func (a *app) getCmd() *cobra.Command {
	var node string
	var rawData bool
	cmd := &cobra.Command{
		Use:   "get PACKET-ID",
		Short: "Print a packet of the node's persistent pipelines (its data only with --data)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := a.daemonNode(cmd.Context(), node)
			if err != nil {
				return err
			}
			var p struct {
				Pipeline string `json:"pipeline"`
				packetJSON
			}
			if err := apiGet(cmd.Context(), a.dir(), "/v1/nodes/"+n.ID+"/packets/"+url.PathEscape(args[0]), &p); err != nil {
				return err
			}
			if rawData {
				_, err := a.out.Write(p.Data)
				return err
			}
			return a.print(p, func(w io.Writer) {
				fmt.Fprintf(w, "Packet:   %s\nPipeline: %s\nLogID:    %d\nSender:   %s (seq %d)\nTime:     %s\nType:     %d\nData:     %s\n",
					p.ID, p.Pipeline, p.LogID, p.Sender, p.Seq, p.Time.Local().Format(time.RFC3339Nano), p.Type, printable(p.Data))
			})
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "node id prefix or location (default: the only one)")
	cmd.Flags().BoolVar(&rawData, "data", false, "write only the packet's data, as is, to standard output")
	return cmd
}

func (a *app) putCmd() *cobra.Command {
	var node, to string
	var typ int
	var lines bool
	cmd := &cobra.Command{
		Use:   "put PIPELINE DATA|-",
		Short: "Put a packet on a pipeline (- reads it from standard input)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := a.daemonNode(cmd.Context(), node)
			if err != nil {
				return err
			}
			q := url.Values{}
			if cmd.Flags().Changed("type") {
				q.Set("type", strconv.Itoa(typ))
			}
			if to != "" {
				q.Set("to", to)
			}
			path := "/v1/nodes/" + n.ID + "/pipelines/" + url.PathEscape(args[0]) + "/packets?" + q.Encode()
			put := func(data []byte) (string, error) {
				resp, err := apiDo(cmd.Context(), a.dir(), http.MethodPost, path, "application/octet-stream", bytes.NewReader(data))
				if err != nil {
					return "", err
				}
				defer resp.Body.Close()
				var r struct{ ID string }
				return r.ID, json.NewDecoder(resp.Body).Decode(&r)
			}
			var packets [][]byte
			switch {
			case args[1] != "-":
				packets = [][]byte{[]byte(args[1])}
			case lines:
				sc := bufio.NewScanner(a.in)
				sc.Buffer(make([]byte, 64<<10), pipes.MaxPacketSize)
				for sc.Scan() {
					packets = append(packets, bytes.Clone(sc.Bytes()))
				}
				if err := sc.Err(); err != nil {
					return err
				}
			default:
				data, err := io.ReadAll(io.LimitReader(a.in, pipes.MaxPacketSize+1))
				if err != nil {
					return err
				}
				if len(data) > pipes.MaxPacketSize {
					return fmt.Errorf("standard input is larger than a packet (%d bytes)", pipes.MaxPacketSize)
				}
				packets = [][]byte{data}
			}
			var ids []string
			for _, p := range packets {
				id, err := put(p)
				if err != nil {
					return err
				}
				ids = append(ids, id)
			}
			return a.print(orEmpty(ids), func(w io.Writer) {
				for _, id := range ids {
					fmt.Fprintln(w, id)
				}
			})
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "node id prefix or location (default: the only one)")
	cmd.Flags().StringVar(&to, "to", "", "deliver to this node only (id prefix), end to end encrypted")
	cmd.Flags().IntVar(&typ, "type", 0, "packet type")
	cmd.Flags().BoolVar(&lines, "lines", false, "with -, put each line of standard input as a packet")
	return cmd
}

func (a *app) tailCmd() *cobra.Command {
	var node string
	var since int64
	cmd := &cobra.Command{
		Use:   "tail PIPELINE",
		Short: "Print packets as they arrive on a pipeline, until interrupted",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := a.daemonNode(cmd.Context(), node)
			if err != nil {
				return err
			}
			path := "/v1/nodes/" + n.ID + "/pipelines/" + url.PathEscape(args[0]) + "/tail"
			if cmd.Flags().Changed("since") {
				path += "?since=" + strconv.FormatInt(since, 10)
			}
			resp, err := apiDo(cmd.Context(), a.dir(), http.MethodGet, path, "", nil)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			dec := json.NewDecoder(resp.Body)
			for {
				var p packetJSON
				if err := dec.Decode(&p); err != nil {
					if errors.Is(err, io.EOF) || cmd.Context().Err() != nil {
						return nil
					}
					return err
				}
				if a.jsonOut {
					json.NewEncoder(a.out).Encode(p)
				} else {
					logID := ""
					if p.LogID >= 0 {
						logID = fmt.Sprintf("#%d ", p.LogID)
					}
					fmt.Fprintf(a.out, "%s%s %s type %d: %s\n", logID, p.Time.Local().Format("15:04:05.000"), p.Sender[:8], p.Type, printable(p.Data))
				}
			}
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "node id prefix or location (default: the only one)")
	cmd.Flags().Int64Var(&since, "since", -1, "persistent pipelines: first print the logged packets after this LogID (-1: the whole history)")
	return cmd
}
