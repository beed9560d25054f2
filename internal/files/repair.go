package files

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/pipesnet/pipes/internal/blob"
	"github.com/pipesnet/pipes/internal/dispatch"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/kinds"
	"github.com/pipesnet/pipes/internal/service"
)

// maxJobs is the most duty jobs (fetches, rebuilds) a node runs at once.
const maxJobs = 4

// replicator is the service's state of duties: the duties known, the
// jobs running for them, the files this node's user removed (it takes no
// copy of those for a duty).
type replicator struct {
	repairAfter time.Duration
	every       time.Duration // evaluation period
	settle      time.Duration // how long an excess lasts before a copy is released
	warmup      time.Duration // how long a started loop takes no copy (it learns the holders)
	resend      time.Duration // re-broadcast period of the duties a node keeps
	dut         *duties
	wake        chan struct{}
	online      chan ids.Node

	mu       sync.Mutex
	busy     map[ids.Content]bool
	failed   map[ids.Content]time.Time
	excluded map[ids.Content]bool
	seen     chan struct{} // closed and replaced on each change (waiters of Replicate, Archive)
}

func newReplicator(repairAfter time.Duration) *replicator {
	if repairAfter <= 0 {
		repairAfter = 10 * time.Minute
	}
	every := min(max(repairAfter/8, 50*time.Millisecond), time.Minute)
	// A node that starts learns the holders within a few seconds (each
	// sends its holdings to a node that comes online), so it waits that
	// long, not a whole settle, before it takes a copy: a copy taken too
	// early is an excess, released later.
	return &replicator{repairAfter: repairAfter, every: every, settle: 2 * every, warmup: min(2*every, 10*time.Second),
		resend: max(3*repairAfter, time.Second), dut: newDuties(),
		wake: make(chan struct{}, 1), online: make(chan ids.Node, 64),
		busy: map[ids.Content]bool{}, failed: map[ids.Content]time.Time{},
		excluded: map[ids.Content]bool{}, seen: make(chan struct{})}
}

// poke says something the placement depends on changed.
func (r *replicator) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
	r.mu.Lock()
	close(r.seen)
	r.seen = make(chan struct{})
	r.mu.Unlock()
}

// presence is told of each presence event (by the service's subscriber,
// after the index).
func (r *replicator) presence(e service.PresenceEvent) {
	r.poke()
	if e.Online {
		select {
		case r.online <- e.Node:
		default: // the re-broadcast reaches it
		}
	}
}

// changed returns a channel closed at the next poke.
func (r *replicator) changed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen
}

func (r *replicator) isExcluded(id ids.Content) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.excluded[id]
}

// exclusionKey is the store key of a file this node's user removed: "x" |
// id.
func exclusionKey(id ids.Content) []byte { return append([]byte("x"), id[:]...) }

// exclude records that this node takes no copy of id for a duty (on) or
// may again (off).
func (s *Service) exclude(id ids.Content, on bool) {
	s.rep.mu.Lock()
	was := s.rep.excluded[id]
	if on {
		s.rep.excluded[id] = true
	} else {
		delete(s.rep.excluded, id)
	}
	s.rep.mu.Unlock()
	switch {
	case on && !was:
		s.ns.Set(exclusionKey(id), nil)
	case !on && was:
		s.ns.Delete(exclusionKey(id))
	}
}

func (s *Service) validateDuty(payload []byte, _ ids.Node) (any, error) {
	nw := s.network.Load()
	if nw == nil {
		return nil, ErrClosed
	}
	return decodeDuty(payload, *nw, time.Now())
}

func (s *Service) handleDuty(m dispatch.Msg) error {
	d, ok := m.Body.(*duty)
	if !ok { // routed: not validated yet
		v, err := s.validateDuty(m.Payload, m.From)
		if err != nil {
			return err
		}
		d = v.(*duty)
	}
	s.keepDuty(d)
	return nil
}

// keepDuty applies d to the table and stores it if it wins.
func (s *Service) keepDuty(d *duty) bool {
	if !s.rep.dut.apply(d) {
		return false
	}
	if err := s.ns.Set(dutyKey(d.kind, d.file), d.raw); err != nil {
		s.log.Debug("storing a duty", "file", d.file.Short(), "err", err)
	}
	s.rep.poke()
	return true
}

// setDuty signs d as this node's, keeps it and broadcasts it.
func (s *Service) setDuty(ctx context.Context, d *duty) error {
	d.setAt = s.rep.dut.nextSetAt(s.rep.dut.slot(d.kind, d.file))
	k := s.host.Keys()
	encodeDuty(k.Node, k.Cert.NetworkID, d)
	if !s.rep.dut.apply(d) {
		return fmt.Errorf("files: %w: this node keeps %d duties", ErrTooLarge, MaxDuties)
	}
	if err := s.ns.Set(dutyKey(d.kind, d.file), d.raw); err != nil {
		return fmt.Errorf("files: storing the duty: %w", err)
	}
	s.rep.poke()
	if err := s.host.Broadcast(ctx, kinds.Duties, d.raw); err != nil {
		s.log.Debug("broadcasting a duty", "file", d.file.Short(), "err", err)
	}
	return nil
}

// loadDuties reads the duties and exclusions this node stored.
func (s *Service) loadDuties(network [32]byte) error {
	now := time.Now()
	var bad [][]byte
	err := s.ns.Scan([]byte("d"), func(k, v []byte) error {
		d, err := decodeDuty(v, network, now.Add(maxDutySkew)) // stored: set-at may be ahead of a clock set back
		if err != nil {
			bad = append(bad, append([]byte(nil), k...))
			return nil
		}
		s.rep.dut.apply(d)
		return nil
	})
	if err != nil {
		return fmt.Errorf("files: reading the duties: %w", err)
	}
	for _, k := range bad {
		s.ns.Delete(k)
	}
	err = s.ns.Scan([]byte("x"), func(k, _ []byte) error {
		if len(k) == 33 {
			s.rep.excluded[ids.Content(k[1:])] = true
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("files: reading the removed files: %w", err)
	}
	// Temporary shards of a restore or a rebuild that a stop interrupted.
	var temps []ids.Content
	s.mu.Lock()
	for id, r := range s.files {
		if r.temp {
			temps = append(temps, id)
			delete(s.files, id)
		}
	}
	s.mu.Unlock()
	for _, id := range temps {
		s.ns.Delete(recordKey(id))
		s.blobs.Remove(id)
	}
	return nil
}

// view is this node's picture of the network now.
func (s *Service) view(now time.Time) *view {
	v := &view{self: s.host.Self(), now: now, repairAfter: s.rep.repairAfter}
	s.idx.mu.Lock()
	for n, e := range s.idx.nodes {
		if n != v.self {
			v.peers = append(v.peers, peer{node: n, offlineSince: e.offlineSince, files: e.files})
		}
	}
	s.idx.mu.Unlock()
	own := map[ids.Content]struct{}{}
	s.mu.Lock()
	for id, r := range s.files {
		if r.complete && !r.temp {
			own[id] = struct{}{}
		}
	}
	s.mu.Unlock()
	v.peers = append(v.peers, peer{node: v.self, files: own})
	return v
}

// loopState is what the duty loop remembers between evaluations.
type loopState struct {
	since map[ageKey]time.Time   // when a deficit or an excess began
	sent  map[dutySlot]time.Time // when a duty this node keeps was last broadcast
	start time.Time              // of the loop: until warmup has passed, it takes no copy
}

// warm reports whether the loop runs for long enough to act on a lack of
// copies: a node that just started knows only part of the holders, and
// would take copies that are not lacking.
func (st *loopState) warm(now time.Time, settle time.Duration) bool {
	return now.Sub(st.start) >= settle
}

type ageKey struct {
	id     ids.Content
	excess bool
}

// age updates since for k (on: the condition holds now) and returns how
// long it has held.
func (st *loopState) age(k ageKey, on bool, now time.Time) time.Duration {
	if !on {
		delete(st.since, k)
		return 0
	}
	t, ok := st.since[k]
	if !ok {
		st.since[k] = now
		return 0
	}
	return now.Sub(t)
}

// dutyLoop evaluates the duties every period and on each change (of the
// holdings, presence, duties), and sends the duties it keeps to the nodes
// that come online.
func (s *Service) dutyLoop() {
	tick := time.NewTicker(s.rep.every)
	defer tick.Stop()
	// A change is evaluated at once, but at most once per gap: at 1,000
	// nodes, holdings arrive several times a second.
	gap := s.rep.every / 2
	soon := time.NewTimer(time.Hour)
	soon.Stop()
	defer soon.Stop()
	pending := false
	st := &loopState{since: map[ageKey]time.Time{}, sent: map[dutySlot]time.Time{}, start: time.Now()}
	var last time.Time
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-tick.C:
		case <-soon.C:
			pending = false
		case <-s.rep.wake:
			if wait := gap - time.Since(last); wait > 0 {
				if !pending {
					pending = true
					soon.Reset(wait)
				}
				continue
			}
		case n := <-s.rep.online:
			// A node that just started sees every node come online and,
			// knowing few, would think itself the keeper of every duty.
			if st.warm(time.Now(), s.rep.warmup) {
				s.sendDuties(n)
			}
			continue
		}
		last = time.Now()
		s.evaluate(st, last)
	}
}

// sendDuties sends node the duties this node keeps for it.
func (s *Service) sendDuties(node ids.Node) {
	v := s.view(time.Now())
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	for _, d := range s.rep.dut.all() {
		if keeper(v, d.file, node) != v.self {
			continue
		}
		if err := s.host.Send(ctx, node, kinds.Duties, d.raw); err != nil {
			s.log.Debug("sending the duties", "to", node.Short(), "err", err)
			return
		}
	}
}

// evaluate acts on every duty as the placement decides.
func (s *Service) evaluate(st *loopState, now time.Time) {
	v := s.view(now)
	seen := map[ageKey]bool{}
	for _, d := range s.rep.dut.all() {
		slot := dutySlot{d.kind, d.file}
		if keeper(v, d.file, ids.Node{}) == v.self {
			if t, ok := st.sent[slot]; !ok {
				st.sent[slot] = now
			} else if now.Sub(t) >= s.rep.resend {
				st.sent[slot] = now
				if err := s.host.Broadcast(s.ctx, kinds.Duties, d.raw); err != nil {
					s.log.Debug("re-broadcasting a duty", "file", d.file.Short(), "err", err)
				}
			}
		}
		switch {
		case d.ended():
		case d.kind == dutyCopies:
			s.evalCopies(st, v, d, seen)
		case d.kind == dutyArchive:
			s.evalArchive(st, v, d, seen)
		}
	}
	for k := range st.since {
		if !seen[k] {
			delete(st.since, k)
		}
	}
	for _, d := range s.rep.dut.expired(now) {
		s.ns.Delete(dutyKey(d.kind, d.file))
		delete(st.sent, dutySlot{d.kind, d.file})
	}
}

// recordOf returns a copy of this node's record of id.
func (s *Service) recordOf(id ids.Content) (record, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.files[id]; r != nil {
		return *r, true
	}
	return record{}, false
}

func (s *Service) evalCopies(st *loopState, v *view, d *duty, seen map[ageKey]bool) {
	r, _ := s.recordOf(d.file)
	dk, ek := ageKey{d.file, false}, ageKey{d.file, true}
	c := copiesCase{file: d.file, copies: d.copies, selfDuty: r.duty && r.complete,
		excluded: s.rep.isExcluded(d.file), settle: s.rep.settle,
		restorable: s.rep.dut.get(dutyArchive, d.file) != nil}
	if t, ok := st.since[dk]; ok {
		c.deficitAge = v.now.Sub(t)
	}
	if t, ok := st.since[ek]; ok {
		c.excessAge = v.now.Sub(t)
	}
	a, deficit, excess := decideCopies(v, c)
	st.age(dk, deficit, v.now)
	st.age(ek, excess, v.now)
	seen[dk], seen[ek] = true, true
	switch {
	case a == actFetch && st.warm(v.now, s.rep.warmup):
		s.job(d.file, func(ctx context.Context) error { return s.fetchAs(ctx, d.file, nil, recDuty) })
	case a == actRelease:
		s.release(d.file)
	}
}

func (s *Service) evalArchive(st *loopState, v *view, d *duty, seen map[ageKey]bool) {
	to := assignShards(v, d.shards)
	available := 0
	for _, sh := range d.shards {
		if len(v.holders(sh, sh, true)) > 0 {
			available++
		}
	}
	for i, sh := range d.shards {
		r, _ := s.recordOf(sh)
		ek := ageKey{sh, true}
		c := shardCase{shard: sh, to: to[i], selfDuty: r.duty && r.complete && !r.temp,
			available: available, data: d.data, settle: s.rep.settle}
		if t, ok := st.since[ek]; ok {
			c.excessAge = v.now.Sub(t)
		}
		a, excess := decideShard(v, c)
		st.age(ek, excess, v.now)
		seen[ek] = true
		warm := st.warm(v.now, s.rep.warmup) && !s.rep.isExcluded(sh)
		switch {
		case a == actFetch && warm:
			s.job(sh, func(ctx context.Context) error { return s.fetchAs(ctx, sh, nil, recDuty) })
		case a == actRebuild && warm:
			s.job(sh, func(ctx context.Context) error { return s.rebuildShard(ctx, d, i) })
		case a == actRelease:
			s.release(sh)
		}
	}
}

// job runs f for file id on a goroutine of the service, unless a job of
// id runs, maxJobs run, or one of id failed a moment ago.
func (s *Service) job(id ids.Content, f func(ctx context.Context) error) {
	r := s.rep
	r.mu.Lock()
	if r.busy[id] || len(r.busy) >= maxJobs || time.Since(r.failed[id]) < 4*r.every {
		r.mu.Unlock()
		return
	}
	r.busy[id] = true
	r.mu.Unlock()
	if err := s.enter(); err != nil {
		r.mu.Lock()
		delete(r.busy, id)
		r.mu.Unlock()
		return
	}
	go func() {
		defer s.wg.Done()
		err := f(s.ctx)
		r.mu.Lock()
		delete(r.busy, id)
		if err != nil {
			r.failed[id] = time.Now()
		} else {
			delete(r.failed, id)
		}
		r.mu.Unlock()
		if err != nil && !errors.Is(err, ErrClosed) {
			s.log.Debug("a duty's job", "file", id.Short(), "err", err)
		}
		r.poke()
	}()
}

// release drops this node's copy of id if it was taken for a duty and no
// fetch of it runs.
func (s *Service) release(id ids.Content) {
	s.mu.Lock()
	r := s.files[id]
	if r == nil || !r.duty || s.fetches[id] != nil {
		s.mu.Unlock()
		return
	}
	delete(s.files, id)
	s.mu.Unlock()
	s.ns.Delete(recordKey(id))
	s.touch()
	s.rep.poke()
	if err := s.blobs.Remove(id); err != nil && !errors.Is(err, blob.ErrNotFound) {
		s.log.Debug("releasing a copy", "file", id.Short(), "err", err)
	}
}
