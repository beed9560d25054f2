package pipeline

import (
	"errors"
	"strings"
	"testing"

	"github.com/pipesnet/pipes/internal/blob"
	"github.com/pipesnet/pipes/internal/dispatch"
	"github.com/pipesnet/pipes/internal/identity"
	"github.com/pipesnet/pipes/internal/kinds"
)

// The engine and its files service register each kind the table gives
// them, for the paths the table says, and none of the mesh's.
func TestEngineRegistersTheKindsOfTheTable(t *testing.T) {
	e, _, _ := persistentEngineWithFiles(t)
	from := [32]byte{9}
	for _, in := range kinds.Table {
		ours := strings.HasPrefix(in.Handler, "pipeline engine") || strings.HasPrefix(in.Handler, "files service")
		for _, via := range []kinds.Path{kinds.Broadcast, kinds.Routed, kinds.InSealed} {
			err := e.disp.Run(dispatch.Msg{From: from, Kind: in.Kind, Via: via, Payload: []byte{0xff, 0xff}})
			switch {
			case !ours:
				if !errors.Is(err, dispatch.ErrUnknownKind) {
					t.Errorf("%s by path %d: %v; the engine must not handle it", in.Name, via, err)
				}
			case in.Paths&via != 0:
				if errors.Is(err, dispatch.ErrUnknownKind) || errors.Is(err, dispatch.ErrWrongPath) {
					t.Errorf("%s by path %d: %v; the table says it takes that path", in.Name, via, err)
				}
			default:
				if !errors.Is(err, dispatch.ErrWrongPath) {
					t.Errorf("%s by path %d: %v; the table says it does not take that path", in.Name, via, err)
				}
			}
		}
	}
}

// persistentEngineWithFiles is persistentEngine's engine, made again
// with a blob store.
func persistentEngineWithFiles(t testing.TB) (*Engine, *Def, *identity.KeyPair) {
	t.Helper()
	e, d, ident := persistentEngine(t)
	cfg := e.cfg
	e.Close()
	bs, err := blob.Open(t.TempDir(), [32]byte{1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bs.Close() })
	cfg.Blobs = bs
	e2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e2.Close)
	return e2, d, ident
}
