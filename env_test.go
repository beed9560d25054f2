package pipes

import (
	"net/netip"
	"slices"
	"testing"
)

func TestListenCandidatesFromEnvironment(t *testing.T) {
	t.Setenv(EnvListen, "")
	t.Setenv(EnvPortStart, "")
	t.Setenv(EnvPortRange, "")
	got, err := listenCandidates()
	if err != nil || len(got) != defaultPortRange+1 || got[0] != ":7420" || got[len(got)-1] != ":7430" {
		t.Fatalf("defaults: %v %v", got, err)
	}
	t.Setenv(EnvPortStart, "9000")
	t.Setenv(EnvPortRange, "2")
	t.Setenv(EnvListen, "127.0.0.1")
	got, _ = listenCandidates()
	if !slices.Equal(got, []string{"127.0.0.1:9000", "127.0.0.1:9001", "127.0.0.1:9002"}) {
		t.Fatalf("range on a host: %v", got)
	}
	t.Setenv(EnvListen, "[::1]:5000")
	got, _ = listenCandidates()
	if !slices.Equal(got, []string{"[::1]:5000"}) {
		t.Fatalf("exact address: %v", got)
	}
	t.Setenv(EnvListen, "")
	t.Setenv(EnvPortStart, "http")
	if _, err := listenCandidates(); err == nil {
		t.Fatal("bad port accepted")
	}
}

func TestHomeAndDebugFromEnvironment(t *testing.T) {
	t.Setenv(EnvHome, "/tmp/somewhere")
	if DefaultHome() != "/tmp/somewhere" {
		t.Fatal(DefaultHome())
	}
	for v, want := range map[string]bool{"": false, "0": false, "false": false, "1": true, "yes": true} {
		t.Setenv(EnvDebug, v)
		if debugEnv() != want {
			t.Errorf("PIPES_DEBUG=%q: %v", v, !want)
		}
	}
}

func TestAdvertise(t *testing.T) {
	got := advertise(netip.MustParseAddrPort("127.0.0.1:7420"))
	if !slices.Equal(got, []string{"127.0.0.1:7420"}) {
		t.Fatalf("bound address: %v", got)
	}
	for _, a := range advertise(netip.MustParseAddrPort("0.0.0.0:7420")) {
		ap := netip.MustParseAddrPort(a)
		if ap.Port() != 7420 || ap.Addr().IsUnspecified() {
			t.Fatalf("unspecified bind advertised %s", a)
		}
	}
}
