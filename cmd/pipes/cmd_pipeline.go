package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/pipesnet/pipes"
)

// The pipeline commands talk to the running daemon (pipes node start),
// which holds the data directory.

func (a *app) pipelineCmd() *cobra.Command {
	var node string
	cmd := &cobra.Command{Use: "pipeline", Short: "Create, list and manage pipelines of a running node"}
	cmd.PersistentFlags().StringVar(&node, "node", "", "node id prefix or location (default: the only one)")
	var to, salt string
	var persistent, encrypted, unsalted, ephemeral, realtime bool
	var createSec secretFlags
	createSec.prompt = "Pipeline secret"
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a pipeline: live, or --persistent; broadcast, or point-to-point with --to NODE",
		Long: `Create a pipeline: live, or --persistent; broadcast, or point-to-point with --to NODE.

--encrypted seals every packet with a key derived from a pipeline secret,
asked for at the prompt (or --secret-file, --secret-env); nodes without it
store and forward the packets but cannot read them until
'pipes pipeline secret'. --ephemeral pipelines can be shut down
('pipes pipeline shutdown'). --realtime pipelines are live, carry each packet
as one datagram and, point-to-point, can be mapped to a local UDP port
('pipes udp-map').`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			secretGiven := createSec.file != "" || createSec.env != ""
			switch {
			case !encrypted && (secretGiven || salt != "" || unsalted):
				return errors.New("--secret-file, --secret-env, --salt and --unsalted go with --encrypted")
			case salt != "" && unsalted:
				return errors.New("give --salt or --unsalted, not both")
			case realtime && persistent:
				return errors.New("a realtime pipeline is live: --realtime and --persistent exclude each other")
			}
			n, err := a.daemonNode(cmd.Context(), node)
			if err != nil {
				return err
			}
			req := map[string]any{"name": args[0], "to": to, "persistent": persistent, "encrypted": encrypted,
				"salt": salt, "unsalted": unsalted, "ephemeral": ephemeral, "realtime": realtime}
			if encrypted {
				secret, err := createSec.read(a, true)
				if err != nil {
					return err
				}
				req["secret"] = []byte(secret)
			}
			body, _ := json.Marshal(req)
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
	create.Flags().BoolVar(&encrypted, "encrypted", false, "seal the packets with a pipeline secret (asked for, or --secret-file / --secret-env)")
	create.Flags().StringVar(&salt, "salt", "", "encrypted: the key derivation's salt (up to 64 bytes), shared by every pipeline created with the same secret and salt")
	create.Flags().BoolVar(&unsalted, "unsalted", false, "encrypted: derive the key from the secret alone (only for a random secret of 16 bytes or more)")
	create.Flags().BoolVar(&ephemeral, "ephemeral", false, "let the pipeline be shut down (pipes pipeline shutdown)")
	create.Flags().BoolVar(&realtime, "realtime", false, "live only: one datagram a packet, no retransmission")
	createSec.add(create)
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
		Short: "Show a pipeline: its kind, counters, log size and sync state, secret holders, UDP port map",
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
			return a.print(p, func(w io.Writer) { printPipeline(w, p) })
		},
	}
	var sec secretFlags
	sec.prompt = "Pipeline secret"
	secret := &cobra.Command{
		Use:   "secret PIPELINE",
		Short: "Give the node the secret of an encrypted pipeline (asked for, or --secret-file / --secret-env)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := a.daemonNode(cmd.Context(), node)
			if err != nil {
				return err
			}
			s, err := sec.read(a, false)
			if err != nil {
				return err
			}
			body, _ := json.Marshal(map[string]any{"secret": []byte(s)})
			resp, err := apiDo(cmd.Context(), a.dir(), http.MethodPost, "/v1/nodes/"+n.ID+"/pipelines/"+url.PathEscape(args[0])+"/secret", "application/json", bytes.NewReader(body))
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			var p pipelineJSON
			if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
				return err
			}
			return a.print(p, func(w io.Writer) {
				fmt.Fprintf(w, "Secret set for pipeline %q: this node can read its packets, those it stored included.\n", p.Name)
			})
		},
	}
	sec.add(secret)
	shutdown := &cobra.Command{
		Use:   "shutdown PIPELINE",
		Short: "Shut an ephemeral pipeline down: every node drops it and what it stored of it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := a.daemonNode(cmd.Context(), node)
			if err != nil {
				return err
			}
			resp, err := apiDo(cmd.Context(), a.dir(), http.MethodPost, "/v1/nodes/"+n.ID+"/pipelines/"+url.PathEscape(args[0])+"/shutdown", "", nil)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			var r struct {
				ID   string `json:"id"`
				Name string `json:"name"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
				return err
			}
			return a.print(r, func(w io.Writer) { fmt.Fprintf(w, "Pipeline %q shut down.\n", r.Name) })
		},
	}
	cmd.AddCommand(create, list, info, secret, shutdown)
	return cmd
}

// printPipeline prints pipeline info for people.
func printPipeline(w io.Writer, p pipelineJSON) {
	fmt.Fprintf(w, "Pipeline:  %s\nID:        %s\nKind:      %s\n", p.Name, p.ID, kindOf(p))
	if p.Closed {
		fmt.Fprintln(w, "State:     shut down")
	}
	fmt.Fprintf(w, "Delivered: %d\nDropped:   %d\nRejected:  %d\n", p.Delivered, p.Dropped, p.Rejected)
	if p.Persistent {
		state := "synchronized"
		if p.Synchronizing {
			state = "synchronizing"
		}
		fmt.Fprintf(w, "Logged:    %d packets, %d bytes of data\nSync:      %s\n", p.Logged, p.LoggedBytes, state)
	}
	if p.Encrypted {
		has := "this node does not have it (pipes pipeline secret " + p.Name + ")"
		if p.HasSecret {
			has = "this node has it"
		}
		fmt.Fprintf(w, "Secret:    %s\n", has)
		fmt.Fprintf(w, "Holders:   %d node(s) proved they have the secret\n", len(p.SecretHolders))
		for _, h := range p.SecretHolders {
			who := "(a node this one has not seen)"
			if h.Name != "" || h.Location != "" {
				who = h.Name + "@" + h.Location
			}
			fmt.Fprintf(w, "           %s  %s\n", h.ID[:16], who)
		}
	}
	if p.Realtime && p.PointToPoint {
		addr := "none (pipes udp-map " + p.Name + ")"
		if p.UDPAddr != "" {
			addr = p.UDPAddr
		}
		fmt.Fprintf(w, "UDP map:   %s\n", addr)
	}
}

// kindOf describes a pipeline's kind in a few words.
func kindOf(p pipelineJSON) string {
	kind := "live"
	switch {
	case p.Persistent:
		kind = "persistent"
	case p.Realtime:
		kind = "realtime"
	}
	for _, f := range []struct {
		on   bool
		word string
	}{{p.Encrypted, "encrypted"}, {p.Ephemeral, "ephemeral"}} {
		if f.on {
			kind = f.word + " " + kind
		}
	}
	if p.PointToPoint {
		return kind + " point-to-point with " + p.OtherNode[:8]
	}
	return kind + " broadcast"
}

func (a *app) getCmd() *cobra.Command {
	var node, outPath string
	var rawData bool
	cmd := &cobra.Command{
		Use:   "get [PIPELINE] PACKET-ID",
		Short: "Print a packet of the node's persistent pipelines; --data: its data only; --out FILE: save its data",
		Long: `Print a packet of the node's persistent pipelines (of PIPELINE only, if given).

--data writes the packet's data, a file packet's content included, as is to
standard output. --out FILE has the daemon write it to FILE: the daemon runs
on this machine as the same user, and writes the file itself (relative
paths are taken from the current directory).`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if rawData && outPath != "" {
				return errors.New("give --data or --out, not both")
			}
			n, err := a.daemonNode(cmd.Context(), node)
			if err != nil {
				return err
			}
			path := "/v1/nodes/" + n.ID + "/packets/" + url.PathEscape(args[len(args)-1])
			if len(args) == 2 {
				path = "/v1/nodes/" + n.ID + "/pipelines/" + url.PathEscape(args[0]) + "/packets/" + url.PathEscape(args[1])
			}
			switch {
			case rawData:
				return a.copyData(cmd.Context(), path+"/data")
			case outPath != "":
				var wr writtenJSON
				if err := a.postPath(cmd.Context(), path+"/write", outPath, &wr); err != nil {
					return err
				}
				return a.print(wr, func(w io.Writer) {
					what := "data"
					if wr.IsFile {
						what = "file"
					}
					fmt.Fprintf(w, "Wrote the %s of packet %s (%d bytes) to %s\n", what, wr.ID[:16], wr.Size, wr.Path)
				})
			}
			var p struct {
				Pipeline string `json:"pipeline"`
				packetJSON
			}
			if err := apiGet(cmd.Context(), a.dir(), path, &p); err != nil {
				return err
			}
			return a.print(p, func(w io.Writer) {
				fmt.Fprintf(w, "Packet:   %s\nPipeline: %s\nLogID:    %d\nSender:   %s (seq %d)\nTime:     %s\nType:     %d\nSize:     %d bytes\n",
					p.ID, p.Pipeline, p.LogID, p.Sender, p.Seq, p.Time.Local().Format(time.RFC3339Nano), p.Type, p.Size)
				if p.IsFile {
					fmt.Fprintf(w, "File:     yes (save it with: pipes get %s %s --out FILE)\n", p.Pipeline, p.ID)
				} else {
					fmt.Fprintf(w, "Data:     %s\n", printable(p.Data))
				}
			})
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "node id prefix or location (default: the only one)")
	cmd.Flags().BoolVar(&rawData, "data", false, "write only the packet's data, as is, to standard output")
	cmd.Flags().StringVar(&outPath, "out", "", "have the daemon write the packet's data (a file packet's content) to this file")
	return cmd
}

// copyData copies the raw data the daemon serves at path to standard
// output, and reports an error the daemon met on the way.
func (a *app) copyData(ctx context.Context, path string) error {
	resp, err := apiDo(ctx, a.dir(), http.MethodGet, path, "", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(a.out, resp.Body); err != nil {
		return err
	}
	if msg := resp.Trailer.Get(dataErrorTrailer); msg != "" {
		return errors.New(msg)
	}
	return nil
}

func (a *app) putCmd() *cobra.Command {
	var node, to, file string
	var typ int
	var lines bool
	cmd := &cobra.Command{
		Use:   "put PIPELINE DATA|-|--file PATH",
		Short: "Put a packet on a pipeline (- reads it from standard input; --file sends a file)",
		Long: `Put a packet on a pipeline: DATA as given, - for standard input (one packet,
or with --lines one a line), or --file PATH for a file packet.

With --file the daemon reads the file itself: it runs on this machine as
the same user (relative paths are taken from the current directory). A file
may be far larger than a packet; it travels in chunks.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if file != "" {
				return cobra.ExactArgs(1)(cmd, args)
			}
			return cobra.ExactArgs(2)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if file != "" && (lines || to != "" || cmd.Flags().Changed("type")) {
				return errors.New("--file puts the file as it is: --lines, --to and --type do not apply")
			}
			n, err := a.daemonNode(cmd.Context(), node)
			if err != nil {
				return err
			}
			pipelinePath := "/v1/nodes/" + n.ID + "/pipelines/" + url.PathEscape(args[0])
			if file != "" {
				var r struct{ ID string }
				if err := a.postPath(cmd.Context(), pipelinePath+"/files", file, &r); err != nil {
					return err
				}
				return a.print([]string{r.ID}, func(w io.Writer) { fmt.Fprintln(w, r.ID) })
			}
			q := url.Values{}
			if cmd.Flags().Changed("type") {
				q.Set("type", strconv.Itoa(typ))
			}
			if to != "" {
				q.Set("to", to)
			}
			path := pipelinePath + "/packets?" + q.Encode()
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
	cmd.Flags().StringVar(&file, "file", "", "put this file as one file packet (the daemon reads it)")
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
					fmt.Fprintf(a.out, "%s%s %s type %d: %s\n", logID, p.Time.Local().Format("15:04:05.000"), p.Sender[:8], p.Type, packetText(p))
				}
			}
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "node id prefix or location (default: the only one)")
	cmd.Flags().Int64Var(&since, "since", -1, "persistent pipelines: first print the logged packets after this LogID (-1: the whole history)")
	return cmd
}

// packetText renders a packet's data for people: its text, or what it is
// when it is not to be printed.
func packetText(p packetJSON) string {
	switch {
	case p.IsFile:
		return fmt.Sprintf("<file of %d bytes, packet %s>", p.Size, p.ID)
	case p.Unreadable != "":
		return fmt.Sprintf("<%d bytes, %s>", p.Size, p.Unreadable)
	}
	return printable(p.Data)
}

func (a *app) udpMapCmd() *cobra.Command {
	var node, host string
	var port int
	var closeMap bool
	cmd := &cobra.Command{
		Use:   "udp-map PIPELINE",
		Short: "Map a local UDP port to a realtime point-to-point pipeline of the running node (--close removes it)",
		Long: `Map a local UDP port to a realtime point-to-point pipeline of the running node.

Each datagram a local application sends to the port becomes a packet on the
pipeline, and each packet from the other node is sent as a datagram to the
address that last sent to the port. The map lives in the daemon until
'pipes udp-map PIPELINE --close' or until the daemon stops. --host defaults to
127.0.0.1 (0.0.0.0 for every interface), --port 0 picks a free port.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if closeMap && (cmd.Flags().Changed("host") || cmd.Flags().Changed("port")) {
				return errors.New("--close takes no --host or --port")
			}
			if port < 0 || port > 65535 {
				return fmt.Errorf("--port %d is not a UDP port (0 to 65535)", port)
			}
			n, err := a.daemonNode(cmd.Context(), node)
			if err != nil {
				return err
			}
			path := "/v1/nodes/" + n.ID + "/pipelines/" + url.PathEscape(args[0]) + "/udp-map"
			method, body := http.MethodPost, []byte(nil)
			if closeMap {
				method = http.MethodDelete
			} else {
				body, _ = json.Marshal(map[string]any{"host": host, "port": port})
			}
			resp, err := apiDo(cmd.Context(), a.dir(), method, path, "application/json", bytes.NewReader(body))
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			var m udpMapJSON
			if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
				return err
			}
			return a.print(m, func(w io.Writer) {
				switch {
				case !m.Closed:
					fmt.Fprintf(w, "%s\n", m.Addr)
				case m.Addr != "":
					fmt.Fprintf(w, "Removed the UDP port map of pipeline %q (%s).\n", m.Pipeline, m.Addr)
				default:
					fmt.Fprintf(w, "Pipeline %q had no UDP port map.\n", m.Pipeline)
				}
			})
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "node id prefix or location (default: the only one)")
	cmd.Flags().StringVar(&host, "host", "", "local address to listen on (default 127.0.0.1)")
	cmd.Flags().IntVar(&port, "port", 0, "local UDP port (default: a free one)")
	cmd.Flags().BoolVar(&closeMap, "close", false, "remove the pipeline's UDP port map")
	return cmd
}

// postPath sends the daemon a path of this machine, made absolute (the
// daemon runs here and opens it itself), and decodes the reply into out.
func (a *app) postPath(ctx context.Context, endpoint, path string, out any) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	body, _ := json.Marshal(map[string]string{"path": abs})
	resp, err := apiDo(ctx, a.dir(), http.MethodPost, endpoint, "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(out)
}
