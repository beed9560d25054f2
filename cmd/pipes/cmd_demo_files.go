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

// demoEncrypted: an encrypted persistent pipeline; a node without the
// pipeline secret stores packets it cannot read, until SetSecret.
func demoEncrypted(ctx context.Context, say func(string, ...any), nodes []*demoNode) error {
	say("\n== An encrypted pipeline")
	owner, other := nodes[1], nodes[2]
	b := make([]byte, 16)
	rand.Read(b)
	secret := []byte(hex.EncodeToString(b))
	id, err := owner.n.CreatePipeline("vault", pipes.PipelineOptions{Persistent: true, Encrypted: true, Secret: secret})
	if err != nil {
		return err
	}
	say("%s creates the encrypted persistent pipeline \"vault\" with a pipeline secret of its own: the network secret does not open it.", owner.name)
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	op, _ := owner.n.Pipeline(id)
	xp, err := other.n.WaitPipeline(wctx, id)
	if err != nil {
		return fmt.Errorf("%s: %w", other.name, err)
	}
	entries := []string{"the door code is 4815", "the spare key is under the mat"}
	for _, e := range entries {
		if _, err := op.Put([]byte(e)); err != nil {
			return err
		}
	}
	if err := waitFor(ctx, 30*time.Second, func() bool { return logged(other, id) == int64(len(entries)) }); err != nil {
		return fmt.Errorf("%s did not store the entries", other.name)
	}
	var stored []*pipes.Packet
	for pk, err := range xp.PacketsSince(-1) {
		if err != nil {
			return err
		}
		stored = append(stored, pk)
	}
	_, err = stored[0].Data()
	say("%s writes %d entries. %s, without the secret, verifies and stores them (%d packets, %d bytes) but cannot read them:",
		owner.name, len(entries), other.name, len(stored), stored[0].Size()+stored[1].Size())
	say("  Data() fails with ErrNoSecret: %v", errors.Is(err, pipes.ErrNoSecret))
	ok, err := xp.SetSecret([]byte("a guess"))
	if err != nil {
		return err
	}
	say("%s tries SetSecret with a guess: %v. Then with the secret %s gave it out of band...", other.name, ok, owner.name)
	if ok, err = xp.SetSecret(secret); err != nil || !ok {
		return fmt.Errorf("SetSecret with the right secret: %v %v", ok, err)
	}
	for _, pk := range stored {
		data, err := pk.Data()
		if err != nil {
			return err
		}
		say("  %s reads the entry it stored before: %q", other.name, data)
	}
	// Each holder proves it has the secret, and every node checks the
	// proofs, with or without the secret.
	watcher := nodes[0]
	wp, err := watcher.n.WaitPipeline(wctx, id)
	if err != nil {
		return err
	}
	if err := waitFor(ctx, 30*time.Second, func() bool { return len(wp.NodesWithEncryptionSecret()) == 2 }); err != nil {
		return fmt.Errorf("%s does not see the 2 holders of the secret", watcher.name)
	}
	say("%s, which has no secret, checks the holders' proofs: NodesWithEncryptionSecret lists %s.",
		watcher.name, strings.Join(nodeNames(nodes, wp.NodesWithEncryptionSecret()), " and "))
	return nil
}

// nodeNames names the demo nodes with the given ids, in order.
func nodeNames(nodes []*demoNode, ids []pipes.NodeID) []string {
	var out []string
	for _, id := range ids {
		name := id.String()[:8]
		for _, d := range nodes {
			if d.n.ID() == id {
				name = d.name
			}
		}
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// demoFile: a file packet of a few MiB, put on one node and written to a
// file by another.
func demoFile(ctx context.Context, say func(string, ...any), dir string, nodes []*demoNode) error {
	say("\n== A file packet")
	sender, receiver := nodes[0], nodes[len(nodes)-1]
	src := filepath.Join(dir, "photos.tar")
	const size = 4 << 20
	content := make([]byte, size)
	rand.Read(content)
	if err := os.WriteFile(src, content, 0o600); err != nil {
		return err
	}
	want := sha256.Sum256(content)
	id, err := sender.n.CreatePipeline("files", pipes.PipelineOptions{Persistent: true})
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	rp, err := receiver.n.WaitPipeline(wctx, id)
	if err != nil {
		return fmt.Errorf("%s: %w", receiver.name, err)
	}
	sp, _ := sender.n.Pipeline(id)
	start := time.Now()
	pid, err := sp.PutFileContext(wctx, src)
	if err != nil {
		return err
	}
	say("%s puts a %d MiB file (SHA-256 %s…) on the persistent pipeline \"files\" with PutFile: the packet carries",
		sender.name, size>>20, hex.EncodeToString(want[:8]))
	say("  the file's manifest, and the content follows in checked chunks, from any node that has them.")
	var pk *pipes.Packet
	if err := waitFor(wctx, 30*time.Second, func() bool { pk, err = rp.PacketWithID(pid); return err == nil }); err != nil {
		return fmt.Errorf("%s did not get the packet: %w", receiver.name, err)
	}
	dst := filepath.Join(dir, "received-photos.tar")
	if err := pk.WriteDataToPathContext(wctx, dst); err != nil {
		return err
	}
	got, n, err := fileSHA256(dst)
	if err != nil {
		return err
	}
	say("%s gets the packet (IsFile %v, Size %d) and WriteDataToPath writes it to disk %v after the put:",
		receiver.name, pk.IsFile(), pk.Size(), time.Since(start).Round(time.Millisecond))
	say("  %d bytes, SHA-256 %s…: the same file: %v", n, hex.EncodeToString(got[:8]), got == want)
	if got != want {
		return errors.New("the received file differs")
	}
	return nil
}

func fileSHA256(path string) ([32]byte, int64, error) {
	var sum [32]byte
	f, err := os.Open(path)
	if err != nil {
		return sum, 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	copy(sum[:], h.Sum(nil))
	return sum, n, err
}
