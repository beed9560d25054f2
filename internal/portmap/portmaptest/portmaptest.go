// Package portmaptest provides in-process port mapping gateways on
// 127.0.0.1 for tests: a NAT-PMP and PCP server (PMPResponder) and a UPnP
// Internet Gateway Device (IGDResponder). They keep the mappings they grant
// and count requests, so that a test can check what a client asked for
// without a router.
//
// The exported fields of a responder are guarded by its lock: read and
// change them only inside the functions given to Set and Get.
package portmaptest

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// PMPResponder is an in-process NAT-PMP (RFC 6886) and PCP (RFC 6887) MAP
// server on 127.0.0.1, on a port of its own (Port). A client points at it
// with the gateway 127.0.0.1 and that server port.
type PMPResponder struct {
	conn *net.UDPConn
	done chan struct{}

	mu sync.Mutex
	// PMP and PCP say which protocols are answered. A PCP-only server
	// answers NAT-PMP with PCP's UNSUPP_VERSION, a NAT-PMP-only one answers
	// PCP with NAT-PMP's unsupported version.
	PMP, PCP bool
	// Silent drops every request.
	Silent bool
	// Refuse answers map requests with NOT_AUTHORIZED (result 2 in both
	// protocols).
	Refuse bool
	// MaxLifetime caps the granted lifetimes, in seconds (default 7200).
	MaxLifetime uint32
	// ExtIP is the external address reported (default 203.0.113.7).
	ExtIP netip.Addr
	// ExtPort is the external port granted; 0 grants the one asked, or
	// the internal port when none is asked.
	ExtPort uint16
	// Mappings maps each mapped internal port to its expiry.
	Mappings map[uint16]time.Time
	// Adds, Renews and Deletes count the requests that created, renewed
	// and deleted a mapping; Lapses counts the renewals that came after
	// the mapping had expired.
	Adds, Renews, Deletes, Lapses int
}

// NewPMPResponder starts a responder that answers NAT-PMP if pmp and PCP
// if pcp. It stops when the test ends.
func NewPMPResponder(t testing.TB, pmp, pcp bool) *PMPResponder {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	r := &PMPResponder{
		conn: conn, done: make(chan struct{}), PMP: pmp, PCP: pcp,
		MaxLifetime: 7200, ExtIP: netip.MustParseAddr("203.0.113.7"),
		Mappings: map[uint16]time.Time{},
	}
	go r.serve()
	t.Cleanup(func() { conn.Close(); <-r.done })
	return r
}

// Port is the UDP port the responder listens on (on 127.0.0.1).
func (r *PMPResponder) Port() uint16 {
	return uint16(r.conn.LocalAddr().(*net.UDPAddr).Port)
}

// Set calls f with the responder locked, to change its fields.
func (r *PMPResponder) Set(f func(r *PMPResponder)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(r)
}

// Get calls f with the responder locked, to read its fields, and returns
// f's result.
func (r *PMPResponder) Get(f func(r *PMPResponder) bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return f(r)
}

func (r *PMPResponder) serve() {
	defer close(r.done)
	buf := make([]byte, 1500)
	for {
		n, from, err := r.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		r.mu.Lock()
		resp := r.handle(buf[:n])
		r.mu.Unlock()
		if resp != nil {
			_, _ = r.conn.WriteToUDPAddrPort(resp, from)
		}
	}
}

// record notes a mapping of internal with lifetime, counting renewals and
// renewals that came after the mapping expired.
func (r *PMPResponder) record(internal uint16, lifetime uint32) {
	if lifetime == 0 {
		if _, ok := r.Mappings[internal]; ok {
			r.Deletes++
			delete(r.Mappings, internal)
		}
		return
	}
	if exp, ok := r.Mappings[internal]; ok {
		r.Renews++
		if time.Now().After(exp) {
			r.Lapses++
		}
	} else {
		r.Adds++
	}
	r.Mappings[internal] = time.Now().Add(time.Duration(lifetime) * time.Second)
}

func (r *PMPResponder) grant(internal, asked uint16) uint16 {
	switch {
	case r.ExtPort != 0:
		return r.ExtPort
	case asked != 0:
		return asked
	}
	return internal
}

func (r *PMPResponder) handle(b []byte) []byte {
	if r.Silent || len(b) < 2 {
		return nil
	}
	epoch := uint32(1000)
	switch b[0] {
	case 0:
		if !r.PMP {
			out := make([]byte, 24) // PCP-only server: UNSUPP_VERSION
			out[0], out[1], out[3] = 2, 0x80|b[1], 1
			return out
		}
		switch {
		case b[1] == 0:
			out := make([]byte, 12)
			out[1] = 128
			binary.BigEndian.PutUint32(out[4:8], epoch)
			ip := r.ExtIP.As4()
			copy(out[8:12], ip[:])
			return out
		case (b[1] == 1 || b[1] == 2) && len(b) == 12:
			internal := binary.BigEndian.Uint16(b[4:6])
			asked := binary.BigEndian.Uint16(b[6:8])
			life := min(binary.BigEndian.Uint32(b[8:12]), r.MaxLifetime)
			out := make([]byte, 16)
			out[1] = 128 + b[1]
			binary.BigEndian.PutUint32(out[4:8], epoch)
			binary.BigEndian.PutUint16(out[8:10], internal)
			if r.Refuse {
				out[3] = 2
				return out
			}
			r.record(internal, life)
			if life != 0 {
				binary.BigEndian.PutUint16(out[10:12], r.grant(internal, asked))
				binary.BigEndian.PutUint32(out[12:16], life)
			}
			return out
		default:
			return []byte{0, 128 + b[1], 0, 5}
		}
	case 2:
		if !r.PCP {
			return []byte{0, 128 + b[1], 0, 1, 0, 0, 0, 0} // NAT-PMP-only server
		}
		if len(b) < 60 || b[1] != 1 {
			out := make([]byte, 24)
			out[0], out[1], out[3] = 2, 0x80|b[1], 4
			return out
		}
		out := make([]byte, 60)
		out[0], out[1] = 2, 0x81
		binary.BigEndian.PutUint32(out[8:12], epoch)
		copy(out[24:], b[24:60]) // nonce, protocol, ports, address
		internal := binary.BigEndian.Uint16(b[40:42])
		asked := binary.BigEndian.Uint16(b[42:44])
		if r.Refuse {
			out[3] = 2
			return out
		}
		life := min(binary.BigEndian.Uint32(b[4:8]), r.MaxLifetime)
		r.record(internal, life)
		binary.BigEndian.PutUint32(out[4:8], life)
		binary.BigEndian.PutUint16(out[42:44], r.grant(internal, asked))
		ip := r.ExtIP.As16()
		copy(out[44:60], ip[:])
		return out
	}
	return nil
}

// IGDResponder is an in-process UPnP Internet Gateway Device with one
// WANIPConnection:1 service, served over HTTP on 127.0.0.1. It is not
// announced by SSDP: a client reaches it at URL.
type IGDResponder struct {
	srv *httptest.Server

	mu sync.Mutex
	// RefuseCode, when not 0, is the UPnP error code of every
	// AddPortMapping.
	RefuseCode int
	// PermanentOnly answers OnlyPermanentLeasesSupported (725) to leases
	// other than 0.
	PermanentOnly bool
	// ExtIP is the answer of GetExternalIPAddress (default 198.51.100.9).
	ExtIP string
	// Mappings maps each external port to its internal client:port.
	Mappings map[uint16]string
	// Leases lists the lease durations of the AddPortMapping calls that
	// succeeded, in seconds.
	Leases []int
	// Adds and Deletes count the AddPortMapping and DeletePortMapping
	// calls that succeeded.
	Adds, Deletes int
}

const igdService = "urn:schemas-upnp-org:service:WANIPConnection:1"

const igdDescription = `<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0">
<specVersion><major>1</major><minor>0</minor></specVersion>
<device>
<deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType>
<friendlyName>test gateway</friendlyName><UDN>uuid:00000000-0000-0000-0000-000000000001</UDN>
<deviceList><device>
<deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType><UDN>uuid:00000000-0000-0000-0000-000000000002</UDN>
<deviceList><device>
<deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType><UDN>uuid:00000000-0000-0000-0000-000000000003</UDN>
<serviceList><service>
<serviceType>` + igdService + `</serviceType>
<serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>
<SCPDURL>/scpd.xml</SCPDURL><controlURL>/ctl/IPConn</controlURL><eventSubURL>/evt/IPConn</eventSubURL>
</service></serviceList>
</device></deviceList>
</device></deviceList>
</device>
</root>`

// NewIGDResponder starts a gateway device. It stops when the test ends.
func NewIGDResponder(t testing.TB) *IGDResponder {
	t.Helper()
	g := &IGDResponder{ExtIP: "198.51.100.9", Mappings: map[uint16]string{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /rootDesc.xml", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/xml")
		_, _ = io.WriteString(w, igdDescription)
	})
	mux.HandleFunc("POST /ctl/IPConn", g.control)
	g.srv = httptest.NewServer(mux)
	t.Cleanup(g.srv.Close)
	return g
}

// URL is the URL of the device's root description.
func (g *IGDResponder) URL() string { return g.srv.URL + "/rootDesc.xml" }

// Set calls f with the device locked, to change its fields.
func (g *IGDResponder) Set(f func(g *IGDResponder)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	f(g)
}

// Get calls f with the device locked, to read its fields, and returns f's
// result.
func (g *IGDResponder) Get(f func(g *IGDResponder) bool) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return f(g)
}

func soapArg(body, name string) string {
	m := regexp.MustCompile(`<` + name + `>([^<]*)</` + name + `>`).FindStringSubmatch(body)
	if m == nil {
		return ""
	}
	return m[1]
}

func (g *IGDResponder) control(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	action := strings.Trim(req.Header.Get("SOAPACTION"), `"`)
	_, action, _ = strings.Cut(action, "#")
	g.mu.Lock()
	defer g.mu.Unlock()
	reply := func(inner string) {
		w.Header().Set("Content-Type", `text/xml; charset="utf-8"`)
		_, _ = fmt.Fprintf(w, `<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body><u:%sResponse xmlns:u="%s">%s</u:%sResponse></s:Body></s:Envelope>`,
			action, igdService, inner, action)
	}
	fault := func(code int, desc string) {
		w.Header().Set("Content-Type", `text/xml; charset="utf-8"`)
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = fmt.Fprintf(w, `<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body><s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail><UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>%d</errorCode><errorDescription>%s</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>`,
			code, desc)
	}
	s := string(body)
	ext, _ := strconv.Atoi(soapArg(s, "NewExternalPort"))
	switch action {
	case "GetExternalIPAddress":
		reply("<NewExternalIPAddress>" + g.ExtIP + "</NewExternalIPAddress>")
	case "AddPortMapping":
		lease, _ := strconv.Atoi(soapArg(s, "NewLeaseDuration"))
		switch {
		case g.RefuseCode != 0:
			fault(g.RefuseCode, "Refused")
			return
		case g.PermanentOnly && lease != 0:
			fault(725, "OnlyPermanentLeasesSupported")
			return
		}
		if proto := soapArg(s, "NewProtocol"); (proto != "UDP" && proto != "TCP") || soapArg(s, "NewInternalClient") == "" {
			fault(402, "Invalid Args")
			return
		}
		g.Leases = append(g.Leases, lease)
		g.Mappings[uint16(ext)] = soapArg(s, "NewInternalClient") + ":" + soapArg(s, "NewInternalPort")
		g.Adds++
		reply("")
	case "DeletePortMapping":
		if _, ok := g.Mappings[uint16(ext)]; !ok {
			fault(714, "NoSuchEntryInArray")
			return
		}
		delete(g.Mappings, uint16(ext))
		g.Deletes++
		reply("")
	default:
		fault(401, "Invalid Action")
	}
}

// ClosedUDPPort returns a UDP port of 127.0.0.1 that nothing listens on (a
// moment ago): a NAT-PMP and PCP server port that answers with port
// unreachable.
func ClosedUDPPort(t testing.TB) uint16 {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	p := uint16(c.LocalAddr().(*net.UDPAddr).Port)
	c.Close()
	return p
}

// ClosedURL returns an HTTP URL on a port of 127.0.0.1 that nothing
// listens on (a moment ago): a UPnP description URL that keeps a client
// from searching the LAN by SSDP, and fails at once.
func ClosedURL(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + l.Addr().String() + "/rootDesc.xml"
	l.Close()
	return u
}
