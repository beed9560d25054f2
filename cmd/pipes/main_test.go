package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The tests that run the pipes command as separate processes (daemons, a
// SIGKILL, exit statuses) are in integrationtests; these run it in this
// process.

// runIn runs the command line args in this process with stdin as its
// standard input, and returns its standard output.
func runIn(stdin string, args ...string) (string, error) {
	var out bytes.Buffer
	err := run(context.Background(), args, strings.NewReader(stdin), &out, &out)
	return out.String(), err
}

// mustRun is runIn with no input; it fails the test on an error.
func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, err := runIn("", args...)
	if err != nil {
		t.Fatalf("pipes %s: %v\noutput: %s", strings.Join(args, " "), err, out)
	}
	return out
}

func TestSecretNotAcceptedAsArgument(t *testing.T) {
	home := t.TempDir()
	for _, args := range [][]string{
		{"network", "create", "x", "--out", filepath.Join(home, "x.net"), "--secret", "plain"},
		{"pipeline", "create", "x", "--encrypted", "--secret", "plain"},
		{"pipeline", "secret", "x", "--secret", "plain"},
	} {
		if out, err := runIn("", append([]string{"--home", home}, args...)...); err == nil || !strings.Contains(err.Error(), "unknown flag: --secret") {
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
	mustRun(t, "network", "create", "team", "--out", netfile, "--fast-kdf", "--gateway", "127.0.0.1:7420", "--secret-file", secretFile)
	mustRun(t, "--home", home, "network", "add", netfile)
	var nets []map[string]any
	json.Unmarshal([]byte(mustRun(t, "--home", home, "--json", "network", "list")), &nets)
	if len(nets) != 1 || nets[0]["name"] != "team" || nets[0]["has_secret"] != false {
		t.Fatalf("network list: %v", nets)
	}
	// Wrong secret from standard input: refused.
	if out, err := runIn("wrong secret\n", "--home", home, "network", "set-secret", "team"); err == nil || !strings.Contains(err.Error(), "wrong secret") {
		t.Fatalf("wrong secret: %v %s", err, out)
	}
	t.Setenv("TEAM_SECRET", "file secret")
	mustRun(t, "--home", home, "network", "set-secret", "team", "--secret-env", "TEAM_SECRET")
	json.Unmarshal([]byte(mustRun(t, "--home", home, "--json", "network", "list")), &nets)
	if nets[0]["has_secret"] != true {
		t.Fatalf("secret not set: %v", nets)
	}
	mustRun(t, "--home", home, "identity", "add", "carol")
	out := mustRun(t, "--home", home, "identity", "list")
	if !strings.Contains(out, "carol") {
		t.Fatalf("identity list: %s", out)
	}
	mustRun(t, "--home", home, "node", "add", "desk", "--no-portmap")
	out = mustRun(t, "--home", home, "node", "status")
	if !strings.Contains(out, "carol@desk") || !strings.Contains(out, "stopped") {
		t.Fatalf("node status: %s", out)
	}
}

func TestDemo(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"demo", "--nodes", "4"}, nil, &out, &out); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	for _, want := range []string{"every node sees the 3 others", "report", "offline", "is back",
		`received "hello, everyone" from bob`, `ken received "meet at noon"`, "has all 1001 entries", "told: synchronized",
		"fails with ErrNoSecret: true", "reads the entry it stored before", "lists bob and carol", "the same file: true",
		"Fetch takes the file from the 2 online holders at once (bob and carol)", "Fetch takes the file from the 2 online holders at once (carol and dave)", `200 OK, "hello from bob's web server, you asked for /hello"`, "(ErrRefused: true)", "knows of their pipeline: false", "Done"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}
