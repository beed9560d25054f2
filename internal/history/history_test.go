package history

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/store"
)

func testID(r *Record) ids.Packet {
	h := sha256.New()
	h.Write(r.Sender[:])
	h.Write(binary.BigEndian.AppendUint64(nil, r.Seq))
	h.Write(r.Data)
	return ids.Packet(h.Sum(nil))
}

func rec(sender byte, seq uint64, data string) *Record {
	r := &Record{Sender: [32]byte{sender}, Seq: seq, HLC: int64(seq), Type: 7, Data: []byte(data)}
	r.ID = testID(r)
	return r
}

func openLog(t *testing.T, db *store.DB) *Log {
	t.Helper()
	l, err := Open(db, Config{Node: [32]byte{9}, Pipeline: [32]byte{8}, Key: [32]byte{7}, PacketID: testID})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestAppendReopenAndRead(t *testing.T) {
	dir := t.TempDir()
	db := openStore(t, dir)
	l := openLog(t, db)
	a := []*Record{rec(1, 1, "secret-alpha"), rec(2, 1, "secret-beta"), rec(1, 2, "secret-gamma")}
	if err := l.Append(a, []Proof{{Sender: [32]byte{1}, FirstSeq: 1, LastSeq: 2, Signature: []byte("sig1"), Cert: []byte("cert1")},
		{Sender: [32]byte{2}, FirstSeq: 1, LastSeq: 1, Signature: []byte("sig2")}}); err != nil {
		t.Fatal(err)
	}
	if a[2].LogID != 2 {
		t.Fatalf("LogID %d", a[2].LogID)
	}
	// A gap is refused and changes nothing.
	if err := l.Append([]*Record{rec(1, 3, "x"), rec(1, 5, "y")}, nil); !errors.Is(err, ErrGap) {
		t.Fatalf("gap: %v", err)
	}
	if l.Next() != 3 || l.Head([32]byte{1}) != 2 {
		t.Fatalf("after refused append: next %d head %d", l.Next(), l.Head([32]byte{1}))
	}
	db.Close()

	db = openStore(t, dir)
	defer db.Close()
	l = openLog(t, db)
	if l.Next() != 3 || l.Head([32]byte{1}) != 2 || l.Head([32]byte{2}) != 1 || l.Bytes() != int64(len("secret-alphasecret-betasecret-gamma")) {
		t.Fatalf("reopened: next %d heads %v bytes %d", l.Next(), l.Heads(), l.Bytes())
	}
	var got []string
	l.Since(0, 0, func(r *Record) bool { got = append(got, string(r.Data)); return true })
	if len(got) != 2 || got[0] != "secret-beta" || got[1] != "secret-gamma" {
		t.Fatalf("Since(0): %q", got)
	}
	r, err := l.ByID(a[1].ID)
	if err != nil || r.LogID != 1 || string(r.Data) != "secret-beta" || r.Type != 7 {
		t.Fatalf("ByID: %+v %v", r, err)
	}
	if _, err := l.ByID([32]byte{1}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("ByID of nothing: %v", err)
	}
	var segs []*Segment
	l.Segments([32]byte{1}, 2, 2, 1<<20, func(s *Segment) bool { segs = append(segs, s); return true })
	if len(segs) != 1 || segs[0].FirstSeq != 1 || len(segs[0].PrefixIDs) != 1 || segs[0].PrefixIDs[0] != a[0].ID ||
		len(segs[0].Records) != 1 || string(segs[0].Records[0].Data) != "secret-gamma" || string(segs[0].Signature) != "sig1" {
		t.Fatalf("Segments: %+v", segs)
	}
	if c, err := l.Cert([32]byte{1}); err != nil || string(c) != "cert1" {
		t.Fatalf("Cert: %q %v", c, err)
	}
	db.Close()
	// Nothing of the packets' data is on disk in clear.
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := os.ReadFile(p)
		if bytes.Contains(b, []byte("secret-")) {
			t.Errorf("%s holds packet plaintext", p)
		}
		return nil
	})
}

func TestDamagedRecordIsAnError(t *testing.T) {
	db := openStore(t, t.TempDir())
	defer db.Close()
	l := openLog(t, db)
	if err := l.Append([]*Record{rec(1, 1, "a")}, nil); err != nil {
		t.Fatal(err)
	}
	k := l.key(tLog, be(0))
	v, _ := db.Get(k)
	v[len(v)-1] ^= 1
	db.Set(k, v)
	if _, err := l.Get(0); !errors.Is(err, ErrDamaged) {
		t.Fatalf("tampered record: %v", err)
	}
	// Open finds the damage too, and so does another key.
	if _, err := Open(db, Config{Node: [32]byte{9}, Pipeline: [32]byte{8}, Key: [32]byte{7}, PacketID: testID}); !errors.Is(err, ErrDamaged) {
		t.Fatalf("Open of a damaged log: %v", err)
	}
	v[len(v)-1] ^= 1
	db.Set(k, v)
	if _, err := Open(db, Config{Node: [32]byte{9}, Pipeline: [32]byte{8}, Key: [32]byte{6}, PacketID: testID}); !errors.Is(err, ErrDamaged) {
		t.Fatalf("wrong key: %v", err)
	}
}

func TestDefsRoundTrip(t *testing.T) {
	db := openStore(t, t.TempDir())
	defer db.Close()
	key := DeriveKey([32]byte{1}, "definitions", nil)
	if err := SaveSealed(db, KindDef, ids.Node{2}, ids.Pipeline{3}, key, []byte("def")); err != nil {
		t.Fatal(err)
	}
	if err := SaveSealed(db, KindTomb, ids.Node{2}, ids.Pipeline{4}, key, []byte("tomb")); err != nil {
		t.Fatal(err)
	}
	defs, err := LoadSealed[ids.Pipeline](db, KindDef, ids.Node{2}, key)
	if err != nil || len(defs) != 1 || string(defs[ids.Pipeline{3}]) != "def" {
		t.Fatalf("%q %v", defs, err)
	}
	if _, err := LoadSealed[ids.Pipeline](db, KindDef, ids.Node{2}, [32]byte{}); !errors.Is(err, ErrDamaged) {
		t.Fatalf("wrong key: %v", err)
	}
	if err := DeleteSealed(db, KindDef, ids.Node{2}, ids.Pipeline{3}); err != nil {
		t.Fatal(err)
	}
	if defs, err := LoadSealed[ids.Pipeline](db, KindDef, ids.Node{2}, key); err != nil || len(defs) != 0 {
		t.Fatalf("after delete: %q %v", defs, err)
	}
	if tombs, err := LoadSealed[ids.Pipeline](db, KindTomb, ids.Node{2}, key); err != nil || string(tombs[ids.Pipeline{4}]) != "tomb" {
		t.Fatalf("tombstones: %q %v", tombs, err)
	}
	// Files' records are kept by content root, in the same key layout.
	if err := SaveSealed(db, KindFetch, ids.Node{2}, ids.Content{5}, key, []byte("fetch")); err != nil {
		t.Fatal(err)
	}
	if fetches, err := LoadSealed[ids.Content](db, KindFetch, ids.Node{2}, key); err != nil || len(fetches) != 1 || string(fetches[ids.Content{5}]) != "fetch" {
		t.Fatalf("files to fetch: %q %v", fetches, err)
	}
}

// TestBlocksAndRuns: many records across blocks and interleaved senders
// read back by LogID, by id and by sender sequence, also after a reopen.
func TestBlocksAndRuns(t *testing.T) {
	dir := t.TempDir()
	db := openStore(t, dir)
	l := openLog(t, db)
	var all []*Record
	seq := map[byte]uint64{}
	for round := range 7 {
		var recs []*Record
		for i := range 300 {
			s := byte(1 + (i/50+round)%3) // runs of 50 of one sender, three senders
			seq[s]++
			recs = append(recs, rec(s, seq[s], fmt.Sprintf("r%d-%d", round, i)))
		}
		if err := l.Append(recs, nil); err != nil {
			t.Fatal(err)
		}
		all = append(all, recs...)
	}
	check := func(l *Log) {
		t.Helper()
		i := 0
		if err := l.Since(-1, 0, func(r *Record) bool {
			if r.LogID != int64(i) || r.ID != all[i].ID {
				t.Fatalf("Since: record %d is %d", i, r.LogID)
			}
			i++
			return true
		}); err != nil || i != len(all) {
			t.Fatalf("Since read %d of %d: %v", i, len(all), err)
		}
		for _, j := range []int{0, 255, 256, 299, 300, 1000, len(all) - 1} {
			if r, err := l.ByID(all[j].ID); err != nil || r.LogID != int64(j) {
				t.Fatalf("ByID %d: %v %v", j, r, err)
			}
		}
		got, err := l.seqRange([32]byte{2}, 40, 460)
		if err != nil {
			t.Fatal(err)
		}
		for k, r := range got {
			if r.Sender != ([32]byte{2}) || r.Seq != uint64(40+k) {
				t.Fatalf("seqRange: %d is %x/%d", k, r.Sender[:1], r.Seq)
			}
		}
	}
	check(l)
	db.Close()
	db = openStore(t, dir)
	defer db.Close()
	l = openLog(t, db)
	if l.Next() != int64(len(all)) {
		t.Fatalf("Next after reopen %d, want %d", l.Next(), len(all))
	}
	check(l)
	// Appending after the reopen continues the runs.
	seq[1]++
	r := rec(1, seq[1], "after")
	if err := l.Append([]*Record{r}, nil); err != nil || r.LogID != int64(len(all)) {
		t.Fatalf("append after reopen: %v %d", err, r.LogID)
	}
	all = append(all, r)
	check(l)
}

// TestBulkAppendIsIndexedLater: a large append leaves the index by packet
// id to IndexSome; ByID finds its packets before and after.
func TestBulkAppendIsIndexedLater(t *testing.T) {
	dir := t.TempDir()
	db := openStore(t, dir)
	l := openLog(t, db)
	var recs []*Record
	for i := range 3000 {
		recs = append(recs, rec(1, uint64(i+1), fmt.Sprint(i)))
	}
	if err := l.Append(recs, nil); err != nil {
		t.Fatal(err)
	}
	if l.Unindexed() != 3000 {
		t.Fatalf("unindexed %d after a bulk append", l.Unindexed())
	}
	if r, err := l.ByID(recs[2500].ID); err != nil || r.LogID != 2500 {
		t.Fatalf("ByID before indexing: %v %v", r, err)
	}
	total := 0
	for {
		n, err := l.IndexSome(1000)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		total += n
	}
	if total != 3000 || l.Unindexed() != 0 {
		t.Fatalf("indexed %d, %d left", total, l.Unindexed())
	}
	// A small append now indexes at once, and the index survives a reopen.
	r := rec(1, 3001, "small")
	if err := l.Append([]*Record{r}, nil); err != nil || l.Unindexed() != 0 {
		t.Fatalf("small append: %v, %d unindexed", err, l.Unindexed())
	}
	db.Close()
	db = openStore(t, dir)
	defer db.Close()
	l = openLog(t, db)
	if l.Unindexed() != 0 {
		t.Fatalf("%d unindexed after reopen", l.Unindexed())
	}
	for _, i := range []int{0, 1234, 2999} {
		if got, err := l.ByID(recs[i].ID); err != nil || got.LogID != int64(i) {
			t.Fatalf("ByID %d: %v %v", i, got, err)
		}
	}
}

// openStore opens the store in dir; the test closes it (a reopen closes
// it first).
func openStore(t *testing.T, dir string) *store.DB {
	t.Helper()
	db, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return db
}
