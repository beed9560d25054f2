package pipes_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pipesnet/pipes"
	"github.com/pipesnet/pipes/internal/files"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/testnet"
)

// The file service against crashes, a full disk and a file that changes.

// fetcherEnv names the data directory when the test binary runs as the
// fetching process of TestFileResumeAfterKill; fetchIDEnv names the file.
const (
	fetcherEnv = "PIPES_TEST_FILE_FETCHER_DIR"
	fetchIDEnv = "PIPES_TEST_FILE_FETCH_ID"
)

// The fetching process runs instead of the tests (before TestMain) when
// the binary is started as one.
func init() {
	if dir := os.Getenv(fetcherEnv); dir != "" {
		os.Exit(runFetcher(dir, os.Getenv(fetchIDEnv)))
	}
}

// runFetcher is the fetching process: it starts the node of the platform
// in dir and fetches file id, printing "progress <bytes present>" as
// chunks arrive, and "done" at the end (the test kills it before).
func runFetcher(dir, fid string) int {
	id, err := pipes.ParseFileID(fid)
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	p, err := pipes.Open(dir, pipes.WithTestMode(true))
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	n := p.Nodes()[0]
	if err := n.Start(context.Background()); err != nil {
		fmt.Println("error", err)
		return 1
	}
	last := int64(-1)
	progress := func(done, _ int64) {
		if done != last {
			last = done
			fmt.Printf("progress %d\n", done) // unbuffered: one write(2) a line
		}
	}
	for deadline := time.Now().Add(time.Minute); ; {
		err = n.Files().Fetch(context.Background(), id, progress)
		if !errors.Is(err, pipes.ErrNotFound) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond) // the holder's announcement has not come yet
	}
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("done")
	return 0
}

// TestFileResumeAfterKill: the fetcher, a process of its own, is killed
// with SIGKILL in the middle of a fetch; restarted on its data
// directory, it finishes the fetch byte for byte, and asks for none of
// the chunks it had verified and stored before the kill.
func TestFileResumeAfterKill(t *testing.T) {
	netPath := testnet.Netfile(t, "fkill")
	h := testnet.NewMember(t, netPath, "holder")
	h.Start(t)
	c := testnet.NewMember(t, netPath, "fetcher")
	c.Gateway(t, h)
	if err := c.P.Close(); err != nil {
		t.Fatal(err)
	}
	const chunks, before = 40, 16 // the holder serves before chunks, then waits
	data := content(chunks*testChunk, 9)
	id, err := h.N.Files().AddReader(context.Background(), "kill.bin", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var served atomic.Int64
	pipes.FileService(h.N).SetHooks(files.Hooks{ServeChunk: func(int) {
		if served.Add(1) > before {
			select {
			case <-release:
			case <-time.After(60 * time.Second):
			}
		}
	}})

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fetcherEnv+"="+c.Dir, fetchIDEnv+"="+id.String())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var reported int64
	sc := bufio.NewScanner(out)
	for reported < before*testChunk && sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 || f[0] != "progress" {
			cmd.Process.Kill()
			cmd.Wait()
			close(release)
			t.Fatalf("fetcher: %s", sc.Text())
		}
		if reported, err = strconv.ParseInt(f[1], 10, 64); err != nil {
			t.Fatal(err)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	close(release)
	if reported < before*testChunk {
		t.Fatalf("the fetcher reported %d bytes before it ended", reported)
	}

	c.Open(t)
	var mu sync.Mutex
	var asked []int
	node := c.N
	c.Start(t)
	waitHolders(t, node, id, h) // the holder's announcement reached the new run
	present := pipes.FilePresent(node, id)
	if len(present) < before || len(present) == chunks {
		t.Fatalf("%d chunks present after the kill; %d were reported stored, of %d", len(present), before, chunks)
	}
	pipes.FileService(node).SetHooks(files.Hooks{Requested: func(_ ids.Node, i int) {
		mu.Lock()
		asked = append(asked, i)
		mu.Unlock()
	}})
	served0 := pipes.FileService(h.N).Stats().Served
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := node.Files().Fetch(ctx, id, nil); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, node, id); !bytes.Equal(got, data) {
		t.Fatal("the resumed copy differs")
	}
	mu.Lock()
	defer mu.Unlock()
	for _, i := range asked {
		if slices.Contains(present, i) {
			t.Errorf("chunk %d was verified before the kill and asked for again", i)
		}
	}
	missing := chunks - len(present)
	if len(asked) != missing {
		t.Errorf("asked for %d chunks after the restart, %d were missing", len(asked), missing)
	}
	if s := pipes.FileService(h.N).Stats().Served - served0; s != uint64(missing) {
		t.Errorf("the holder served %d chunks after the restart, %d were missing", s, missing)
	}
	t.Logf("%d of %d chunks survived the kill (%d reported stored); %d fetched after the restart", len(present), chunks, reported/testChunk, len(asked))
}

// tmpfsFree returns the free bytes of the file system at dir.
func tmpfsFree(t *testing.T, dir string) uint64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return st.Bavail * uint64(st.Bsize)
}

// TestFileDiskFull: the fetcher's blob store is on a tmpfs of 4 MiB. A
// small file fetches; a larger one fails with ErrDiskFull, and so does an
// Add, which leaves nothing behind; the node keeps working and the small
// file stays readable. Once the tmpfs grows, the fetch of the larger file
// resumes where it stopped and completes. Needs root (mount).
func TestFileDiskFull(t *testing.T) {
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root on Linux")
	}
	netPath := testnet.Netfile(t, "ffull")
	h := testnet.NewMember(t, netPath, "holder")
	h.Start(t)
	c := testnet.NewMember(t, netPath, "fetcher")
	c.Gateway(t, h)
	cid := c.N.ID()
	blobs := filepath.Join(c.Dir, "blobs", hex.EncodeToString(cid[:]))
	if err := os.MkdirAll(blobs, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", blobs, "tmpfs", 0, "size=4m,mode=0700"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	// Registered before the node's start, so it runs after the node's
	// shutdown (cleanups run last first).
	t.Cleanup(func() {
		c.P.Close()
		if err := syscall.Unmount(blobs, 0); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	c.Start(t)
	testnet.Eventually(t, 60*time.Second, "the two see each other", testnet.AllSeeAll([]*testnet.Member{h, c}))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	small := content(4*testChunk, 10)
	large := content(32*testChunk, 11) // 8 MiB: twice the tmpfs
	sid, err := h.N.Files().AddReader(ctx, "small.bin", bytes.NewReader(small))
	if err != nil {
		t.Fatal(err)
	}
	lid, err := h.N.Files().AddReader(ctx, "large.bin", bytes.NewReader(large))
	if err != nil {
		t.Fatal(err)
	}
	waitHolders(t, c.N, sid, h)
	waitHolders(t, c.N, lid, h)
	if err := c.N.Files().Fetch(ctx, sid, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(blobs, hex.EncodeToString(sid[:]))); err != nil {
		t.Fatalf("the small file is not on the tmpfs: %v", err)
	}

	err = c.N.Files().Fetch(ctx, lid, nil)
	if !errors.Is(err, pipes.ErrDiskFull) {
		t.Fatalf("fetch onto a full disk: %v, want ErrDiskFull", err)
	}
	present := pipes.FilePresent(c.N, lid)
	if len(present) == 0 || len(present) == 32 {
		t.Fatalf("%d chunks of 32 stored before the disk filled", len(present))
	}
	// The node keeps working: the small file reads, the holder answers.
	if got := readFile(t, c.N, sid); !bytes.Equal(got, small) {
		t.Fatal("the small file changed when the disk filled")
	}
	if _, err := c.N.Ping(ctx, h.N.ID()); err != nil {
		t.Fatalf("ping after the disk filled: %v", err)
	}

	// Add on the full disk fails and leaves nothing.
	free := tmpfsFree(t, blobs)
	path := filepath.Join(t.TempDir(), "new.bin")
	if err := os.WriteFile(path, content(8*testChunk, 12), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := c.N.Files().Add(ctx, path); !errors.Is(err, pipes.ErrDiskFull) {
		t.Fatalf("Add onto a full disk: %v, want ErrDiskFull", err)
	}
	ents, err := os.ReadDir(blobs)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "tmp-") {
			t.Errorf("the failed Add left %s", e.Name())
		}
	}
	if len(ents) != 2 {
		t.Errorf("%d files in the blob store, want the two fetched", len(ents))
	}
	if f := tmpfsFree(t, blobs); f != free {
		t.Errorf("%d bytes free after the failed Add, %d before", f, free)
	}
	if l := c.N.Files().List(); len(l) != 2 {
		t.Errorf("List after the failed Add: %+v", l)
	}

	// Space is freed: the fetch resumes and completes.
	if err := syscall.Mount("tmpfs", blobs, "tmpfs", syscall.MS_REMOUNT, "size=32m,mode=0700"); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var asked []int
	pipes.FileService(c.N).SetHooks(files.Hooks{Requested: func(_ ids.Node, i int) {
		mu.Lock()
		asked = append(asked, i)
		mu.Unlock()
	}})
	if err := c.N.Files().Fetch(ctx, lid, nil); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, c.N, lid); !bytes.Equal(got, large) {
		t.Fatal("the resumed copy differs")
	}
	if got := readFile(t, c.N, sid); !bytes.Equal(got, small) {
		t.Fatal("the small file changed")
	}
	mu.Lock()
	defer mu.Unlock()
	for _, i := range asked {
		if slices.Contains(present, i) {
			t.Errorf("chunk %d was stored before the disk filled and asked for again", i)
		}
	}
	t.Logf("%d of 32 chunks stored before the disk filled; %d fetched after", len(present), len(asked))
}

// TestFileAddChanging: a file that grows while it is added fails with
// ErrChanged and leaves nothing: no file in the list, no blob in the
// store; added again once it is still, it succeeds.
func TestFileAddChanging(t *testing.T) {
	ms := cluster(t, "fchg", 1, nil)
	a := ms[0]
	path := filepath.Join(t.TempDir(), "growing.log")
	if err := os.WriteFile(path, content(32*testChunk, 13), 0o600); err != nil {
		t.Fatal(err)
	}
	cid := a.N.ID()
	blobs := filepath.Join(a.Dir, "blobs", hex.EncodeToString(cid[:]))
	stop, stopped := make(chan struct{}), make(chan struct{})
	started := make(chan struct{})
	go func() {
		defer close(stopped)
		f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Error(err)
			close(started)
			return
		}
		defer f.Close()
		for i := 0; ; i++ {
			f.Write([]byte("another line\n"))
			if i == 0 {
				close(started)
			}
			select {
			case <-stop:
				return
			default:
			}
		}
	}()
	<-started
	_, err := a.N.Files().Add(context.Background(), path)
	close(stop)
	<-stopped
	if !errors.Is(err, pipes.ErrChanged) {
		t.Fatalf("Add of a growing file: %v, want ErrChanged", err)
	}
	if l := a.N.Files().List(); len(l) != 0 {
		t.Fatalf("List after the failed Add: %+v", l)
	}
	if ents, _ := os.ReadDir(blobs); len(ents) != 0 {
		t.Fatalf("%d files left in the blob store", len(ents))
	}
	id, err := a.N.Files().Add(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(path)
	if got := readFile(t, a.N, id); !bytes.Equal(got, want) {
		t.Fatal("the file added once still differs")
	}
}
