package history

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/store"
)

// Cert returns the stored certificate of sender.
func (l *Log) Cert(sender ids.Node) ([]byte, error) {
	v, err := l.db.Get(store.Key(tCert, l.cfg.Node[:], sender[:]))
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrNotFound
	}
	return v, err
}

// Segment is the tail of one signed batch of a sender, as sync sends it:
// the ids of the batch's packets before the first record, then the records
// to the batch's end, and the batch's signature over all of the ids.
type Segment struct {
	FirstSeq  uint64
	PrefixIDs []ids.Packet
	Records   []*Record
	Signature []byte
}

// Segments calls fn with the segments that hold sender's packets from
// sequence number from on, batch by batch, until they cover to, fn
// returns false, or about maxBytes of data have been passed (at least one
// segment is). The first segment starts at from; later ones at their
// batch's start.
func (l *Log) Segments(sender ids.Node, from, to uint64, maxBytes int, fn func(*Segment) bool) error {
	if from == 0 {
		from = 1
	}
	head := l.Head(sender)
	to = min(to, head)
	lower := l.key(tProof, sender[:], be(from))
	upper := store.PrefixEnd(l.key(tProof, sender[:]))
	type proof struct {
		first, last uint64
		sig         []byte
	}
	var proofs []proof
	covered := from - 1
	errStop := errors.New("stop")
	err := l.db.Range(lower, upper, func(k, v []byte) error {
		if len(v) < 8 {
			return fmt.Errorf("%w: proof record", ErrDamaged)
		}
		p := proof{first: binary.BigEndian.Uint64(v), last: binary.BigEndian.Uint64(k[len(k)-8:]), sig: bytes.Clone(v[8:])}
		if p.last <= covered {
			return nil
		}
		proofs = append(proofs, p)
		covered = p.last
		if covered >= to {
			return errStop
		}
		return nil
	})
	if err != nil && err != errStop {
		return fmt.Errorf("history: read proofs: %w", err)
	}
	sent := 0
	pos := from
	for len(proofs) > 0 {
		// Read the records of a few batches at once: one scan of the
		// sequence index and of the blocks for all of them (a batch holds
		// at most 2 MiB of data, so this bounds memory too).
		n, count := 0, uint64(0)
		for n < len(proofs) && n < segmentGroup && (n == 0 || count+proofs[n].last-proofs[n].first+1 <= segmentGroupPackets) {
			count += proofs[n].last - proofs[n].first + 1
			n++
		}
		group := proofs[:n]
		proofs = proofs[n:]
		for i, p := range group {
			if (i == 0 && p.first > pos) || (i > 0 && p.first != group[i-1].last+1) {
				return fmt.Errorf("%w: proofs of %x do not cover seq %d", ErrDamaged, sender[:4], pos)
			}
			if p.last > head {
				// A batch logged only in part (the rest was dropped while
				// it waited behind a gap): serve up to the batch before.
				group, proofs = group[:i], nil
				break
			}
		}
		if len(group) == 0 {
			return nil
		}
		n = len(group)
		recs, err := l.seqRange(sender, group[0].first, group[n-1].last)
		if err != nil {
			return err
		}
		for _, p := range group {
			seg := &Segment{FirstSeq: p.first, Signature: p.sig}
			for _, r := range recs[p.first-group[0].first : p.last-group[0].first+1] {
				if r.Seq < pos {
					seg.PrefixIDs = append(seg.PrefixIDs, r.ID)
					continue
				}
				seg.Records = append(seg.Records, r)
				sent += len(r.Data) + 64
			}
			pos = p.last + 1
			if !fn(seg) || sent >= maxBytes || pos > to {
				return nil
			}
		}
	}
	return nil
}

// Segments reads at most segmentGroup batches, or about
// segmentGroupPackets packets, at a time.
const (
	segmentGroup        = 16
	segmentGroupPackets = 4096
)
