package integrationtests

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

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
