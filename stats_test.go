package pipes

import (
	"reflect"
	"testing"

	"github.com/pipesnet/pipes/internal/mesh"
	"github.com/pipesnet/pipes/internal/mesh/plumtree"
)

// fillDistinct sets every integer field of the struct v points to, nested
// structs included, to a distinct non-zero value.
func fillDistinct(v reflect.Value, next *int64) {
	for i := range v.NumField() {
		f := v.Field(i)
		switch f.Kind() {
		case reflect.Struct:
			fillDistinct(f, next)
		case reflect.Int, reflect.Int64:
			*next++
			f.SetInt(*next)
		case reflect.Uint64:
			*next++
			f.SetUint(uint64(*next))
		}
	}
}

// numbers lists the integer fields of a struct by path, nested structs
// included.
func numbers(v reflect.Value, prefix string, out map[string]int64) {
	for i := range v.NumField() {
		f, name := v.Field(i), prefix+v.Type().Field(i).Name
		switch f.Kind() {
		case reflect.Struct:
			numbers(f, name+".", out)
		case reflect.Int, reflect.Int64:
			out[name] = f.Int()
		case reflect.Uint64:
			out[name] = int64(f.Uint())
		}
	}
}

// TestStatsConversion: every counter of the mesh reaches the public
// NodeStats under the same name (the broadcast tree's as Broadcast), so a
// counter added inside and not carried over fails here.
func TestStatsConversion(t *testing.T) {
	var in mesh.Stats
	var next int64
	fillDistinct(reflect.ValueOf(&in).Elem(), &next)
	want := map[string]int64{}
	numbers(reflect.ValueOf(in), "", want)
	got := map[string]int64{}
	numbers(reflect.ValueOf(nodeStats(in)), "", got)
	if len(want) == 0 || len(got) != len(want) {
		t.Fatalf("NodeStats has %d counters, mesh.Stats %d", len(got), len(want))
	}
	for name, v := range want {
		pub := name
		if len(name) > 5 && name[:5] == "Tree." {
			pub = "Broadcast." + name[5:]
		}
		if got[pub] != v {
			t.Errorf("%s: got %d, want %d (from mesh %s)", pub, got[pub], v, name)
		}
	}
	if reflect.TypeFor[plumtree.Stats]().NumField() != reflect.TypeFor[BroadcastStats]().NumField() {
		t.Errorf("BroadcastStats has %d fields, plumtree.Stats %d",
			reflect.TypeFor[BroadcastStats]().NumField(), reflect.TypeFor[plumtree.Stats]().NumField())
	}
}
