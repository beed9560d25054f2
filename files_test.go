package pipes_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipesnet/pipes"
	"github.com/pipesnet/pipes/internal/testnet"
)

// writeRandomFile writes size pseudo-random bytes to a new file, in
// pieces, and returns its path and SHA-256.
func writeRandomFile(t *testing.T, size int64, seed uint64) (string, [32]byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "input.bin")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	buf := make([]byte, 1<<20)
	for left := size; left > 0; {
		n := min(left, int64(len(buf)))
		r.Read(buf[:n])
		f.Write(buf[:n])
		h.Write(buf[:n])
		left -= n
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return path, sum
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// TestFilePackets: a file packet reaches every node of a live pipeline
// and of an encrypted persistent one; a node without the secret fetches
// and serves the content without reading it, and a node that joins after
// the sender left gets the file from the others.
func TestFilePackets(t *testing.T) {
	ms := cluster(t, "files", 3, nil)
	a, b, c := ms[0], ms[1], ms[2]
	path, sum := writeRandomFile(t, 5<<20+12345, 1)

	// Live broadcast.
	id, err := a.N.CreatePipeline("drop", pipes.PipelineOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pa, _ := a.N.Pipeline(id)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	chb := b.WaitPipeline(t, id).Subscribe(ctx)
	chc := c.WaitPipeline(t, id).Subscribe(ctx)
	if _, err := pa.PutFile(path); err != nil {
		t.Fatal(err)
	}
	for _, ch := range []<-chan *pipes.Packet{chb, chc} {
		pk := testnet.Receive(t, ch, 1)[0]
		if !pk.IsFile() || pk.Size() != 5<<20+12345 {
			t.Fatalf("file packet: file %v size %d", pk.IsFile(), pk.Size())
		}
		out := filepath.Join(t.TempDir(), "out.bin")
		if err := pk.WriteDataToPath(out); err != nil {
			t.Fatal(err)
		}
		if fileSum(t, out) != sum {
			t.Fatal("received file differs")
		}
	}

	// Encrypted and persistent: c has no secret.
	secret := []byte("file secret")
	eid, err := a.N.CreatePipeline("vault", pipes.PipelineOptions{Persistent: true, Encrypted: true, Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	pea, _ := a.N.Pipeline(eid)
	peb := b.WaitPipeline(t, eid)
	if ok, _ := peb.SetSecret(secret); !ok {
		t.Fatal("SetSecret refused")
	}
	fid, err := pea.PutFile(path)
	if err != nil {
		t.Fatal(err)
	}
	testnet.Converged(t, ms, eid, 1)
	pec := c.WaitPipeline(t, eid)
	pkc, err := pec.PacketWithID(fid)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pkc.Open(); !errors.Is(err, pipes.ErrNoSecret) {
		t.Fatalf("open without the secret: %v", err)
	}
	pkb, err := peb.PacketWithID(fid)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "vault.bin")
	if err := pkb.WriteDataToPath(out); err != nil {
		t.Fatal(err)
	}
	if fileSum(t, out) != sum {
		t.Fatal("decrypted file differs")
	}
	// The sender leaves; a new node with the secret gets the file from b
	// and c (c serves chunks it cannot read). Give c time to have fetched
	// them: its transfer runs in the background.
	testnet.Eventually(t, 60*time.Second, "c has fetched the file", func() error {
		if pipes.FileComplete(c.N, pkc) {
			return nil
		}
		return errors.New("not yet")
	})
	if err := a.N.Shutdown(); err != nil {
		t.Fatal(err)
	}
	d := testnet.NewMember(t, c.Net, "files-d")
	d.Gateway(t, c)
	d.Start(t)
	ped := d.WaitPipeline(t, eid)
	if ok, _ := ped.SetSecret(secret); !ok {
		t.Fatal("SetSecret refused on d")
	}
	testnet.Converged(t, []*testnet.Member{b, c, d}, eid, 1)
	pkd, err := ped.PacketWithID(fid)
	if err != nil {
		t.Fatal(err)
	}
	outd := filepath.Join(t.TempDir(), "d.bin")
	if err := pkd.WriteDataToPath(outd); err != nil {
		t.Fatal(err)
	}
	if fileSum(t, outd) != sum {
		t.Fatal("file fetched from the remaining nodes differs")
	}
}

// TestFilePacketResumes: a transfer interrupted by the receiver's restart
// continues from the chunks it had, and completes.
func TestFilePacketResumes(t *testing.T) {
	ms := cluster(t, "resume", 2, nil)
	a, b := ms[0], ms[1]
	path, sum := writeRandomFile(t, 48<<20, 2)
	id, err := a.N.CreatePipeline("big", pipes.PipelineOptions{Persistent: true})
	if err != nil {
		t.Fatal(err)
	}
	pa, _ := a.N.Pipeline(id)
	fid, err := pa.PutFile(path)
	if err != nil {
		t.Fatal(err)
	}
	testnet.Converged(t, ms, id, 1)
	pb, _ := b.N.Pipeline(id)
	pk, err := pb.PacketWithID(fid)
	if err != nil {
		t.Fatal(err)
	}
	// Stop b once part of the file is there.
	var partial atomic.Int64
	testnet.Eventually(t, 60*time.Second, "part of the file arrived", func() error {
		have, total := pipes.FileProgress(b.N, pk)
		partial.Store(have)
		if have == 0 || have == total {
			return errors.New("not partial")
		}
		return nil
	})
	if err := b.N.Shutdown(); err != nil {
		t.Fatal(err)
	}
	b.Start(t)
	pb, _ = b.N.Pipeline(id)
	pk, _ = pb.PacketWithID(fid)
	if have, _ := pipes.FileProgress(b.N, pk); have < partial.Load() {
		t.Fatalf("after the restart %d chunks, before %d", have, partial.Load())
	}
	out := filepath.Join(t.TempDir(), "out.bin")
	if err := pk.WriteDataToPath(out); err != nil {
		t.Fatal(err)
	}
	if fileSum(t, out) != sum {
		t.Fatal("resumed file differs")
	}
}

// TestFilePacketGiB moves a 1 GiB file between two nodes in this process
// while the heap grows by less than 64 MiB.
func TestFilePacketGiB(t *testing.T) {
	if testing.Short() || testnet.RaceEnabled {
		t.Skip("1 GiB transfer: run without -race and -short (CI does)")
	}
	ms := cluster(t, "gib", 2, nil)
	a, b := ms[0], ms[1]
	path, sum := writeRandomFile(t, 1<<30, 3)
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
		}
	}()
	id, err := a.N.CreatePipeline("gib", pipes.PipelineOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pa, _ := a.N.Pipeline(id)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := b.WaitPipeline(t, id).Subscribe(ctx)
	if _, err := pa.PutFile(path); err != nil {
		t.Fatal(err)
	}
	pk := testnet.Receive(t, ch, 1)[0]
	out := filepath.Join(t.TempDir(), "out.bin")
	if err := pk.WriteDataToPath(out); err != nil {
		t.Fatal(err)
	}
	close(stop)
	<-done
	if fileSum(t, out) != sum {
		t.Fatal("1 GiB file differs")
	}
	grew := int64(peak.Load()) - int64(base.HeapInuse)
	t.Logf("heap in use grew by %.1f MiB moving 1 GiB", float64(grew)/(1<<20))
	if grew >= 64<<20 {
		t.Fatalf("heap grew by %d MiB", grew>>20)
	}
}
