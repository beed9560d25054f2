package mesh

import (
	"net/netip"
	"testing"
)

func TestClassifyMapping(t *testing.T) {
	ap := netip.MustParseAddrPort
	r1, r2 := ap("198.18.0.1:4000"), ap("198.18.0.9:4000")
	for _, c := range []struct {
		name string
		obs  []observation
		want Mapping
	}{
		{"none", nil, MappingUnknown},
		{"one peer", []observation{{r1, ap("198.18.0.3:5000")}}, MappingUnknown},
		{"same remote twice", []observation{{r1, ap("198.18.0.3:5000")}, {r1, ap("198.18.0.3:6000")}}, MappingUnknown},
		{"two agree", []observation{{r1, ap("198.18.0.3:5000")}, {r2, ap("198.18.0.3:5000")}}, MappingIndependent},
		{"two differ", []observation{{r1, ap("198.18.0.3:5000")}, {r2, ap("198.18.0.3:6000")}}, MappingDependent},
		{"different IPs (a LAN peer sees the private address)",
			[]observation{{r1, ap("198.18.0.3:5000")}, {ap("10.0.0.2:1"), ap("10.0.0.5:5000")}}, MappingUnknown},
		{"one disagreement wins", []observation{{r1, ap("198.18.0.3:5000")}, {r2, ap("198.18.0.3:5000")},
			{ap("198.18.0.7:1"), ap("198.18.0.3:7000")}}, MappingDependent},
	} {
		if got := classify(c.obs); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func TestParseOffer(t *testing.T) {
	o := parseOffer([]byte("nat=hard\n198.18.0.3:5000\nbogus\nlisten\n10.0.0.5:5000\n"))
	if o.mapping != MappingDependent || len(o.addrs) != 2 || len(o.observed) != 1 ||
		o.observed[0] != netip.MustParseAddrPort("198.18.0.3:5000") {
		t.Fatalf("%+v", o)
	}
	// An offer from before the "listen" line existed: every address is
	// taken as observed, the mapping as unknown.
	o = parseOffer([]byte("198.18.0.3:5000\n10.0.0.5:5000\n"))
	if o.mapping != MappingUnknown || len(o.observed) != 2 {
		t.Fatalf("%+v", o)
	}
}
