package files

import (
	"bufio"
	"bytes"
	"errors"
	"testing"

	"github.com/pipesnet/pipes/internal/blob"
	"github.com/pipesnet/pipes/internal/ids"
)

func testManifest() *blob.Manifest {
	return &blob.Manifest{Size: 2*blob.DefaultChunkSize + 10, ChunkSize: blob.DefaultChunkSize, Chunks: make([][32]byte, 3)}
}

func TestFramesRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	root := ids.Content{7}
	writeFrame(&buf, reqChunks, chunksRequest(root, 3, 5))
	writeFrame(&buf, reqManifest, root[:])
	r := bufio.NewReader(&buf)
	typ, body, err := readFrame(r, maxRequest, nil)
	if err != nil {
		t.Fatal(err)
	}
	q, err := parseRequest(typ, body)
	if err != nil || q.typ != reqChunks || q.root != root || q.first != 3 || q.count != 5 {
		t.Fatalf("request %+v, %v", q, err)
	}
	typ, body, _ = readFrame(r, maxRequest, nil)
	if q, err := parseRequest(typ, body); err != nil || q.typ != reqManifest {
		t.Fatalf("request %+v, %v", q, err)
	}
}

// Lengths are checked before anything is allocated: a frame longer than
// what is expected next, a chunk answer longer than the chunk, a range
// out of bounds, an answer about another chunk.
func TestFrameBounds(t *testing.T) {
	var buf bytes.Buffer
	writeFrame(&buf, reqChunks, make([]byte, 1000))
	if _, _, err := readFrame(bufio.NewReader(&buf), maxRequest, nil); !errors.Is(err, ErrProtocol) {
		t.Errorf("long request: %v", err)
	}
	if _, err := parseRequest(reqChunks, chunksRequest(ids.Content{}, 0, maxRange+1)); !errors.Is(err, ErrProtocol) {
		t.Errorf("range too long: %v", err)
	}
	if _, err := parseRequest(reqChunks, chunksRequest(ids.Content{}, blob.MaxChunks-1, 2)); !errors.Is(err, ErrProtocol) {
		t.Errorf("range past the last chunk: %v", err)
	}
	m := testManifest()
	buf.Reset()
	writeFrame(&buf, respChunk, []byte{0, 0, 0, 2}, make([]byte, 11)) // chunk 2 has 10 bytes
	if _, err := readChunkAnswer(bufio.NewReader(&buf), m, 2, nil); !errors.Is(err, ErrProtocol) {
		t.Errorf("chunk longer than the manifest says: %v", err)
	}
	buf.Reset()
	writeFrame(&buf, respChunk, []byte{0, 0, 0, 1}, make([]byte, 10))
	if _, err := readChunkAnswer(bufio.NewReader(&buf), m, 2, nil); !errors.Is(err, ErrProtocol) {
		t.Errorf("answer about another chunk: %v", err)
	}
	buf.Reset()
	writeFrame(&buf, respChunk, []byte{0, 0, 0, 2}, make([]byte, 10))
	if a, err := readChunkAnswer(bufio.NewReader(&buf), m, 2, nil); err != nil || len(a.data) != 10 {
		t.Errorf("a good answer: %+v %v", a, err)
	}
	// A manifest answer whose manifest is not the root's.
	body := append([]byte{0, 1, 'x'}, m.Marshal()...)
	if _, _, err := parseManifestResp(body, ids.Content{1}); !errors.Is(err, ErrBadData) {
		t.Errorf("a manifest of another root: %v", err)
	}
	if name, got, err := parseManifestResp(body, m.Root()); err != nil || name != "x" || got.Size != m.Size {
		t.Errorf("a good manifest answer: %q %v", name, err)
	}
}

// FuzzNetworkInput feeds arbitrary bytes to every reader of network
// input: the holder's request reader, the fetcher's answer readers and
// the announcement decoder. None may panic or allocate past its bound.
func FuzzNetworkInput(f *testing.F) {
	var seed bytes.Buffer
	writeFrame(&seed, reqChunks, chunksRequest(ids.Content{1}, 0, 2))
	writeFrame(&seed, respChunk, []byte{0, 0, 0, 0}, make([]byte, 16))
	f.Add(seed.Bytes())
	m := testManifest()
	f.Add(append([]byte{respManifest, 0, 0, 0, 5, 0, 1, 'n'}, m.Marshal()...))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bufio.NewReader(bytes.NewReader(b))
		for {
			typ, body, err := readFrame(r, maxRequest, nil)
			if err != nil {
				break
			}
			if len(body) > maxRequest {
				t.Fatalf("request body of %d bytes", len(body))
			}
			parseRequest(typ, body)
		}
		r = bufio.NewReader(bytes.NewReader(b))
		for i := 0; ; i = (i + 1) % len(m.Chunks) {
			a, err := readChunkAnswer(r, m, i, nil)
			if err != nil {
				break
			}
			if a.data != nil && len(a.data) != m.ChunkLen(i) {
				t.Fatalf("chunk %d answer of %d bytes", i, len(a.data))
			}
		}
		if len(b) > 0 {
			parseManifestResp(b, m.Root())
		}
		decodeHoldings(b, testNetwork, ids.Node{})
	})
}
