package portmap

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

// pmpResponder is an in-process NAT-PMP and PCP server on 127.0.0.1.
type pmpResponder struct {
	conn *net.UDPConn
	done chan struct{}

	mu                            sync.Mutex
	pmp, pcp                      bool                 // protocols answered
	silent                        bool                 // answer nothing
	refuse                        bool                 // refuse map requests
	maxLifetime                   uint32               // cap on granted lifetimes (seconds)
	extIP                         netip.Addr           // external address
	extPort                       uint16               // external port granted (0: the one asked, or the internal one)
	mappings                      map[uint16]time.Time // internal port -> expiry
	adds, renews, deletes, lapses int
}

func newPMPResponder(t *testing.T, pmp, pcp bool) *pmpResponder {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	r := &pmpResponder{
		conn: conn, done: make(chan struct{}), pmp: pmp, pcp: pcp,
		maxLifetime: 7200, extIP: netip.MustParseAddr("203.0.113.7"),
		mappings: map[uint16]time.Time{},
	}
	go r.serve()
	t.Cleanup(func() { conn.Close(); <-r.done })
	return r
}

func (r *pmpResponder) port() uint16 {
	return uint16(r.conn.LocalAddr().(*net.UDPAddr).Port)
}

func (r *pmpResponder) set(f func(r *pmpResponder)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(r)
}

func (r *pmpResponder) get(f func(r *pmpResponder) bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return f(r)
}

func (r *pmpResponder) serve() {
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
func (r *pmpResponder) record(internal uint16, lifetime uint32) {
	if lifetime == 0 {
		if _, ok := r.mappings[internal]; ok {
			r.deletes++
			delete(r.mappings, internal)
		}
		return
	}
	if exp, ok := r.mappings[internal]; ok {
		r.renews++
		if time.Now().After(exp) {
			r.lapses++
		}
	} else {
		r.adds++
	}
	r.mappings[internal] = time.Now().Add(time.Duration(lifetime) * time.Second)
}

func (r *pmpResponder) grant(internal, asked uint16) uint16 {
	switch {
	case r.extPort != 0:
		return r.extPort
	case asked != 0:
		return asked
	}
	return internal
}

func (r *pmpResponder) handle(b []byte) []byte {
	if r.silent || len(b) < 2 {
		return nil
	}
	epoch := uint32(1000)
	switch b[0] {
	case 0:
		if !r.pmp {
			out := make([]byte, 24) // PCP-only server: UNSUPP_VERSION
			out[0], out[1], out[3] = 2, 0x80|b[1], 1
			return out
		}
		switch {
		case b[1] == 0:
			out := make([]byte, 12)
			out[1] = 128
			binary.BigEndian.PutUint32(out[4:8], epoch)
			ip := r.extIP.As4()
			copy(out[8:12], ip[:])
			return out
		case (b[1] == 1 || b[1] == 2) && len(b) == 12:
			internal := binary.BigEndian.Uint16(b[4:6])
			asked := binary.BigEndian.Uint16(b[6:8])
			life := min(binary.BigEndian.Uint32(b[8:12]), r.maxLifetime)
			out := make([]byte, 16)
			out[1] = 128 + b[1]
			binary.BigEndian.PutUint32(out[4:8], epoch)
			binary.BigEndian.PutUint16(out[8:10], internal)
			if r.refuse {
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
		if !r.pcp {
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
		if r.refuse {
			out[3] = 2
			return out
		}
		life := min(binary.BigEndian.Uint32(b[4:8]), r.maxLifetime)
		r.record(internal, life)
		binary.BigEndian.PutUint32(out[4:8], life)
		binary.BigEndian.PutUint16(out[42:44], r.grant(internal, asked))
		ip := r.extIP.As16()
		copy(out[44:60], ip[:])
		return out
	}
	return nil
}

// igdResponder is an in-process UPnP Internet Gateway Device with one
// WANIPConnection:1 service.
type igdResponder struct {
	srv *httptest.Server

	mu            sync.Mutex
	refuseCode    int  // UPnP error code of every AddPortMapping, 0 for none
	permanentOnly bool // answer 725 to leases other than 0
	extIP         string
	mappings      map[uint16]string // external port -> internal client:port
	leases        []int
	adds, deletes int
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

func newIGDResponder(t *testing.T) *igdResponder {
	t.Helper()
	g := &igdResponder{extIP: "198.51.100.9", mappings: map[uint16]string{}}
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

func (g *igdResponder) url() string { return g.srv.URL + "/rootDesc.xml" }

func (g *igdResponder) set(f func(g *igdResponder)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	f(g)
}

func (g *igdResponder) get(f func(g *igdResponder) bool) bool {
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

func (g *igdResponder) control(w http.ResponseWriter, req *http.Request) {
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
		reply("<NewExternalIPAddress>" + g.extIP + "</NewExternalIPAddress>")
	case "AddPortMapping":
		lease, _ := strconv.Atoi(soapArg(s, "NewLeaseDuration"))
		switch {
		case g.refuseCode != 0:
			fault(g.refuseCode, "Refused")
			return
		case g.permanentOnly && lease != 0:
			fault(725, "OnlyPermanentLeasesSupported")
			return
		}
		if soapArg(s, "NewProtocol") != "UDP" || soapArg(s, "NewInternalClient") == "" {
			fault(402, "Invalid Args")
			return
		}
		g.leases = append(g.leases, lease)
		g.mappings[uint16(ext)] = soapArg(s, "NewInternalClient") + ":" + soapArg(s, "NewInternalPort")
		g.adds++
		reply("")
	case "DeletePortMapping":
		if _, ok := g.mappings[uint16(ext)]; !ok {
			fault(714, "NoSuchEntryInArray")
			return
		}
		delete(g.mappings, uint16(ext))
		g.deletes++
		reply("")
	default:
		fault(401, "Invalid Action")
	}
}
