package pipes_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/pipesnet/pipes"
	"github.com/pipesnet/pipes/internal/testnet"
)

// holders returns the nodes p reports as holding its secret.
func holders(p *pipes.Pipeline) []pipes.NodeID {
	h := p.NodesWithEncryptionSecret()
	slices.SortFunc(h, func(a, b pipes.NodeID) int { return bytes.Compare(a[:], b[:]) })
	return h
}

func sameNodes(got []pipes.NodeID, want ...*testnet.Member) error {
	var w []pipes.NodeID
	for _, m := range want {
		w = append(w, m.N.ID())
	}
	slices.SortFunc(w, func(a, b pipes.NodeID) int { return bytes.Compare(a[:], b[:]) })
	if !slices.Equal(got, w) {
		return fmt.Errorf("holders %v, want %v", got, w)
	}
	return nil
}

// TestEncryptedPersistentPipeline: a node without the secret replicates
// the history but cannot read it or put on it; SetSecret refuses a wrong
// secret and, with the right one, makes the stored history readable;
// proofs of possession reach every node; the key survives a restart.
func TestEncryptedPersistentPipeline(t *testing.T) {
	ms := cluster(t, "enc", 3, nil)
	a, b, c := ms[0], ms[1], ms[2]
	secret := []byte("correct horse battery staple")
	id, err := a.N.CreatePipeline("vault", pipes.PipelineOptions{Persistent: true, Encrypted: true, Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.N.CreatePipeline("vault", pipes.PipelineOptions{Persistent: true, Encrypted: true, Secret: []byte("guess")}); !errors.Is(err, pipes.ErrWrongSecret) {
		t.Fatalf("create with another secret: %v", err)
	}
	if _, err := c.N.CreatePipeline("vault2", pipes.PipelineOptions{Persistent: true, Encrypted: true}); !errors.Is(err, pipes.ErrNoSecret) {
		t.Fatalf("create without a secret: %v", err)
	}
	pa, _ := a.N.Pipeline(id)
	if !pa.Encrypted() || !pa.HasSecret() {
		t.Fatal("creator's pipeline is not encrypted or has no secret")
	}
	testnet.PutN(t, pa, 50, "classified")
	pb, pc := b.WaitPipeline(t, id), c.WaitPipeline(t, id)
	testnet.Converged(t, ms, id, 50)

	// Without the secret: stored, verified, unreadable.
	for _, pk := range testnet.History(t, pb) {
		if _, err := pk.Data(); !errors.Is(err, pipes.ErrNoSecret) {
			t.Fatalf("data without the secret: %v", err)
		}
		if pk.Size() != int64(len(fmt.Sprintf("classified %d", pk.Seq()-1))) {
			t.Fatalf("size %d", pk.Size())
		}
	}
	if _, err := pc.Put([]byte("x")); !errors.Is(err, pipes.ErrNoSecret) {
		t.Fatalf("put without the secret: %v", err)
	}
	if ok, err := pb.SetSecret([]byte("wrong")); ok || err != nil {
		t.Fatalf("wrong secret accepted: %v %v", ok, err)
	}
	if ok, err := pb.SetSecret(secret); !ok || err != nil {
		t.Fatalf("right secret refused: %v %v", ok, err)
	}
	for _, pk := range testnet.History(t, pb) {
		d, err := pk.Data()
		if err != nil || !bytes.HasPrefix(d, []byte("classified ")) {
			t.Fatalf("after SetSecret: %q %v", d, err)
		}
	}
	// Proofs reach c, which holds no secret and checks them anyway.
	testnet.Eventually(t, 30*time.Second, "c sees a and b hold the secret", func() error { return sameNodes(holders(pc), a, b) })
	testnet.Eventually(t, 30*time.Second, "a sees a and b hold the secret", func() error { return sameNodes(holders(pa), a, b) })

	// b puts, a reads; c stores b's packets without reading them.
	if _, err := pb.Put([]byte("reply from b")); err != nil {
		t.Fatal(err)
	}
	testnet.Converged(t, ms, id, 51)
	found := false
	for _, pk := range testnet.History(t, pa) {
		if d, err := pk.Data(); err == nil && string(d) == "reply from b" {
			found = true
		}
	}
	if !found {
		t.Fatal("a cannot read b's packet")
	}

	// The key is kept across a restart.
	if err := b.N.Shutdown(); err != nil {
		t.Fatal(err)
	}
	b.Start(t)
	pb2, err := b.N.Pipeline(id)
	if err != nil || !pb2.HasSecret() {
		t.Fatalf("after restart: %v, has secret %v", err, err == nil && pb2.HasSecret())
	}
}

// TestEncryptedLivePipeline: live packets reach a node without the secret
// as ciphertext, and a node with it as the data put.
func TestEncryptedLivePipeline(t *testing.T) {
	ms := cluster(t, "encl", 3, nil)
	a, b, c := ms[0], ms[1], ms[2]
	secret := []byte("live secret")
	id, err := a.N.CreatePipeline("whisper", pipes.PipelineOptions{Encrypted: true, Secret: secret, Salt: []byte("pepper")})
	if err != nil {
		t.Fatal(err)
	}
	pb, pc := b.WaitPipeline(t, id), c.WaitPipeline(t, id)
	if ok, err := pb.SetSecret(secret); !ok || err != nil {
		t.Fatalf("SetSecret: %v %v", ok, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	chb, chc := pb.Subscribe(ctx), pc.Subscribe(ctx)
	pa, _ := a.N.Pipeline(id)
	testnet.Eventually(t, 30*time.Second, "a packet reaches b and c", func() error {
		if _, err := pa.Put([]byte("psst")); err != nil {
			return err
		}
		if len(chb) == 0 || len(chc) == 0 {
			return errors.New("not yet")
		}
		return nil
	})
	pkb, pkc := <-chb, <-chc
	if d, err := pkb.Data(); err != nil || string(d) != "psst" {
		t.Fatalf("b read %q %v", d, err)
	}
	if _, err := pkc.Data(); !errors.Is(err, pipes.ErrNoSecret) {
		t.Fatalf("c without the secret: %v", err)
	}
	if pkb.ID() != pkc.ID() {
		t.Fatal("b and c got different packets")
	}
}
