package kinds

import (
	"go/ast"
	"go/parser"
	"go/token"
	"strconv"
	"testing"
)

// allocated reads the kind constants declared in kinds.go: name and number.
func allocated(t *testing.T) map[string]uint32 {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "kinds.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint32{}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, s := range g.Specs {
			vs := s.(*ast.ValueSpec)
			if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "uint32" {
				continue // the Path bits
			}
			for i, n := range vs.Names {
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok || lit.Kind != token.INT {
					t.Fatalf("kind %s is not a plain number: numbers are written out, not computed", n.Name)
				}
				v, err := strconv.ParseUint(lit.Value, 0, 32)
				if err != nil {
					t.Fatal(err)
				}
				out[n.Name] = uint32(v)
			}
		}
	}
	return out
}

func TestNoTwoKindsShareANumber(t *testing.T) {
	consts := allocated(t)
	if len(consts) < 19 {
		t.Fatalf("read %d kinds from kinds.go, want every kind", len(consts))
	}
	byNum := map[uint32]string{}
	for name, v := range consts {
		if v == 0 {
			t.Errorf("kind %s is 0, the number of no kind", name)
		}
		if other, ok := byNum[v]; ok {
			t.Errorf("kinds %s and %s share number %d", name, other, v)
		}
		byNum[v] = name
	}
	// Table lists each allocated kind once, in order of its number.
	if len(Table) != len(consts) {
		t.Errorf("Table has %d kinds, kinds.go declares %d", len(Table), len(consts))
	}
	for i, in := range Table {
		if _, ok := byNum[in.Kind]; !ok {
			t.Errorf("Table lists kind %d (%s), which kinds.go does not declare", in.Kind, in.Name)
		}
		if i > 0 && in.Kind <= Table[i-1].Kind {
			t.Errorf("Table: %s (%d) after %s (%d): not in order, or twice", in.Name, in.Kind, Table[i-1].Name, Table[i-1].Kind)
		}
		if in.Name == "" || in.Handler == "" || in.Paths == 0 {
			t.Errorf("Table: kind %d lacks its name, handler or paths", in.Kind)
		}
	}
}

// The numbers are the wire protocol's: they must not move.
func TestNumbersAreTheWireProtocols(t *testing.T) {
	want := map[string]uint32{"Status": 1, "Def": 2, "Batch": 3, "Holdings": 4, "ReadKeys": 5, "Duties": 6, "Sealed": 16, "Defs": 17, "Direct": 18, "Sync": 19,
		"Notes": 20, "FileGet": 21, "FileData": 22, "RealtimeKey": 23, "Ping": 100, "Pong": 101, "Punch": 102,
		"PunchAck": 103, "Check": 104, "CheckAck": 105, "Observed": 106}
	got := allocated(t)
	for name, v := range want {
		if got[name] != v {
			t.Errorf("%s = %d, the protocol has %d", name, got[name], v)
		}
	}
	if Name(FileGet) != "file-get" || Name(999) != "" {
		t.Errorf("Name(FileGet) = %q, Name(999) = %q", Name(FileGet), Name(999))
	}
}

// Stream protocols: one number each, in order, and the data connections'
// number is the "pc" their streams have always begun with.
func TestStreamProtocols(t *testing.T) {
	if StreamConns != uint16('p')<<8|uint16('c') {
		t.Errorf("StreamConns = %#x, the wire has \"pc\"", StreamConns)
	}
	for i, in := range StreamTable {
		if in.Proto == 0 || in.Name == "" || in.Handler == "" {
			t.Errorf("StreamTable[%d] lacks its number, name or handler", i)
		}
		if i > 0 && in.Proto <= StreamTable[i-1].Proto {
			t.Errorf("StreamTable: %s after %s: not in order, or twice", in.Name, StreamTable[i-1].Name)
		}
	}
	if StreamName(StreamConns) != "conns" || StreamName(1) != "" {
		t.Errorf("StreamName(StreamConns) = %q, StreamName(1) = %q", StreamName(StreamConns), StreamName(1))
	}
}
