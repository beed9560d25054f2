package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pipesnet/pipes/internal/testutil"
)

// TestMain lets the test binary act as the pipes command, so the tests run
// real separate processes without building anything.
func TestMain(m *testing.M) {
	if os.Getenv("PIPES_CLI_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// pipesCmd prepares the pipes command with args.
func pipesCmd(env []string, args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), "PIPES_CLI_MAIN=1"), env...)
	return cmd
}

// runPipes runs the command and returns its standard output; it fails the
// test on a non-zero exit.
func runPipes(t *testing.T, env []string, args ...string) string {
	t.Helper()
	cmd := pipesCmd(env, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("pipes %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

func freePort(t *testing.T) int {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

func TestErrorsAreOneLineAndNonZero(t *testing.T) {
	home := t.TempDir()
	cmd := pipesCmd(nil, "--home", home, "network", "set-secret", "nope")
	var errb bytes.Buffer
	cmd.Stderr = &errb
	err := cmd.Run()
	if err == nil {
		t.Fatal("exit 0 for an unknown network")
	}
	msg := strings.TrimSpace(errb.String())
	if strings.Count(msg, "\n") != 0 || !strings.HasPrefix(msg, "pipes: ") {
		t.Fatalf("error output not one line: %q", msg)
	}
}

func TestSecretNotAcceptedAsArgument(t *testing.T) {
	home := t.TempDir()
	for _, args := range [][]string{
		{"network", "create", "x", "--out", filepath.Join(home, "x.net"), "--secret", "plain"},
		{"pipeline", "create", "x", "--encrypted", "--secret", "plain"},
		{"pipeline", "secret", "x", "--secret", "plain"},
	} {
		out, err := pipesCmd(nil, append([]string{"--home", home}, args...)...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "unknown flag: --secret") {
			t.Fatalf("pipes %s: --secret as a plain argument: %v %s", strings.Join(args, " "), err, out)
		}
	}
}

func TestNetworkCreateAddSetSecretJSON(t *testing.T) {
	dir := t.TempDir()
	home := filepath.Join(dir, "home")
	netfile := filepath.Join(dir, "t.net")
	secretFile := filepath.Join(dir, "secret")
	os.WriteFile(secretFile, []byte("file secret\n"), 0o600)
	runPipes(t, nil, "network", "create", "team", "--out", netfile, "--fast-kdf", "--gateway", "127.0.0.1:7420", "--secret-file", secretFile)
	runPipes(t, nil, "--home", home, "network", "add", netfile)
	var nets []map[string]any
	json.Unmarshal([]byte(runPipes(t, nil, "--home", home, "--json", "network", "list")), &nets)
	if len(nets) != 1 || nets[0]["name"] != "team" || nets[0]["has_secret"] != false {
		t.Fatalf("network list: %v", nets)
	}
	// Wrong secret from standard input: refused, exit non-zero.
	cmd := pipesCmd(nil, "--home", home, "network", "set-secret", "team")
	cmd.Stdin = strings.NewReader("wrong secret\n")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "wrong secret") {
		t.Fatalf("wrong secret: %v %s", err, out)
	}
	runPipes(t, []string{"TEAM_SECRET=file secret"}, "--home", home, "network", "set-secret", "team", "--secret-env", "TEAM_SECRET")
	json.Unmarshal([]byte(runPipes(t, nil, "--home", home, "--json", "network", "list")), &nets)
	if nets[0]["has_secret"] != true {
		t.Fatalf("secret not set: %v", nets)
	}
	runPipes(t, nil, "--home", home, "identity", "add", "carol")
	out := runPipes(t, nil, "--home", home, "identity", "list")
	if !strings.Contains(out, "carol") {
		t.Fatalf("identity list: %s", out)
	}
	runPipes(t, nil, "--home", home, "node", "add", "desk", "--no-portmap")
	out = runPipes(t, nil, "--home", home, "node", "status")
	if !strings.Contains(out, "carol@desk") || !strings.Contains(out, "stopped") {
		t.Fatalf("node status: %s", out)
	}
}

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
	tail := pipesCmd(env, "--home", homes[1], "tail", "chat")
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
	stdin := pipesCmd(env, "--home", homes[2], "put", "chat", "-", "--lines")
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
		out, err := pipesCmd(env, "--home", homes[1], "pipeline", "info", "journal").Output()
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
	since := pipesCmd(env, "--home", homes[1], "tail", "journal", "--since", "0")
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

func TestDemo(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"demo", "--nodes", "4"}, nil, &out, &out); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	for _, want := range []string{"every node sees the 3 others", "report", "offline", "is back",
		`received "hello, everyone" from bob`, `ken received "meet at noon"`, "has all 1001 entries", "told: synchronized",
		"fails with ErrNoSecret: true", "reads the entry it stored before", "lists bob and carol", "the same file: true", `200 OK, "hello from bob's web server, you asked for /hello"`, "(ErrRefused: true)", "knows of their pipeline: false", "Done"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}

// TestPipelineKindsTwoProcesses drives encrypted, file, realtime and
// ephemeral pipelines, and port forwarding, of two daemons through the CLI.
func TestPipelineKindsTwoProcesses(t *testing.T) {
	d := startDaemons(t, "kinds", 2)
	d.env = append(d.env, "VAULT_SECRET=open sesame, but longer")
	d.waitConnected()

	t.Run("encrypted", func(t *testing.T) {
		d := d.with(t)
		d.pipes(0, "pipeline", "create", "vault", "--persistent", "--encrypted", "--secret-env", "VAULT_SECRET")
		d.waitPipeline(1, "vault", true)
		id := strings.TrimSpace(d.pipes(0, "put", "vault", "sealed entry"))
		d.waitFor("daemon 1 stores the sealed entry", func() error {
			out, err := d.try(1, "pipeline", "info", "vault")
			if err != nil || !strings.Contains(out, "Logged:    1 packets") {
				return fmt.Errorf("%v %s", err, out)
			}
			return nil
		})
		out := d.pipes(1, "pipeline", "info", "vault")
		for _, want := range []string{"Kind:      encrypted persistent broadcast", "this node does not have it", "Holders:   1 node(s)", "user0@loc0"} {
			if !strings.Contains(out, want) {
				t.Fatalf("info without the secret lacks %q:\n%s", want, out)
			}
		}
		// Without the secret: a clear one-line error, for get and --data.
		for _, args := range [][]string{{"get", id}, {"get", "vault", id, "--data"}} {
			if _, err := d.try(1, args...); err == nil || !strings.Contains(err.Error(), `pipes: secret not set: pipeline "vault" is encrypted and this node does not have its secret (set it with `+"`pipes pipeline secret vault`)") {
				t.Fatalf("%v without the secret: %v", args, err)
			}
		}
		wrong := d.cmd(1, "pipeline", "secret", "vault")
		wrong.Stdin = strings.NewReader("a guess\n")
		if _, err := tryCmd(wrong); err == nil || !strings.Contains(err.Error(), `pipes: wrong secret for pipeline "vault"`) {
			t.Fatalf("wrong pipeline secret: %v", err)
		}
		if out := d.pipes(1, "pipeline", "secret", "vault", "--secret-env", "VAULT_SECRET"); !strings.Contains(out, `Secret set for pipeline "vault"`) {
			t.Fatalf("pipeline secret: %s", out)
		}
		if out := d.pipes(1, "get", id, "--data"); out != "sealed entry" {
			t.Fatalf("get --data with the secret: %q", out)
		}
		d.waitFor("both daemons see the two holders", func() error {
			for i := range 2 {
				out, err := d.cmd(i, "--json", "pipeline", "info", "vault").Output()
				if err != nil {
					return err
				}
				var p pipelineJSON
				if err := json.Unmarshal(out, &p); err != nil {
					return err
				}
				if !p.Encrypted || !p.HasSecret || len(p.SecretHolders) != 2 {
					return fmt.Errorf("daemon %d: %s", i, out)
				}
			}
			return nil
		})
		if out := d.pipes(0, "pipeline", "info", "vault"); !strings.Contains(out, "this node has it") || !strings.Contains(out, "user1@loc1") {
			t.Fatalf("info with two holders:\n%s", out)
		}
	})

	t.Run("file", func(t *testing.T) {
		d := d.with(t)
		d.pipes(0, "pipeline", "create", "files", "--persistent")
		d.waitPipeline(1, "files", true)
		srcDir, dstDir := t.TempDir(), t.TempDir()
		content := make([]byte, 300<<10) // two chunks
		rand.Read(content)
		if err := os.WriteFile(filepath.Join(srcDir, "report.bin"), content, 0o600); err != nil {
			t.Fatal(err)
		}
		// Relative paths are the caller's: the CLI makes them absolute.
		put := d.cmd(0, "put", "files", "--file", "report.bin")
		put.Dir = srcDir
		out, err := tryCmd(put)
		if err != nil {
			t.Fatalf("put --file: %v", err)
		}
		id := strings.TrimSpace(out)
		d.waitFor("daemon 1 logs the file packet", func() error {
			out, err := d.try(1, "get", "files", id)
			if err != nil || !strings.Contains(out, "File:     yes") || !strings.Contains(out, fmt.Sprintf("Size:     %d bytes", len(content))) {
				return fmt.Errorf("%v %s", err, out)
			}
			return nil
		})
		get := d.cmd(1, "get", "files", id, "--out", "copy.bin")
		get.Dir = dstDir
		if out, err := tryCmd(get); err != nil || !strings.Contains(out, filepath.Join(dstDir, "copy.bin")) {
			t.Fatalf("get --out: %v %s", err, out)
		}
		if got, err := os.ReadFile(filepath.Join(dstDir, "copy.bin")); err != nil || !bytes.Equal(got, content) {
			t.Fatalf("the file written by daemon 1 differs (%d bytes, %v)", len(got), err)
		}
		if out := d.pipes(1, "get", "files", id, "--data"); out != string(content) {
			t.Fatalf("get --data of a file packet: %d bytes", len(out))
		}
		if _, err := d.try(0, "put", "files", "--file", filepath.Join(srcDir, "missing.bin")); err == nil {
			t.Fatal("put --file of a missing file succeeded")
		}
	})

	t.Run("udp-map", func(t *testing.T) {
		d := d.with(t)
		var node1 nodeJSON
		if err := json.Unmarshal([]byte(d.pipes(1, "--json", "node", "status")), &node1); err != nil {
			t.Fatal(err)
		}
		d.pipes(0, "pipeline", "create", "voice", "--realtime", "--to", node1.ID[:16])
		d.waitPipeline(1, "voice", true)
		addr0, err := net.ResolveUDPAddr("udp", strings.TrimSpace(d.pipes(0, "udp-map", "voice")))
		if err != nil || !addr0.IP.IsLoopback() || addr0.Port == 0 {
			t.Fatalf("udp-map printed %v (%v)", addr0, err)
		}
		var m1 udpMapJSON
		if err := json.Unmarshal([]byte(d.pipes(1, "--json", "udp-map", "voice", "--host", "127.0.0.1")), &m1); err != nil {
			t.Fatal(err)
		}
		addr1, err := net.ResolveUDPAddr("udp", m1.Addr)
		if err != nil {
			t.Fatal(err)
		}
		// An application on each side: what one sends to its port comes
		// out of the other's.
		app0, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer app0.Close()
		app1, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer app1.Close()
		buf := make([]byte, 2048)
		d.waitFor("a datagram crosses the pipeline", func() error {
			app1.WriteToUDP([]byte("hello from 1"), addr1) // makes app1 the receiver on side 1
			app0.WriteToUDP([]byte("voice frame"), addr0)
			app1.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			n, _, err := app1.ReadFromUDP(buf)
			if err != nil {
				return err
			}
			if string(buf[:n]) != "voice frame" {
				return fmt.Errorf("app1 read %q", buf[:n])
			}
			return nil
		})
		if out := d.pipes(0, "pipeline", "info", "voice"); !strings.Contains(out, "UDP map:   "+addr0.String()) || !strings.Contains(out, "realtime point-to-point") {
			t.Fatalf("info of a mapped pipeline:\n%s", out)
		}
		if _, err := d.try(0, "udp-map", "voice"); err == nil || !strings.Contains(err.Error(), "mapped to "+addr0.String()+" already") {
			t.Fatalf("second udp-map: %v", err)
		}
		if out := d.pipes(0, "udp-map", "voice", "--close"); !strings.Contains(out, "Removed the UDP port map") {
			t.Fatalf("udp-map --close: %s", out)
		}
		if out := d.pipes(0, "pipeline", "info", "voice"); !strings.Contains(out, "UDP map:   none") {
			t.Fatalf("info after --close:\n%s", out)
		}
		if _, err := d.try(0, "udp-map", "files"); err == nil || !strings.Contains(err.Error(), "realtime point-to-point") {
			t.Fatalf("udp-map of a persistent pipeline: %v", err)
		}
	})

	t.Run("ephemeral", func(t *testing.T) {
		d := d.with(t)
		d.pipes(0, "pipeline", "create", "scratch", "--ephemeral")
		d.waitPipeline(1, "scratch", true)
		if out := d.pipes(1, "pipeline", "info", "scratch"); !strings.Contains(out, "Kind:      ephemeral live broadcast") {
			t.Fatalf("info of an ephemeral pipeline:\n%s", out)
		}
		if _, err := d.try(1, "pipeline", "shutdown", "files"); err == nil || !strings.Contains(err.Error(), "not an ephemeral pipeline") {
			t.Fatalf("shutdown of a persistent pipeline: %v", err)
		}
		if out := d.pipes(1, "pipeline", "shutdown", "scratch"); !strings.Contains(out, `Pipeline "scratch" shut down`) {
			t.Fatalf("shutdown: %s", out)
		}
		d.waitPipeline(1, "scratch", false)
		d.waitPipeline(0, "scratch", false)
	})
	t.Run("forward", func(t *testing.T) { testForward(t, d.with(t)) })
	t.Run("ping and peers", func(t *testing.T) {
		d := d.with(t)
		var node1 nodeJSON
		if err := json.Unmarshal([]byte(d.pipes(1, "--json", "node", "status")), &node1); err != nil {
			t.Fatal(err)
		}
		out := d.pipes(0, "ping", node1.ID[:12], "--count", "2")
		if !strings.Contains(out, "direct, rtt") || !strings.Contains(out, "ping 2:") {
			t.Fatalf("ping printed %q", out)
		}
		var p pingJSON
		if err := json.Unmarshal([]byte(d.pipes(0, "--json", "ping", node1.ID[:12], "-c", "1")), &p); err != nil || p.Path == nil || !p.Path.Direct || len(p.RTTMs) != 1 || p.RTTMs[0] <= 0 {
			t.Fatalf("ping JSON %+v %v", p, err)
		}
		if out := d.pipes(0, "node", "peers"); !strings.Contains(out, "(direct, rtt") {
			t.Fatalf("node peers printed %q", out)
		}
		if _, err := d.try(0, "ping", "no-such-node"); err == nil {
			t.Fatal("ping of an unknown node succeeded")
		}
	})
	t.Run("netcheck", func(t *testing.T) {
		d := d.with(t)
		// On loopback there is no NAT: the peer sees the node's own
		// socket, and its probe from another port gets in.
		var r netcheckJSON
		if err := json.Unmarshal([]byte(d.pipes(0, "--json", "netcheck")), &r); err != nil {
			t.Fatal(err)
		}
		if r.BehindNAT || len(r.Observations) == 0 || r.Observations[0].Observed != r.Local || r.PortHelper == "" ||
			(r.Filtering != "address-dependent or open" && r.Filtering != "endpoint-independent") {
			t.Fatalf("netcheck: %+v", r)
		}
		if out := d.pipes(0, "netcheck"); !strings.Contains(out, "behind NAT:  false") || !strings.Contains(out, "mapping:") {
			t.Fatalf("netcheck printed %q", out)
		}
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

// testForward: daemon 1 exposes an HTTP server of the test as two
// services, one that daemon 0 may use and one it may not; daemon 0
// forwards local ports to them.
func testForward(t *testing.T, d *daemonSet) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello through pipes: %s", r.URL.Path)
	}))
	defer srv.Close()
	target := srv.Listener.Addr().String()
	var nodes [2]nodeJSON
	for i := range nodes {
		if err := json.Unmarshal([]byte(d.pipes(i, "--json", "node", "status")), &nodes[i]); err != nil {
			t.Fatal(err)
		}
	}

	// web: daemon 0's identity (a full id) and daemon 1's node (a prefix).
	web := d.cmd(1, "--json", "expose", "web", target, "--allow", nodes[0].IdentityID, "--allow", nodes[1].ID[:12])
	webOut, webErr := startBackground(t, web)
	var e exposeJSON
	if err := json.Unmarshal([]byte(d.firstLine("expose web", webOut, webErr)), &e); err != nil {
		t.Fatal(err)
	}
	if e.Service != "web" || e.Target != target || len(e.Allowed) != 2 || e.Allowed[0].Kind != "identity" || e.Allowed[0].ID != nodes[0].IdentityID ||
		e.Allowed[1].Kind != "node" || e.Allowed[1].ID != nodes[1].ID {
		t.Fatalf("expose web: %+v", e)
	}
	// private: daemon 1's node only.
	privOut, privErr := startBackground(t, d.cmd(1, "expose", "private", target, "--allow", nodes[1].ID[:12]))
	if line := d.firstLine("expose private", privOut, privErr); !strings.Contains(line, `Exposing `+target+` as service "private"`) {
		t.Fatalf("expose private printed %q", line)
	}

	// Errors: one line each, before anything runs.
	for _, c := range []struct {
		i    int
		args []string
		want string
	}{
		{1, []string{"expose", "web", target}, `pipes: already exists: service "web" is exposed already`},
		{1, []string{"expose", "other", target, "--allow", "xyz"}, `is not a node or identity id`},
		{0, []string{"forward", "0", "nosuch:web"}, `pipes: not found: unknown node "nosuch"`},
		{0, []string{"forward", strconv.Itoa(srv.Listener.Addr().(*net.TCPAddr).Port), nodes[1].ID[:12] + ":web"}, target + " is in use"},
	} {
		if _, err := d.try(c.i, c.args...); err == nil || !strings.Contains(err.Error(), c.want) || strings.Count(err.Error(), "\n") != 0 {
			t.Fatalf("pipes %s: %v, want %q", strings.Join(c.args, " "), err, c.want)
		}
	}

	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: time.Minute}
	get := func(addr, path string) (string, error) {
		resp, err := client.Get("http://" + addr + path)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}

	// A forward daemon 0 may use: an HTTP request goes through.
	fwd := d.cmd(0, "forward", "0", nodes[1].ID[:12]+":web")
	fwdOut, fwdErr := startBackground(t, fwd)
	line := d.firstLine("forward web", fwdOut, fwdErr)
	if !strings.HasPrefix(line, "Forwarding 127.0.0.1:") || !strings.Contains(line, `to service "web" of user1@loc1`) {
		t.Fatalf("forward printed %q", line)
	}
	addr := strings.Fields(line)[1]
	if body, err := get(addr, "/index.html"); err != nil || body != "hello through pipes: /index.html" {
		t.Fatalf("GET through the forward: %q %v\nforward: %s\nexpose: %s", body, err, fwdErr.String(), webErr.String())
	}
	// Killed, the forward's port closes: the daemon notices the request
	// ended.
	fwd.Process.Kill()
	fwd.Wait()
	d.waitFor("the forwarded port closes", func() error {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return errors.New("still accepting")
		}
		return nil
	})

	// A forward to the service daemon 0 may not use: each connection is
	// refused, reported, and the forward goes on.
	refused := d.cmd(0, "forward", "0", "loc1:private")
	refOut, refErr := startBackground(t, refused)
	addr = strings.Fields(d.firstLine("forward private", refOut, refErr))[1]
	for i := 1; i <= 2; i++ {
		if body, err := get(addr, "/"); err == nil {
			t.Fatalf("GET through a refused forward: %q", body)
		}
		d.waitFor("the forward reports the refusal", func() error {
			if n := strings.Count(refErr.String(), "connection refused: private on node "+nodes[1].ID[:8]); n != i {
				return fmt.Errorf("%d refusals reported: %q", n, refErr.String())
			}
			return nil
		})
	}

	// SIGTERM ends expose cleanly.
	web.Process.Signal(syscall.SIGTERM)
	if err := web.Wait(); err != nil {
		t.Fatalf("expose after SIGTERM: %v %s", err, webErr.String())
	}
}

// TestRelayHalfCloseAndStop: relay passes each direction's end on as a
// half-close, reports the connection, and closes its listener and the
// open connections when its context ends.
func TestRelayHalfCloseAndStop(t *testing.T) {
	// The target reads until the client's half-close, then answers and
	// closes.
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b, _ := io.ReadAll(c)
				fmt.Fprintf(c, "read %d bytes: %s", len(b), b)
			}()
		}
	}()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := make(chan connEvent, 16)
	done := make(chan error, 1)
	var d net.Dialer
	go func() {
		done <- relay(ctx, ln, func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", tl.Addr().String()) },
			tcpFrom, func(e connEvent) { events <- e })
	}()
	next := func() connEvent {
		select {
		case e := <-events:
			return e
		case <-time.After(time.Minute):
			t.Fatal("no event")
			return connEvent{}
		}
	}

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("ping"))
	c.(*net.TCPConn).CloseWrite()
	reply, err := io.ReadAll(c) // ends when the target's close arrives
	c.Close()
	if err != nil || string(reply) != "read 4 bytes: ping" {
		t.Fatalf("reply %q %v", reply, err)
	}
	if e := next(); e.Event != "open" || e.Conn != 1 || e.From != c.LocalAddr().String() {
		t.Fatalf("first event %+v", e)
	}
	if e := next(); e.Event != "close" || e.Sent != 4 || e.Received != int64(len(reply)) || e.Error != "" {
		t.Fatalf("second event %+v", e)
	}

	// A connection still open when the context ends is closed.
	c2, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if e := next(); e.Event != "open" || e.Conn != 2 {
		t.Fatalf("third event %+v", e)
	}
	cancel()
	io.ReadAll(c2)
	if err := <-done; err != nil {
		t.Fatalf("relay: %v", err)
	}
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Fatal("the listener accepts after the context ended")
	}
}
