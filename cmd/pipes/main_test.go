package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
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
