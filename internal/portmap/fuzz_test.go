package portmap

import (
	"errors"
	"testing"
)

func FuzzParsePMPExternal(f *testing.F) {
	f.Add([]byte{0, 128, 0, 0, 0, 0, 3, 232, 203, 0, 113, 7})
	f.Add([]byte{0, 128, 0, 2})
	f.Add([]byte{2, 128, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parsePMPExternal(b)
		if err == nil && (len(b) < 12 || !r.addr.Is4()) {
			t.Fatalf("accepted %x as %+v", b, r)
		}
	})
}

func FuzzParsePMPMap(f *testing.F) {
	f.Add([]byte{0, 129, 0, 0, 0, 0, 3, 232, 16, 146, 16, 146, 0, 0, 28, 32}, byte(1))
	f.Add([]byte{0, 130, 0, 3}, byte(2))
	f.Fuzz(func(t *testing.T, b []byte, op byte) {
		_, err := parsePMPMap(b, op)
		if err == nil && len(b) < 16 {
			t.Fatalf("accepted short %x", b)
		}
	})
}

func FuzzParsePCPMap(f *testing.F) {
	req := pcpMapRequest{lifetime: 60, client: loopback, protocol: pcpProtoUDP, internalPort: 4242}
	b := req.encode()
	b[1] |= 0x80
	f.Add(b)
	f.Add(b[:24])
	f.Add([]byte{0, 129, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parsePCPMap(b)
		if err == nil && (len(b) < 60 || len(b) > pcpMaxLen || !r.externalIP.IsValid()) {
			t.Fatalf("accepted %x as %+v", b, r)
		}
		var rc pcpResultError
		if errors.As(err, &rc) && rc == 0 {
			t.Fatal("result error with code 0")
		}
	})
}
