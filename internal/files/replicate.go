package files

import (
	"context"
	"fmt"
	"time"

	"github.com/pipesnet/pipes/internal/ids"
)

// Replicate makes the network keep at least copies copies of file id on
// online nodes from now on: it sets the file's copies duty (signed by
// this node, stored by every node, broadcast), which every node then
// meets on its own (see decideCopies): nodes take copies while there are
// too few alive holders, those that took a copy for the duty release it
// while there are too many online. Copies 0 ends the duty; the copies
// taken for it stay where they are (a node's user may Remove them).
//
// It returns once copies online nodes hold the file, or with ctx's error
// (the duty stays). Errors: ErrInvalid (copies below 0 or above
// MaxCopies), ErrNotFound (no copy here and no holder known),
// ErrTooFewNodes (the network knows fewer nodes than copies: the duty is
// kept, and met as nodes join).
func (s *Service) Replicate(ctx context.Context, id ids.Content, copies int) error {
	if copies < 0 || copies > MaxCopies {
		return fmt.Errorf("%w: %d copies (0 to %d)", ErrInvalid, copies, MaxCopies)
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.wg.Done()
	v := s.view(time.Now())
	if len(v.holders(id, id, false)) == 0 && s.rep.dut.get(dutyCopies, id) == nil {
		if _, ok := s.recordOf(id); !ok && len(s.idx.holders(id)) == 0 {
			return fmt.Errorf("%w: file %s", ErrNotFound, id.Short())
		}
	}
	if err := s.setDuty(ctx, &duty{kind: dutyCopies, file: id, copies: copies}); err != nil {
		return err
	}
	if copies == 0 {
		return nil
	}
	if n := len(v.nodes(false)); n < copies {
		return fmt.Errorf("%w: %d copies asked, %d nodes known", ErrTooFewNodes, copies, n)
	}
	return s.waitUntil(ctx, func(v *view) bool { return len(v.holders(id, id, true)) >= copies })
}

// waitUntil waits until cond holds of this node's view, or ctx or the
// service ends.
func (s *Service) waitUntil(ctx context.Context, cond func(v *view) bool) error {
	t := time.NewTicker(s.rep.every)
	defer t.Stop()
	for {
		ch := s.rep.changed()
		if cond(s.view(time.Now())) {
			return nil
		}
		select {
		case <-ch:
		case <-t.C:
		case <-ctx.Done():
			return s.ended(ctx)
		case <-s.ctx.Done():
			return ErrClosed
		}
	}
}

// withDuties fills the duties' part of i: copies, archive.
func (s *Service) withDuties(i Info) Info {
	if d := s.rep.dut.get(dutyCopies, i.ID); d != nil {
		i.Copies = d.copies
	}
	d := s.rep.dut.get(dutyArchive, i.ID)
	if d == nil {
		return i
	}
	a := &ArchiveInfo{Data: d.data, Parity: d.parity, Compressed: d.compressed}
	for k, sh := range d.shards {
		r, ok := s.recordOf(sh)
		var rp *record
		if ok && !r.temp {
			rp = &r
		}
		a.Shards = append(a.Shards, ShardInfo{Index: k, ID: sh, Holders: s.holdersOf(sh, rp)})
	}
	i.Archive = a
	return i
}
