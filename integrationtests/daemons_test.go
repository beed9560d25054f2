package integrationtests

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pipesnet/pipes/internal/testnet"
	"github.com/pipesnet/pipes/internal/testutil"
)

// syncBuffer is an output sink safe to read while another goroutine writes it.
type syncBuffer = testutil.Buffer

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
		ports[i] = testnet.FreePort(t)
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
		cmd := pipesCmd(d.t, d.env, "--home", home, "node", "start")
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
	return pipesCmd(d.t, d.env, append([]string{"--home", d.homes[i]}, args...)...)
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

// TestThreeProcesses runs three `pipes node start` daemons that know only
// the gateway from the netfile, checks through the local API that they
// connect, kills one with SIGKILL and sees the others report it offline,
// then stops the rest with SIGTERM and checks a clean exit.
func TestThreeProcesses(t *testing.T) {
	d := startDaemons(t, "three", 3)
	env, homes, daemons, logs, waitFor := d.env, d.homes, d.cmds, d.logs, d.waitFor
	d.waitConnected()
	out := runPipes(t, env, "--home", homes[1], "node", "status")
	if !strings.Contains(out, "running") {
		t.Fatalf("status of a running node: %s", out)
	}

	// A pipeline across the three processes: created on 0, tailed on 1,
	// written on 2.
	runPipes(t, env, "--home", homes[0], "pipeline", "create", "chat")
	for _, i := range []int{1, 2} {
		d.waitPipeline(i, "chat", true)
	}
	tail := pipesCmd(t, env, "--home", homes[1], "tail", "chat")
	var tailOut syncBuffer
	tail.Stdout = &tailOut
	if err := tail.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { tail.Process.Kill(); tail.Wait() }()
	waitFor("tail receives what put sends", func() error {
		runPipes(t, env, "--home", homes[2], "put", "chat", "hello from two", "--type", "3")
		if !strings.Contains(tailOut.String(), "type 3: hello from two") {
			return fmt.Errorf("tail printed %q", tailOut.String())
		}
		return nil
	})
	stdin := pipesCmd(t, env, "--home", homes[2], "put", "chat", "-", "--lines")
	stdin.Stdin = strings.NewReader("line one\nline two\n")
	if out, err := stdin.CombinedOutput(); err != nil {
		t.Fatalf("put --lines: %v %s", err, out)
	}
	waitFor("lines arrive", func() error {
		if !strings.Contains(tailOut.String(), "line two") {
			return fmt.Errorf("tail printed %q", tailOut.String())
		}
		return nil
	})

	// A persistent pipeline: history on every node, packets by id, and a
	// tail from the start of the log.
	runPipes(t, env, "--home", homes[0], "pipeline", "create", "journal", "--persistent")
	d.waitPipeline(2, "journal", true)
	entry := strings.TrimSpace(runPipes(t, env, "--home", homes[2], "put", "journal", "first entry"))
	runPipes(t, env, "--home", homes[2], "put", "journal", "second entry")
	waitFor("daemon 1 logs both entries", func() error {
		out, err := pipesCmd(t, env, "--home", homes[1], "pipeline", "info", "journal").Output()
		if err != nil || !strings.Contains(string(out), "Logged:    2 packets") {
			return fmt.Errorf("%v %s", err, out)
		}
		return nil
	})
	if out := runPipes(t, env, "--home", homes[1], "get", entry); !strings.Contains(out, "first entry") || !strings.Contains(out, "LogID:    0") {
		t.Fatalf("get: %s", out)
	}
	if out := runPipes(t, env, "--home", homes[1], "get", entry, "--data"); out != "first entry" {
		t.Fatalf("get --data: %q", out)
	}
	since := pipesCmd(t, env, "--home", homes[1], "tail", "journal", "--since", "0")
	var sinceOut syncBuffer
	since.Stdout = &sinceOut
	if err := since.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { since.Process.Kill(); since.Wait() }()
	waitFor("tail --since 0 prints the second entry", func() error {
		if o := sinceOut.String(); !strings.Contains(o, "#1 ") || !strings.Contains(o, "second entry") || strings.Contains(o, "first entry") {
			return fmt.Errorf("tail --since 0 printed %q", o)
		}
		return nil
	})

	// A crash: SIGKILL gives the node no chance to say goodbye.
	daemons[2].Process.Kill()
	daemons[2].Wait()
	waitFor("the killed node is reported offline", func() error {
		for i := range 2 {
			refs, err := d.online(i)
			if err != nil {
				return err
			}
			if len(refs) != 1 {
				return fmt.Errorf("daemon %d still sees %d nodes", i, len(refs))
			}
		}
		return nil
	})

	for i := range 2 {
		daemons[i].Process.Signal(syscall.SIGTERM)
	}
	for i := range 2 {
		done := make(chan error, 1)
		go func() { done <- daemons[i].Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("daemon %d exit: %v\n%s", i, err, logs[i].String())
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("daemon %d did not stop on SIGTERM", i)
		}
		if !strings.Contains(logs[i].String(), "shutting down") {
			t.Fatalf("daemon %d output: %s", i, logs[i].String())
		}
	}
	// The directory is free again, and the node remembers the others.
	out = runPipes(t, env, "--home", homes[0], "node", "status")
	if !strings.Contains(out, "stopped") {
		t.Fatalf("status after stop: %s", out)
	}
}
