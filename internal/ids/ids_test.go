package ids

import (
	"fmt"
	"strings"
	"testing"
)

func TestString(t *testing.T) {
	var raw [32]byte
	for i := range raw {
		raw[i] = byte(i * 9)
	}
	want := fmt.Sprintf("%x", raw[:])
	for _, s := range []fmt.Stringer{Node(raw), Pipeline(raw), Packet(raw), Network(raw), Content(raw)} {
		if got := s.String(); got != want {
			t.Errorf("%T.String() = %q, want %q", s, got, want)
		}
		if got := fmt.Sprint(s); got != want {
			t.Errorf("fmt.Sprint(%T) = %q, want %q", s, got, want)
		}
	}
	for _, s := range []interface{ Short() string }{Node(raw), Pipeline(raw), Packet(raw), Content(raw)} {
		if got := s.Short(); got != want[:8] || !strings.HasPrefix(want, got) {
			t.Errorf("%T.Short() = %q, want %q", s, got, want[:8])
		}
	}
}

func TestIsZero(t *testing.T) {
	if !(Node{}).IsZero() {
		t.Error("zero node: IsZero false")
	}
	if (Node{31: 1}).IsZero() {
		t.Error("non-zero node: IsZero true")
	}
}

// The ids are distinct types: an ids.Node does not go where an
// ids.Pipeline is wanted (that is a compile error, so no test here can
// show it); a conversion is needed, and it keeps the bytes.
func TestConvert(t *testing.T) {
	n := Node{1, 2, 3}
	if p := Pipeline(n); [32]byte(p) != [32]byte(n) {
		t.Error("conversion changed the bytes")
	}
}
