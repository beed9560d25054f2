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
	// A step that needs the holder away for good (a repair by
	// Replicate, which brings the copies back) goes here, before it
	// rejoins: s.hold are the nodes that hold the file, s.left the one
	// that left.
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
	left  *demoNode   // the holder that left, until it rejoins
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
	s.left = leaver
	s.hold = slices.DeleteFunc(s.hold, func(d *demoNode) bool { return d == leaver })
	if err := waitFor(ctx, 30*time.Second, func() bool { return allSee(rest, len(rest)-1) }); err != nil {
		return fmt.Errorf("departure of %s not seen: %w", leaver.name, err)
	}
	s.say("%s, which added the file, stops; the others see it go offline.", leaver.name)
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return s.fetch(wctx, fourth)
}

// rejoin starts the holder that left again.
func (s *share) rejoin(ctx context.Context) error {
	d := s.left
	if d == nil {
		return nil
	}
	if err := d.n.Start(ctx); err != nil {
		return err
	}
	if err := waitFor(ctx, 30*time.Second, func() bool { return allSee(s.nodes, len(s.nodes)-1) }); err != nil {
		return fmt.Errorf("%s's return not seen: %w", d.name, err)
	}
	s.left = nil
	s.hold = append(s.hold, d)
	s.say("%s starts again, with its copy: %d nodes hold the file.", d.name, len(s.hold))
	return nil
}
