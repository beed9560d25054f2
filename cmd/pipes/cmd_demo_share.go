package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/pipesnet/pipes"
)

// demoShare: the file service. A file added on one node is fetched by a
// second, then by a third from both holders at once; its first holder
// leaves, and a fourth node still fetches it from those that remain;
// then the holder that left comes back, so the steps after this one have
// every node.
func demoShare(ctx context.Context, say func(string, ...any), dir string, nodes []*demoNode) error {
	say("\n== A shared file")
	if len(nodes) < 4 {
		say("(skipped: it takes 4 nodes, and the demo runs %d)", len(nodes))
		return nil
	}
	s, err := shareFile(ctx, say, dir, nodes)
	if err != nil {
		return err
	}
	if err := s.holderLeaves(ctx); err != nil {
		return err
	}
	if err := s.repair(ctx); err != nil {
		return err
	}
	return s.rejoin(ctx)
}

// share is the demo's shared file and its holders, for the steps that
// follow the first.
type share struct {
	say   func(string, ...any)
	nodes []*demoNode
	id    pipes.FileID
	name  string
	size  int64
	sum   [32]byte    // SHA-256 of the content, to check each copy
	left  []*demoNode // the holders that left, until they rejoin
	hold  []*demoNode // the nodes that hold the file
}

// shareFile adds a file on one node and has a second fetch it, then a
// third from both at once.
func shareFile(ctx context.Context, say func(string, ...any), dir string, nodes []*demoNode) (*share, error) {
	owner := nodes[1]
	const size = 8 << 20
	content := make([]byte, size)
	rand.Read(content)
	path := filepath.Join(dir, "album.zip")
	if err := os.WriteFile(path, content, 0o600); err != nil {
		return nil, err
	}
	s := &share{say: say, nodes: nodes, name: "album.zip", size: size, sum: sha256.Sum256(content)}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	id, err := owner.n.Files().Add(wctx, path)
	if err != nil {
		return nil, err
	}
	s.id, s.hold = id, []*demoNode{owner}
	say("%s adds the %d MiB file %q with Files().Add: its id %s… is the BLAKE3 root of its content,", owner.name, size>>20, s.name, id.String()[:16])
	say("  so every chunk is verified against it whoever serves it. %s announces that it holds it.", owner.name)
	for _, d := range nodes[2:4] {
		if err := s.fetch(wctx, d); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// fetch has d fetch the file once it sees every node that holds it, and
// checks its copy.
func (s *share) fetch(ctx context.Context, d *demoNode) error {
	var fi pipes.FileInfo
	if err := waitFor(ctx, 30*time.Second, func() bool {
		var err error
		fi, err = d.n.Files().Stat(ctx, s.id)
		return err == nil && !slices.ContainsFunc(s.hold, func(h *demoNode) bool { return !slices.Contains(fi.Holders, h.n.ID()) })
	}); err != nil {
		return fmt.Errorf("%s does not see the %d holders: %w", d.name, len(s.hold), err)
	}
	// Stat lists the holders as announced, those offline for now too.
	online := map[pipes.NodeID]bool{}
	for _, r := range d.n.ConnectedNodes() {
		online[r.ID()] = true
	}
	var up, down []pipes.NodeID
	for _, h := range fi.Holders {
		if online[h] {
			up = append(up, h)
		} else {
			down = append(down, h)
		}
	}
	start := time.Now()
	var events int
	if err := d.n.Files().Fetch(ctx, s.id, func(done, total int64) { events++ }); err != nil {
		return fmt.Errorf("%s: fetch: %w", d.name, err)
	}
	took := time.Since(start).Round(time.Millisecond)
	if err := s.check(d); err != nil {
		return err
	}
	listed := fmt.Sprintf("%s's Stat lists %d holder(s)", d.name, len(fi.Holders))
	if len(down) > 0 {
		listed += fmt.Sprintf(" (%s offline)", strings.Join(nodeNames(s.nodes, down), " and "))
	}
	from := "from " + strings.Join(nodeNames(s.nodes, up), " and ")
	if len(up) > 1 {
		from = fmt.Sprintf("from the %d online holders at once (%s)", len(up), strings.Join(nodeNames(s.nodes, up), " and "))
	}
	s.say("%s; Fetch takes the file %s in %v (%d progress reports), verified: same SHA-256.", listed, from, took, events)
	s.hold = append(s.hold, d)
	return nil
}

// check compares d's copy of the file with the content added.
func (s *share) check(d *demoNode) error {
	r, err := d.n.Files().Open(s.id)
	if err != nil {
		return fmt.Errorf("%s: open: %w", d.name, err)
	}
	defer r.Close()
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		return fmt.Errorf("%s: read: %w", d.name, err)
	}
	if n != s.size || !slices.Equal(h.Sum(nil), s.sum[:]) {
		return fmt.Errorf("%s's copy differs (%d bytes, SHA-256 %s…)", d.name, n, hex.EncodeToString(h.Sum(nil))[:16])
	}
	return nil
}

// holderLeaves stops the node that added the file; a node that never
// held it still fetches it from the others.
func (s *share) holderLeaves(ctx context.Context) error {
	leaver := s.hold[0]
	var fourth *demoNode
	for _, d := range s.nodes {
		if !slices.Contains(s.hold, d) {
			fourth = d
			if d != s.nodes[0] {
				break // the gateway only if no other node is left
			}
		}
	}
	if fourth == nil {
		return errors.New("no node left to fetch the file")
	}
	var rest []*demoNode
	for _, d := range s.nodes {
		if d != leaver {
			rest = append(rest, d)
		}
	}
	if err := leaver.n.Shutdown(); err != nil {
		return err
	}
	s.left = append(s.left, leaver)
	s.hold = slices.DeleteFunc(s.hold, func(d *demoNode) bool { return d == leaver })
	if err := waitFor(ctx, 30*time.Second, func() bool { return allSee(rest, len(rest)-1) }); err != nil {
		return fmt.Errorf("departure of %s not seen: %w", leaver.name, err)
	}
	s.say("%s, which added the file, stops; the others see it go offline.", leaver.name)
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return s.fetch(wctx, fourth)
}

// repair sets a duty of three copies, then a holder that took its copy
// leaves for good and the network brings the copies back to three.
func (s *share) repair(ctx context.Context) error {
	const copies = 3
	// A repair needs copies nodes online once a holder is gone.
	if online := len(s.nodes) - len(s.left) - 1; online < copies {
		s.say("(Replicate's repair skipped: it takes %d nodes online once a holder has left, and %d would be)", copies, online)
		return nil
	}
	owner := s.hold[len(s.hold)-1]
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := owner.n.Files().Replicate(rctx, s.id, copies); err != nil {
		return fmt.Errorf("replicate: %w", err)
	}
	watcher := s.nodes[0]
	holders, err := s.onlineHolders(rctx, watcher, copies, nil)
	if err != nil {
		return err
	}
	s.say("%s calls Files().Replicate(id, %d): the network keeps %d copies from now on; online holders: %s.", owner.name, copies, copies, strings.Join(nodeNames(s.nodes, holders), ", "))
	var gone *demoNode
	for _, d := range s.hold {
		if d != watcher && d != owner {
			gone = d
			break
		}
	}
	if gone == nil {
		return errors.New("no holder to leave")
	}
	if err := gone.n.Shutdown(); err != nil {
		return err
	}
	s.left = append(s.left, gone)
	s.hold = slices.DeleteFunc(s.hold, func(d *demoNode) bool { return d == gone })
	start := time.Now()
	holders, err = s.onlineHolders(rctx, watcher, copies, gone)
	if err != nil {
		return fmt.Errorf("copies not restored after %s left: %w", gone.name, err)
	}
	took := time.Since(start).Round(100 * time.Millisecond)
	for _, h := range holders {
		if i := slices.IndexFunc(s.nodes, func(d *demoNode) bool { return d.n.ID() == h }); i >= 0 && !slices.Contains(s.hold, s.nodes[i]) {
			if err := s.check(s.nodes[i]); err != nil {
				return err
			}
			s.hold = append(s.hold, s.nodes[i])
		}
	}
	s.say("%s, which fetched a copy, leaves for good (it stays stopped). Once it has been away for the repair delay", gone.name)
	s.say("  (3 s in test mode, 10 min by default), another node takes a copy: %v after it left, %s's Stat lists %d online holders: %s.",
		took, watcher.name, len(holders), strings.Join(nodeNames(s.nodes, holders), ", "))
	return nil
}

// onlineHolders waits, at most until ctx ends, until watcher sees want
// holders of the file online (none of them gone), and returns them.
func (s *share) onlineHolders(ctx context.Context, watcher *demoNode, want int, gone *demoNode) ([]pipes.NodeID, error) {
	var up []pipes.NodeID
	cond := func() bool {
		fi, err := watcher.n.Files().Stat(ctx, s.id)
		if err != nil {
			return false
		}
		online := map[pipes.NodeID]bool{watcher.n.ID(): true}
		for _, r := range watcher.n.ConnectedNodes() {
			online[r.ID()] = true
		}
		if gone != nil && online[gone.n.ID()] {
			return false
		}
		up = up[:0]
		for _, h := range fi.Holders {
			if online[h] {
				up = append(up, h)
			}
		}
		return len(up) >= want
	}
	if err := waitFor(ctx, 60*time.Second, cond); err != nil {
		return nil, fmt.Errorf("%s does not see %d online holders (%d): %w", watcher.name, want, len(up), err)
	}
	return up, nil
}

// rejoin starts the holders that left again.
func (s *share) rejoin(ctx context.Context) error {
	for _, d := range s.left {
		if err := d.n.Start(ctx); err != nil {
			return err
		}
	}
	if len(s.left) == 0 {
		return nil
	}
	if err := waitFor(ctx, 30*time.Second, func() bool { return allSee(s.nodes, len(s.nodes)-1) }); err != nil {
		return fmt.Errorf("return of %s not seen: %w", demoNodeNames(s.left), err)
	}
	s.hold = append(s.hold, s.left...)
	verb := "starts again, with its copy"
	if len(s.left) > 1 {
		verb = "start again, with their copies"
	}
	s.say("%s %s: %d nodes hold the file (a copy taken only for a duty is released while there are more than it asks).", demoNodeNames(s.left), verb, len(s.hold))
	s.left = nil
	return nil
}

func demoNodeNames(ds []*demoNode) string {
	var names []string
	for _, d := range ds {
		names = append(names, d.name)
	}
	return strings.Join(names, " and ")
}
