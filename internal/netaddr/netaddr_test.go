package netaddr

import (
	"net/netip"
	"testing"
)

func TestIsPublic(t *testing.T) {
	for _, c := range []struct {
		addr string
		want bool
	}{
		{"203.0.113.7", true},
		{"8.8.8.8", true},
		{"2001:4860:4860::8888", true},
		{"::ffff:8.8.8.8", true},
		{"10.1.2.3", false},
		{"172.16.0.1", false},
		{"192.168.1.1", false},
		{"100.64.0.1", false},
		{"100.127.255.254", false},
		{"::ffff:100.64.0.1", false},
		{"100.128.0.1", true},
		{"127.0.0.1", false},
		{"169.254.1.1", false},
		{"0.0.0.0", false},
		{"::", false},
		{"::1", false},
		{"fe80::1", false},
		{"fd00::1", false},
		{"224.0.0.1", false},
	} {
		if got := IsPublic(netip.MustParseAddr(c.addr)); got != c.want {
			t.Errorf("IsPublic(%s) = %v, want %v", c.addr, got, c.want)
		}
	}
}
