package files

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pipesnet/pipes/internal/ids"
)

// Shards cut from a payload, two of them lost, restore it; each shard
// begins with its header.
func TestShardsRoundTrip(t *testing.T) {
	payload := make([]byte, 300_001)
	rand.NewChaCha8([32]byte{3}).Read(payload)
	file := ids.Content{7}
	sc, err := newScratch(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	paths, err := cutShards(sc, file, 3, 2, bytes.NewReader(payload), int64(len(payload)))
	if err != nil {
		t.Fatal(err)
	}
	size := shardSizeOf(int64(len(payload)), 3)
	open := func(i int) io.ReadCloser {
		f, err := sc.open(paths[i])
		if err != nil {
			t.Fatal(err)
		}
		if err := checkHead(f, file, i, 3, 2); err != nil {
			t.Fatal(err)
		}
		return f
	}
	for _, p := range paths {
		if n, _ := sc.size(p); n != shardHeader+size {
			t.Fatalf("%s has %d bytes, want %d", p, n, shardHeader+size)
		}
	}
	// Data shards 0 and 2 lost: rebuild them from 1, 3, 4.
	enc, err := coder(3, 2)
	if err != nil {
		t.Fatal(err)
	}
	valid := []io.Reader{nil, open(1), nil, open(3), open(4)}
	fill := make([]io.Writer, 5)
	rebuilt := map[int]string{}
	for _, i := range []int{0, 2} {
		rebuilt[i] = "re" + string(rune('0'+i))
		f, err := sc.create(rebuilt[i])
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fill[i] = f
	}
	if err := enc.Reconstruct(valid, fill); err != nil {
		t.Fatal(err)
	}
	var in []io.Reader
	for i := range 3 {
		if p, ok := rebuilt[i]; ok {
			f, err := sc.open(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			in = append(in, f)
		} else {
			in = append(in, open(i))
		}
	}
	var out bytes.Buffer
	if err := enc.Join(&out, in, int64(len(payload))); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), payload) {
		t.Fatal("the restored payload differs")
	}
	if err := checkHead(bytes.NewReader(shardHead(file, 1, 3, 2)), file, 0, 3, 2); err == nil {
		t.Fatal("the header of shard 1 passed for shard 0")
	}
}

// Compression pays for text, not for random bytes, and round-trips.
func TestCompression(t *testing.T) {
	random := make([]byte, 1<<16)
	rand.NewChaCha8([32]byte{4}).Read(random)
	text := bytes.Repeat([]byte("the same line again and again\n"), 3000)
	if pays(random) || !pays(text) || pays(nil) {
		t.Fatalf("pays: random %v, text %v", pays(random), pays(text))
	}
	sc, err := newScratch(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	n, err := compressTo(sc, "z", bytes.NewReader(text))
	if err != nil || n >= int64(len(text)) {
		t.Fatalf("compressed %d bytes to %d: %v", len(text), n, err)
	}
	f, err := sc.open("z")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out bytes.Buffer
	if err := decompressTo(&out, f); err != nil || !bytes.Equal(out.Bytes(), text) {
		t.Fatalf("decompressed: %v", err)
	}
}

// On one node with five others known (that hold nothing): Archive cuts
// compressed shards and sets the duty (its placement never completes
// here); with two data shards and the file removed, Fetch restores the
// file from the three shards left. A duty whose shards restore other
// content gives ErrBadData.
func TestRestoreFromShards(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newFakeHost(t)
		s := New(Config{})
		if err := s.Start(context.Background(), h); err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		for i := range 5 {
			s.idx.apply(&holdings{node: ids.Node{byte(i), 9}, seq: 1})
		}
		raw := make([]byte, 300_000)
		rand.NewChaCha8([32]byte{5}).Read(raw)
		data := []byte(hex.EncodeToString(raw))
		ctx := context.Background()
		id, err := s.AddReader(ctx, "a.txt", bytes.NewReader(data), AddOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Archive(ctx, id, 3, 4); !errors.Is(err, ErrTooFewNodes) {
			t.Fatalf("Archive(3, 4) with six nodes: %v", err)
		}
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = s.Archive(actx, id, 3, 2)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Archive with no node to take the shards: %v", err)
		}
		d := s.rep.dut.get(dutyArchive, id)
		if d == nil || !d.compressed || len(d.shards) != 5 || d.payload >= int64(len(data)) {
			t.Fatalf("archive duty %+v", d)
		}
		st, err := s.Stat(ctx, id)
		if err != nil || st.Archive == nil || len(st.Archive.Shards) != 5 || !st.Archive.Compressed {
			t.Fatalf("Stat: %+v %v", st.Archive, err)
		}
		for _, sh := range append([]ids.Content{id}, d.shards[:2]...) {
			if err := s.Remove(ctx, sh); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Fetch(ctx, id, nil); err != nil {
			t.Fatal(err)
		}
		r, err := s.Open(id)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("restored %d bytes (%v), want the %d added", len(got), err, len(data))
		}
		for _, sh := range d.shards[:2] {
			if _, ok := s.recordOf(sh); ok {
				t.Fatal("a shard fetched for the restore was kept")
			}
		}

		// A duty naming these shards for another file.
		forged := *d
		forged.file, forged.setAt = ids.Content{1, 2, 3}, d.setAt+1
		k := h.Keys()
		encodeDuty(k.Node, k.Cert.NetworkID, &forged)
		s.keepDuty(&forged)
		if err := s.Fetch(ctx, forged.file, nil); !errors.Is(err, ErrBadData) {
			t.Fatalf("restore of other content: %v", err)
		}
	})
}

// A restricted file's archive restores the same blob (its ciphertext,
// under the restricted nonce), which its reader opens.
func TestRestoreRestricted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ik, rk := readKeyOf(t)
		s, _ := startWithKey(t, ik, rk)
		for i := range 3 {
			s.idx.apply(&holdings{node: ids.Node{byte(i), 9}, seq: 1})
		}
		ctx := context.Background()
		p := plain(2*segmentSize+7, 5)
		id, err := s.AddReader(ctx, "secret.txt", bytes.NewReader(p), AddOptions{Readers: []ids.Identity{rk.id}})
		if err != nil {
			t.Fatal(err)
		}
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = s.Archive(actx, id, 2, 2)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Archive with no node to take the shards: %v", err)
		}
		d := s.rep.dut.get(dutyArchive, id)
		if d == nil || !d.restricted {
			t.Fatalf("archive duty %+v", d)
		}
		for _, sh := range []ids.Content{id, d.shards[0]} {
			if err := s.Remove(ctx, sh); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Fetch(ctx, id, nil); err != nil {
			t.Fatal(err)
		}
		r, err := s.Open(id)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil || !bytes.Equal(got, p) {
			t.Fatalf("read %d bytes (%v) of the restored file, want the %d added", len(got), err, len(p))
		}
	})
}
