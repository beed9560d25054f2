package files

import (
	"bytes"
	"testing"
)

// FuzzReadKeyRecord: the decoder of reader-key records (network input)
// never panics, and what it accepts re-encodes to itself.
func FuzzReadKeyRecord(f *testing.F) {
	_, rk := readKeyOf(f)
	f.Add(rk.record)
	f.Add(rk.record[:40])
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeReadKey(b)
		if err != nil {
			return
		}
		if !bytes.Equal(r.raw, b) {
			t.Fatal("accepted record not kept as given")
		}
	})
}

// FuzzRestrictedHeader: the header parser (network input: the start of a
// blob any holder serves) never panics, and its bounds hold for what it
// accepts. (Opening with a key is left to the unit tests of tampered
// files: HPKE under the fuzzer's instrumentation is too slow to run here.)
func FuzzRestrictedHeader(f *testing.F) {
	_, x := readKeyOf(f)
	_, y := readKeyOf(f)
	ct, _ := sealAll(f, plain(100, 1), minSegment, "n", x, y)
	h, _ := parseHeader(ct)
	f.Add(ct[:len(h.raw)])
	f.Add(ct[:30])
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseHeader(b)
		if err != nil {
			return
		}
		if len(h.raw) > maxHeader || len(h.raw) > len(b) || len(h.readers) == 0 || len(h.readers) > MaxReaders ||
			h.seg < minSegment || h.size < 0 || len(h.readers) != len(h.sealed) {
			t.Fatalf("bounds: %d bytes, %d readers, segment %d, size %d", len(h.raw), len(h.readers), h.seg, h.size)
		}
		if h.cipherSize() < int64(len(h.raw)) {
			t.Fatal("the ciphertext size overflows")
		}
	})
}
