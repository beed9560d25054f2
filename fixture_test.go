package pipes_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pipesnet/pipes"
	"github.com/pipesnet/pipes/internal/testnet"
)

// The fixture is a data directory written by an earlier version of the
// code: a platform with one network, identity and node, a persistent
// pipeline holding packets and a file packet, and an encrypted persistent
// pipeline. Every later version must open it and read its history back,
// so that the at-rest keys (and the formats they protect) cannot change
// unnoticed. The fixture is written once, by
//
//	PIPES_WRITE_FIXTURE=1 go test -run TestWriteFixture .
//
// and never rewritten when the code changes: a new format gets a new
// fixture directory next to the old ones.
const (
	fixtureDir      = "testdata/datadir-v1"
	fixtureManifest = "testdata/datadir-v1.json"
	fixtureSecret   = "correct horse battery staple, v1"
)

// fixture records what the writer stored, for the reopen test to check.
type fixture struct {
	Node      string            `json:"node"`
	Pipelines []fixturePipeline `json:"pipelines"`
}

type fixturePipeline struct {
	Name      string          `json:"name"`
	ID        string          `json:"id"`
	Encrypted bool            `json:"encrypted"`
	Packets   []fixturePacket `json:"packets"`
}

type fixturePacket struct {
	ID   string `json:"id"`
	Data string `json:"data"`
	File bool   `json:"file,omitempty"`
}

func hex32(t *testing.T, s string) [32]byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		t.Fatalf("bad id %q in the fixture manifest: %v", s, err)
	}
	return [32]byte(b)
}

// copyDataDir copies the data directory src to dst with the modes a
// platform gives its files (a checkout drops them, and key files that
// others may read are refused).
func copyDataDir(t *testing.T, dst, src string) {
	t.Helper()
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	err := filepath.WalkDir(dst, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.Chmod(path, 0o700)
		}
		return os.Chmod(path, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestWriteFixture writes the fixture directory; it runs only when asked.
func TestWriteFixture(t *testing.T) {
	if os.Getenv("PIPES_WRITE_FIXTURE") == "" {
		t.Skip("set PIPES_WRITE_FIXTURE=1 to rewrite " + fixtureDir)
	}
	if err := os.RemoveAll(fixtureDir); err != nil {
		t.Fatal(err)
	}
	m := &testnet.Member{Dir: fixtureDir}
	m.Open(t)
	net := filepath.Join(t.TempDir(), "fixture.net")
	if _, err := pipes.CreateNetwork(net, pipes.NetworkSpec{Name: "fixture", Secret: testnet.Secret, KDF: pipes.FastKDF}); err != nil {
		t.Fatal(err)
	}
	nw, err := m.P.AddNetwork(net)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := nw.SetSecret(testnet.Secret); err != nil || !ok {
		t.Fatalf("SetSecret: %v %v", ok, err)
	}
	id, err := m.P.AddIdentity("fixture")
	if err != nil {
		t.Fatal(err)
	}
	if m.N, err = m.P.AddNode(nw, id, "fixture-loc"); err != nil {
		t.Fatal(err)
	}
	m.Start(t)
	fx := fixture{Node: m.N.ID().String()}
	add := func(name string, opts pipes.PipelineOptions, n int, file string) {
		pid, err := m.N.CreatePipeline(name, opts)
		if err != nil {
			t.Fatal(err)
		}
		p, _ := m.N.Pipeline(pid)
		fp := fixturePipeline{Name: name, ID: pid.String(), Encrypted: opts.Encrypted}
		for i, id := range testnet.PutN(t, p, n, name) {
			fp.Packets = append(fp.Packets, fixturePacket{ID: id.String(), Data: fmt.Sprintf("%s %d", name, i)})
		}
		if file != "" {
			path := filepath.Join(t.TempDir(), "file.txt")
			if err := os.WriteFile(path, []byte(file), 0o644); err != nil {
				t.Fatal(err)
			}
			id, err := p.PutFile(path)
			if err != nil {
				t.Fatal(err)
			}
			fp.Packets = append(fp.Packets, fixturePacket{ID: id.String(), Data: file, File: true})
		}
		fx.Pipelines = append(fx.Pipelines, fp)
	}
	add("notes", pipes.PipelineOptions{Persistent: true}, 3, "a file kept in the blob store\n")
	add("vault", pipes.PipelineOptions{Persistent: true, Encrypted: true, Secret: []byte(fixtureSecret)}, 2, "")
	if err := m.P.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := json.MarshalIndent(fx, "", "\t")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fixtureManifest, append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestReopenFixtureDataDir opens a copy of the committed fixture and reads
// every stored pipeline and packet back, on a node not started and again
// once it is started: the keys derived from the network key and the
// formats on disk still read what an earlier version wrote.
func TestReopenFixtureDataDir(t *testing.T) {
	raw, err := os.ReadFile(fixtureManifest)
	if err != nil {
		t.Fatal(err)
	}
	var fx fixture
	if err := json.Unmarshal(raw, &fx); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "datadir")
	copyDataDir(t, dir, fixtureDir)
	m := &testnet.Member{Dir: dir}
	m.Open(t)
	if m.N, err = m.P.Node(pipes.NodeID(hex32(t, fx.Node))); err != nil {
		t.Fatalf("the fixture's node: %v", err)
	}
	check := func(started bool) {
		t.Helper()
		if got := len(m.N.Pipelines()); got != len(fx.Pipelines) {
			t.Fatalf("started %v: %d pipelines, want %d", started, got, len(fx.Pipelines))
		}
		for _, fp := range fx.Pipelines {
			p, err := m.N.Pipeline(pipes.PipelineID(hex32(t, fp.ID)))
			if err != nil {
				t.Fatalf("started %v: pipeline %q: %v", started, fp.Name, err)
			}
			if p.Name() != fp.Name || !p.Persistent() || p.Encrypted() != fp.Encrypted {
				t.Fatalf("started %v: pipeline %q read back as %q persistent %v encrypted %v", started, fp.Name, p.Name(), p.Persistent(), p.Encrypted())
			}
			if fp.Encrypted && !p.HasSecret() {
				t.Fatalf("started %v: %q: the stored pipeline key is not found", started, fp.Name)
			}
			got := testnet.History(t, p)
			if len(got) != len(fp.Packets) {
				t.Fatalf("started %v: %q holds %d packets, want %d", started, fp.Name, len(got), len(fp.Packets))
			}
			for i, want := range fp.Packets {
				pk := got[i]
				if pk.ID() != pipes.PacketID(hex32(t, want.ID)) || pk.IsFile() != want.File {
					t.Fatalf("started %v: %q LogID %d is %s (file %v), want %s (file %v)", started, fp.Name, i, pk.ID(), pk.IsFile(), want.ID, want.File)
				}
				byID, err := p.PacketWithID(pk.ID())
				if err != nil || byID.LogID() != int64(i) {
					t.Fatalf("started %v: %q PacketWithID(%s): %v %v", started, fp.Name, want.ID, byID, err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // against a hang only
				r, err := byID.OpenContext(ctx)
				if err != nil {
					cancel()
					t.Fatalf("started %v: %q Open of LogID %d: %v", started, fp.Name, i, err)
				}
				d, err := io.ReadAll(r)
				r.Close()
				cancel()
				if err != nil || string(d) != want.Data {
					t.Fatalf("started %v: %q LogID %d read %q, %v; want %q", started, fp.Name, i, d, err, want.Data)
				}
			}
		}
	}
	check(false)
	m.Start(t)
	check(true)
	if err := m.P.Close(); err != nil {
		t.Fatal(err)
	}
}
