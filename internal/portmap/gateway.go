package portmap

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// rtfGateway is the RTF_GATEWAY route flag of Linux.
const rtfGateway = 0x2

// defaultGateway returns the gateway of the IPv4 default route, read from
// /proc/net/route (Linux only).
func defaultGateway() (netip.Addr, error) {
	data, err := os.ReadFile("/proc/net/route")
	if err != nil {
		return netip.Addr{}, ErrNoGateway
	}
	gw, ok := parseProcRoute(data)
	if !ok {
		return netip.Addr{}, ErrNoGateway
	}
	return gw, nil
}

// parseProcRoute finds the default route's gateway in the text of
// /proc/net/route, whose addresses are hexadecimal in host byte order
// (little-endian on the machines Go supports for this).
func parseProcRoute(data []byte) (netip.Addr, bool) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	first := true
	for sc.Scan() {
		if first { // header line
			first = false
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 4 || f[1] != "00000000" {
			continue
		}
		flags, err := strconv.ParseUint(f[3], 16, 32)
		if err != nil || flags&rtfGateway == 0 {
			continue
		}
		raw, err := hex.DecodeString(f[2])
		if err != nil || len(raw) != 4 {
			continue
		}
		var ip [4]byte
		binary.BigEndian.PutUint32(ip[:], binary.LittleEndian.Uint32(raw))
		gw := netip.AddrFrom4(ip)
		if gw.IsUnspecified() {
			continue
		}
		return gw, true
	}
	return netip.Addr{}, false
}
