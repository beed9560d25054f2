package pipeline

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/pipesnet/pipes/internal/kinds"
	"github.com/pipesnet/pipes/internal/testutil"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

// fileAnswers returns the messages sent on fn so far, with the FileData
// ones decoded (nil for the others: sealed ones).
func fileAnswers(t *testing.T, fn *fakeNet) []*pb.FileData {
	t.Helper()
	fn.mu.Lock()
	defer fn.mu.Unlock()
	var out []*pb.FileData
	for _, m := range fn.sent {
		if m.kind != kinds.FileData {
			out = append(out, nil)
			continue
		}
		var d pb.FileData
		if err := proto.Unmarshal(m.payload, &d); err != nil {
			t.Fatal(err)
		}
		out = append(out, &d)
	}
	return out
}

// TestFileChunkRequests: a node serves a chunk of a file it holds to a
// member that names a pipeline whose packet carries it; it answers
// "missing" for an unknown file or chunk, or a file of another pipeline;
// it does not answer for a pipeline it does not know, nor on a
// point-to-point pipeline unless the request comes sealed from its other
// node; a malformed request is an error.
func TestFileChunkRequests(t *testing.T) {
	fn, nodes := persistentNet(t, 1, nil)
	a := nodes[0].e
	// The asker is not on the fake network: answers are recorded, then
	// fail. Its encryption key is known, so sealed answers can be made.
	asker := [32]byte{0x5a}
	hk, err := kem.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	fn.mu.Lock()
	fn.keys[asker] = hk.PublicKey().Bytes()
	fn.mu.Unlock()
	ctx := t.Context()
	d, err := a.Create(ctx, "files", Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	other, err := a.Create(ctx, "other", Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	p2p, _, err := newDef(testNet, a.self, "p2p", Options{ToNode: asker}, nil)
	if err != nil {
		t.Fatal(err)
	}
	a.Restore(p2p)
	content := bytes.Repeat([]byte("chunk "), 1000)
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := a.PutFile(ctx, d.ID, path, 0); err != nil {
		t.Fatal(err)
	}
	var root [32]byte
	a.files.mu.Lock()
	for r := range a.files.owners {
		root = r
	}
	a.files.mu.Unlock()

	// ask hands a request to a chunk server and returns how many messages
	// it sent, and the last if it is a FileData.
	ask := func(pipe, root [32]byte, index uint32, sealed bool) (int, *pb.FileData) {
		t.Helper()
		before := len(fileAnswers(t, fn))
		a.serveChunk(chunkReq{src: asker, sealed: sealed, get: &pb.FileGet{Root: root[:], Pipeline: pipe[:], Index: index}})
		got := fileAnswers(t, fn)
		if len(got) == before {
			return 0, nil
		}
		return len(got) - before, got[len(got)-1]
	}
	if n, ans := ask(d.ID, root, 0, false); n != 1 || ans == nil || ans.Missing || !bytes.Equal(ans.Data, content) || [32]byte(ans.Root) != root {
		t.Fatalf("the chunk: %d answers, missing %v", n, ans.GetMissing())
	}
	for _, c := range []struct {
		what  string
		pipe  [32]byte
		root  [32]byte
		index uint32
	}{
		{"an unknown file", d.ID, [32]byte{0xf0}, 0},
		{"a chunk beyond the file", d.ID, root, 7},
		{"the file named with another pipeline", other.ID, root, 0},
	} {
		if n, ans := ask(c.pipe, c.root, c.index, false); n != 1 || ans == nil || !ans.Missing || len(ans.Data) != 0 {
			t.Fatalf("%s: %d answers, missing %v with %d bytes; want one, missing", c.what, n, ans.GetMissing(), len(ans.GetData()))
		}
	}
	if n, _ := ask([32]byte{0xee}, root, 0, false); n != 0 {
		t.Fatal("answered for a pipeline this node does not know")
	}
	if n, _ := ask(p2p.ID, root, 0, false); n != 0 {
		t.Fatal("answered on a point-to-point pipeline a request that did not come sealed")
	}
	if n, ans := ask(p2p.ID, root, 0, true); n != 1 || ans != nil {
		t.Fatalf("a sealed request on the point-to-point pipeline: %d answers (want one, sealed)", n)
	}
	if err := a.handleFileGet(asker, &pb.FileGet{Root: root[:4], Pipeline: d.ID[:]}, false); err == nil {
		t.Fatal("a malformed request was taken")
	}

	// Through the dispatcher and the chunk servers.
	raw, _ := proto.Marshal(&pb.FileGet{Root: root[:], Pipeline: d.ID[:], Index: 0})
	before := len(fileAnswers(t, fn))
	a.DeliverRouted(asker, kinds.FileGet, raw)
	testutil.WaitFor(t, "the routed request answered", func() bool { return len(fileAnswers(t, fn)) > before })
	if got := fileAnswers(t, fn)[before]; got == nil || got.Missing || !bytes.Equal(got.Data, content) {
		t.Fatal("the routed request was not answered with the chunk")
	}
}

// TestFileDataOnlyFromTheNodeAsked: an answer for a file no fetch waits
// for, or from another node than the one asked, is dropped.
func TestFileDataOnlyFromTheNodeAsked(t *testing.T) {
	_, nodes := persistentNet(t, 1, nil)
	a := nodes[0].e
	root, asked := [32]byte{0x77}, [32]byte{0x33}
	if err := a.handleFileData(asked, &pb.FileData{Root: root[:], Data: []byte("x")}, false); err != nil {
		t.Fatal(err)
	}
	ft := &fetch{root: root, arrive: make(chan fileAnswer, 1), src: asked}
	a.files.mu.Lock()
	a.files.active[root] = ft
	a.files.mu.Unlock()
	defer a.fetchDone(root)
	if err := a.handleFileData([32]byte{0x44}, &pb.FileData{Root: root[:], Data: []byte("x")}, false); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ft.arrive:
		t.Fatal("an answer from a node not asked reached the fetch")
	default:
	}
	if err := a.handleFileData(asked, &pb.FileData{Root: root[:], Data: []byte("y")}, false); err != nil {
		t.Fatal(err)
	}
	select {
	case ans := <-ft.arrive:
		if string(ans.d.Data) != "y" || ans.src != asked {
			t.Fatal("the fetch got another answer")
		}
	default:
		t.Fatal("the answer of the node asked did not reach the fetch")
	}
	if err := a.handleFileData(asked, &pb.FileData{Root: root[:3]}, false); err == nil {
		t.Fatal("malformed file data was taken")
	}
}
