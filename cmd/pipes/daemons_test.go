package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pipesnet/pipes/internal/testutil"
)

// syncBuffer is an output sink safe to read while another goroutine writes it.
type syncBuffer = testutil.Buffer

type ref struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Connected bool   `json:"connected"`
	Peer      bool   `json:"peer"`
}

// daemonSet is a network of `pipes node start` processes on 127.0.0.1,
// each with its own data directory; they know only the first one's
// address, from the netfile.
type daemonSet struct {
	t     *testing.T
	env   []string
	homes []string
	cmds  []*exec.Cmd
	logs  []*syncBuffer
}

// startDaemons creates a network and starts count daemons of it; they are
// killed when the test ends, if still running. env holds the network
// secret as SECRET.
func startDaemons(t *testing.T, name string, count int) *daemonSet {
	t.Helper()
	dir := t.TempDir()
	netfile := filepath.Join(dir, name+".net")
	d := &daemonSet{t: t, env: []string{"SECRET=" + name + " processes"}}
	ports := make([]int, count)
	for i := range ports {
		ports[i] = freePort(t)
	}
	gw := fmt.Sprintf("127.0.0.1:%d", ports[0])
	runPipes(t, d.env, "network", "create", name, "--out", netfile, "--fast-kdf", "--gateway", gw, "--secret-env", "SECRET")
	t.Cleanup(func() {
		for _, c := range d.cmds {
			if c.ProcessState == nil {
				c.Process.Kill()
				c.Wait()
			}
		}
	})
	for i := range count {
		home := filepath.Join(dir, fmt.Sprintf("h%d", i))
		runPipes(t, d.env, "--home", home, "init", "--name", fmt.Sprintf("user%d", i))
		runPipes(t, d.env, "--home", home, "network", "add", netfile, "--set-secret", "--secret-env", "SECRET")
		runPipes(t, d.env, "--home", home, "node", "add", fmt.Sprintf("loc%d", i),
			"--listen", fmt.Sprintf("127.0.0.1:%d", ports[i]), "--offline-after", "3s")
		cmd := pipesCmd(d.env, "--home", home, "node", "start")
		log := new(syncBuffer)
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		d.homes, d.cmds, d.logs = append(d.homes, home), append(d.cmds, cmd), append(d.logs, log)
	}
	return d
}

// with returns the set for the (sub)test t.
func (d *daemonSet) with(t *testing.T) *daemonSet {
	c := *d
	c.t = t
	return &c
}

// pipes runs the command against daemon i's data directory and returns
// its standard output; it fails the test on a non-zero exit.
func (d *daemonSet) pipes(i int, args ...string) string {
	d.t.Helper()
	return runPipes(d.t, d.env, append([]string{"--home", d.homes[i]}, args...)...)
}

// try runs the command against daemon i's data directory and returns its
// standard output, or an error with its standard error.
func (d *daemonSet) try(i int, args ...string) (string, error) {
	return tryCmd(d.cmd(i, args...))
}

// cmd prepares the command against daemon i's data directory.
func (d *daemonSet) cmd(i int, args ...string) *exec.Cmd {
	return pipesCmd(d.env, append([]string{"--home", d.homes[i]}, args...)...)
}

// tryCmd runs cmd and returns its standard output, or an error with its
// standard error.
func tryCmd(cmd *exec.Cmd) (string, error) {
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%v: %s", err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// waitFor retries cond until it returns nil, failing the test with the
// daemons' output after a minute.
func (d *daemonSet) waitFor(what string, cond func() error) {
	d.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			for i, l := range d.logs {
				d.t.Logf("daemon %d output:\n%s", i, l.String())
			}
			d.t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// online returns the nodes daemon i sees online.
func (d *daemonSet) online(i int) ([]ref, error) {
	out, err := d.cmd(i, "--json", "node", "peers", "--all").Output()
	if err != nil {
		return nil, err
	}
	var refs []ref
	return refs, json.Unmarshal(out, &refs)
}

// waitConnected waits until every daemon sees all the others online.
func (d *daemonSet) waitConnected() {
	d.t.Helper()
	d.waitFor(fmt.Sprintf("%d daemons connect", len(d.homes)), func() error {
		for i := range d.homes {
			refs, err := d.online(i)
			if err != nil {
				return fmt.Errorf("daemon %d: %w", i, err)
			}
			if len(refs) != len(d.homes)-1 {
				return fmt.Errorf("daemon %d sees %d nodes", i, len(refs))
			}
		}
		return nil
	})
}

// waitPipeline waits until daemon i knows the pipeline (present) or no
// longer knows it.
func (d *daemonSet) waitPipeline(i int, name string, present bool) {
	d.t.Helper()
	d.waitFor(fmt.Sprintf("daemon %d knows pipeline %s: %v", i, name, present), func() error {
		out, err := d.cmd(i, "--json", "pipeline", "list").Output()
		if err != nil {
			return err
		}
		var ps []pipelineJSON
		if err := json.Unmarshal(out, &ps); err != nil {
			return err
		}
		found := false
		for _, p := range ps {
			found = found || p.Name == name
		}
		if found != present {
			return fmt.Errorf("daemon %d lists %s", i, out)
		}
		return nil
	})
}

// startBackground starts a long-running command (forward, expose); it is
// killed when the test ends if still running.
func startBackground(t *testing.T, cmd *exec.Cmd) (stdout, stderr *syncBuffer) {
	t.Helper()
	stdout, stderr = new(syncBuffer), new(syncBuffer)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return stdout, stderr
}

// firstLine waits until out has a complete first line and returns it.
func (d *daemonSet) firstLine(what string, out, errOut *syncBuffer) string {
	d.t.Helper()
	var line string
	d.waitFor(what, func() error {
		var ok bool
		if line, _, ok = strings.Cut(out.String(), "\n"); !ok {
			return fmt.Errorf("no line yet; stderr: %q", errOut.String())
		}
		return nil
	})
	return line
}
