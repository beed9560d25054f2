package portmap

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pipesnet/pipes/internal/netlab"
)

// miniupnpdChildEnv, set to the router's LAN address, makes
// TestMiniupnpd play the client: the test binary runs again inside the
// host's network namespace (ip netns exec), so that every goroutine of the
// client (goupnp's SSDP search and HTTP requests among them) sends from
// there.
const miniupnpdChildEnv = "PIPES_PORTMAP_MINIUPNPD_CLIENT"

// TestMiniupnpd runs miniupnpd, the usual port mapping daemon of Linux
// routers (Debian package miniupnpd-nftables), on a NAT of the lab, and a
// client on a host behind it. miniupnpd answers SSDP, UPnP SOAP, NAT-PMP
// and PCP, but grants no mapping while its WAN address is private or
// reserved (the lab's public segment is 198.18.0.0/15): the client must
// find the gateway device and get a refusal (ErrRefused) from each
// protocol, not a timeout.
func TestMiniupnpd(t *testing.T) {
	if gw := os.Getenv(miniupnpdChildEnv); gw != "" {
		miniupnpdClient(t, netip.MustParseAddr(gw))
		return
	}
	bin, err := exec.LookPath("miniupnpd")
	if err != nil {
		bin = "/usr/sbin/miniupnpd" // not in a user's PATH
		if _, err := os.Stat(bin); err != nil {
			t.Skip("miniupnpd not installed (Debian package miniupnpd-nftables)")
		}
	}
	lab := netlab.New(t, "pmupnp") // skips when not root or without ip and nft
	nat, err := lab.AddNAT(netlab.EIMAddrPortFiltering)
	if err != nil {
		t.Fatal(err)
	}
	host, err := lab.AddHost(nat)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "miniupnpd.conf")
	// The NAT's WAN interface is "wan", its LAN bridge "br0" (see netlab).
	if err := os.WriteFile(conf, []byte(strings.Join([]string{
		"ext_ifname=wan",
		"listening_ip=br0",
		"http_port=0",
		"enable_upnp=yes",
		"enable_natpmp=yes", // NAT-PMP and PCP
		"secure_mode=yes",
		"system_uptime=yes",
		"notify_interval=60",
		"uuid=3f6e2a1c-5b7d-4e8f-9a0b-1c2d3e4f5a6b",
		"serial=12345678",
		"model_number=1",
		"allow 1024-65535 10.0.0.0/8 1024-65535",
		"deny 0-65535 0.0.0.0/0 0-65535",
		"",
	}, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}

	// ip netns exec execs miniupnpd in the same process, so the signal
	// reaches it.
	var out lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	daemon := exec.CommandContext(ctx, "ip", "netns", "exec", nat.Namespace(),
		bin, "-d", "-f", conf, "-P", filepath.Join(dir, "miniupnpd.pid"))
	daemon.Stdout, daemon.Stderr = &out, &out
	daemon.Cancel = func() error { return daemon.Process.Signal(syscall.SIGTERM) }
	daemon.WaitDelay = 5 * time.Second
	if err := daemon.Start(); err != nil {
		cancel()
		t.Fatalf("miniupnpd: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- daemon.Wait() }()
	t.Cleanup(func() {
		cancel()
		<-exited
		if t.Failed() {
			t.Logf("miniupnpd's output:\n%s", out.String())
		}
	})
	// Wait until it listens for NAT-PMP and PCP (it opens its SSDP and
	// HTTP sockets before).
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "Listening for NAT-PMP/PCP") {
		select {
		case err := <-exited:
			t.Fatalf("miniupnpd exited: %v\n%s", err, out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("miniupnpd did not start:\n%s", out.String())
		}
	}

	cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer ccancel()
	client := exec.CommandContext(cctx, "ip", "netns", "exec", host.Namespace(),
		os.Args[0], "-test.run=^TestMiniupnpd$", "-test.count=1", "-test.v", "-test.timeout=4m")
	client.Env = append(os.Environ(), miniupnpdChildEnv+"="+nat.LANAddr().String())
	cout, err := client.CombinedOutput()
	t.Logf("client in %s:\n%s", host.Namespace(), cout)
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	if !bytes.Contains(cout, []byte("--- PASS: TestMiniupnpd")) {
		t.Fatal("the client did not run")
	}
}

// miniupnpdClient is TestMiniupnpd's client, run inside the host's
// namespace behind the router at gw.
func miniupnpdClient(t *testing.T, gw netip.Addr) {
	if got, err := defaultGateway(); err != nil || got != gw {
		t.Fatalf("default gateway %v (%v), want %v", got, err, gw)
	}

	// SSDP finds the router's gateway device, at its LAN address.
	var clients []igdClient
	deadline := time.Now().Add(60 * time.Second)
	for len(clients) == 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		roots, locs, err := ssdpGateways(ctx, gw)
		cancel()
		for i, loc := range locs {
			if loc.Hostname() == gw.String() {
				t.Logf("SSDP: %s at %s", roots[i].Device.DeviceType, loc)
				clients = append(clients, igdClients(roots[i], loc)...)
			}
		}
		if len(clients) == 0 && time.Now().After(deadline) {
			t.Fatalf("SSDP found no gateway device with a WAN connection service at %v: %v", gw, err)
		}
	}
	// Its SOAP control answers, with a refusal (a UPnP error) to
	// AddPortMapping.
	local, err := localAddrTo(gw.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range clients {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := c.AddPortMappingCtx(ctx, "", 4242, "UDP", 4242, local.String(), true, "pipes test", 3600)
		cancel()
		if upnpCode(err) == 0 || !errors.Is(upnpError(err), ErrRefused) {
			t.Fatalf("AddPortMapping with %T: %v, want a UPnP error", c, err)
		}
		t.Logf("AddPortMapping with %T: %v", c, upnpError(err))
	}

	// Each protocol answers with a refusal. The gateway is found in the
	// routing table (Config.Gateway unset).
	for _, protos := range [][]string{{ProtoUPnP}, {ProtoNATPMP}, {ProtoPCP}, nil} {
		name := strings.Join(protos, "+")
		if protos == nil {
			name = "all"
		}
		t.Run(name, func(t *testing.T) {
			m, err := Open(context.Background(), Config{InternalPort: 4242, Protocols: protos})
			if err == nil {
				m.Close(context.Background())
				t.Fatalf("Open granted %s %v behind a reserved WAN address", m.Protocol(), m.External())
			}
			if !errors.Is(err, ErrRefused) {
				t.Fatalf("Open: %v, want ErrRefused", err)
			}
			t.Logf("Open: %v", err)
		})
	}
}

// lockedBuffer is a bytes.Buffer for the output of a process, read while
// the process writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
