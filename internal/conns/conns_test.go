package conns

import (
	"bytes"
	"testing"
)

func TestHeaderRoundTrip(t *testing.T) {
	dst := [32]byte{7}
	for _, c := range []struct {
		mode    byte
		service string
	}{{modeDirect, "web"}, {modeRelay, ""}} {
		mode, d, service, hops, err := readHeader(bytes.NewReader(header(c.mode, dst, c.service, 5)))
		if err != nil || mode != c.mode || d != dst || service != c.service || c.mode == modeRelay && hops != 5 {
			t.Fatalf("%d %q: got %d %x %q %v", c.mode, c.service, mode, d[:2], service, err)
		}
	}
	for _, bad := range [][]byte{nil, []byte("\x01"), append([]byte("\x02\x01"), make([]byte, 32)...), append([]byte("\x01\x09"), make([]byte, 32)...),
		append(append([]byte("\x01\x01"), make([]byte, 32)...), 0)} {
		if _, _, _, _, err := readHeader(bytes.NewReader(bad)); err == nil {
			t.Fatalf("header %q accepted", bad)
		}
	}
}

// FuzzStreamHeader: any opening of a stream decodes or fails, without
// panicking, and what decodes encodes back to the same bytes.
func FuzzStreamHeader(f *testing.F) {
	f.Add(header(modeDirect, [32]byte{1}, "web", 0))
	f.Add(header(modeRelay, [32]byte{2}, "", maxHops))
	f.Fuzz(func(t *testing.T, b []byte) {
		mode, dst, service, hops, err := readHeader(bytes.NewReader(b))
		if err != nil {
			return
		}
		if enc := header(mode, dst, service, hops); !bytes.HasPrefix(b, enc) {
			t.Fatalf("%x decodes to %d %x %q, which encodes to %x", b, mode, dst, service, enc)
		}
	})
}
