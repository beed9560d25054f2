package store

import "testing"

// TestTablesDistinct: no two tables share a first byte, and every table
// of the list is one of the constants (a new table added to one but not
// the other shows up as a count mismatch).
func TestTablesDistinct(t *testing.T) {
	seen := map[byte]string{}
	for name, tag := range Tables {
		if other, dup := seen[tag]; dup {
			t.Errorf("tables %q and %q share the byte %q", name, other, tag)
		}
		seen[tag] = name
	}
	const want = 21 // the constants of tables.go
	if len(Tables) != want {
		t.Errorf("%d tables listed, want %d", len(Tables), want)
	}
}
