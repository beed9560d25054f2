// Command pipes administers Pipes networks and runs nodes.
//
//	pipes init                      create the data directory (and an identity)
//	pipes identity add|list         manage identities
//	pipes network create|add|list|set-secret
//	pipes node add|list|start|status|peers
//	pipes pipeline create|list|info|secret|shutdown     (through a running node)
//	pipes put; pipes get; pipes tail; pipes udp-map      (through a running node)
//	pipes forward; pipes expose     TCP port forwarding (through a running node)
//	pipes file add|get|ls|stat|replicate|archive|rm   files (through a running node)
//	pipes demo                      run a local multi-node network and narrate it
//
// The data directory is --home, else $PIPES_HOME, else ~/.pipes. Output is
// for people by default and JSON with --json. Errors are one line on
// standard error and a non-zero exit status.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/pipesnet/pipes"
)

// app holds the global flags and the output streams of one invocation.
type app struct {
	home    string
	jsonOut bool
	out     io.Writer
	errOut  io.Writer
	in      io.Reader
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		// Errors of the SDK, and the daemon's, begin with "pipes: " already.
		fmt.Fprintln(os.Stderr, "pipes: "+strings.TrimPrefix(err.Error(), "pipes: "))
		os.Exit(1)
	}
}

// run executes the command line args; it is main without the process
// globals, so tests can call it.
func run(ctx context.Context, args []string, in io.Reader, out, errOut io.Writer) error {
	a := &app{out: out, errOut: errOut, in: in}
	root := &cobra.Command{
		Use:           "pipes",
		Short:         "Administer Pipes networks and run nodes",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       pipesVersion(),
	}
	root.PersistentFlags().StringVar(&a.home, "home", "", "data directory (default $PIPES_HOME or ~/.pipes)")
	root.PersistentFlags().BoolVar(&a.jsonOut, "json", false, "print JSON for scripts")
	root.AddCommand(a.initCmd(), a.identityCmd(), a.networkCmd(), a.nodeCmd(), a.pipelineCmd(), a.putCmd(), a.getCmd(), a.tailCmd(), a.udpMapCmd(), a.forwardCmd(), a.exposeCmd(), a.pingCmd(), a.netcheckCmd(), a.fileCmd(), a.demoCmd())
	root.SetArgs(args)
	root.SetIn(in)
	root.SetOut(out)
	root.SetErr(errOut)
	return root.ExecuteContext(ctx)
}

func pipesVersion() string {
	return "0.1.0"
}

// dir is the data directory in use.
func (a *app) dir() string {
	if a.home != "" {
		return a.home
	}
	return pipes.DefaultHome()
}

// open opens the platform, explaining ErrLocked.
func (a *app) open() (*pipes.Platform, error) {
	p, err := pipes.Open(a.dir())
	if errors.Is(err, pipes.ErrLocked) {
		return nil, fmt.Errorf("%w (is `pipes node start` running on it? use `pipes node status` to ask it)", err)
	}
	return p, err
}

// withPlatform opens the platform, runs fn and closes it.
func (a *app) withPlatform(fn func(p *pipes.Platform) error) error {
	p, err := a.open()
	if err != nil {
		return err
	}
	err = fn(p)
	if cerr := p.Close(); err == nil {
		err = cerr
	}
	return err
}

// print writes v as JSON with --json, else calls human.
func (a *app) print(v any, human func(w io.Writer)) error {
	if a.jsonOut {
		enc := json.NewEncoder(a.out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	human(a.out)
	return nil
}
