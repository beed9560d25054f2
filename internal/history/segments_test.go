package history

import (
	"testing"
)

// TestSegmentsManyBatches: segments of many batches, read a few batches at a
// time, cover the range asked for exactly.
func TestSegmentsManyBatches(t *testing.T) {
	db := openStore(t, t.TempDir())
	defer db.Close()
	l := openLog(t, db)
	seq := uint64(0)
	for b := range 50 {
		var recs []*Record
		first := seq + 1
		for range 10 + b%7 {
			seq++
			recs = append(recs, rec(1, seq, "x"))
		}
		if err := l.Append(recs, []Proof{{Sender: [32]byte{1}, FirstSeq: first, LastSeq: seq, Signature: []byte{byte(b)}}}); err != nil {
			t.Fatal(err)
		}
	}
	got := uint64(0)
	err := l.Segments([32]byte{1}, 5, seq, 1<<30, func(s *Segment) bool {
		got += uint64(len(s.Records))
		return true
	})
	if err != nil || got != seq-4 {
		t.Fatalf("%d records, want %d: %v", got, seq-4, err)
	}
}
