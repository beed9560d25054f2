package integrationtests

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// fileJSON is a file of `file ls`, `file stat` and `file add`.
type fileJSON struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Size    int64  `json:"size"`
	Local   bool   `json:"local"`
	Holders []struct {
		ID string `json:"id"`
	} `json:"holders"`
	Copies  int `json:"copies"`
	Archive *struct {
		Data   int `json:"data"`
		Parity int `json:"parity"`
		Shards []struct {
			Index   int               `json:"index"`
			Holders []json.RawMessage `json:"holders"`
		} `json:"shards"`
	} `json:"archive"`
}

// fetchEvent is a line of `file get --json`.
type fetchEvent struct {
	Done   int64 `json:"done"`
	Total  int64 `json:"total"`
	Result *struct {
		ID      string `json:"id"`
		Size    int64  `json:"size"`
		Path    string `json:"path"`
		Holders int    `json:"holders"`
	} `json:"result"`
	Error string `json:"error"`
}

// stat is `file stat ID` on daemon i, decoded.
func (d *daemonSet) stat(i int, id string) (fileJSON, error) {
	var f fileJSON
	out, err := d.try(i, "--json", "file", "stat", id)
	if err != nil {
		return f, err
	}
	return f, json.Unmarshal([]byte(out), &f)
}

// waitHolders waits until daemon i sees want holders of file id.
func (d *daemonSet) waitHolders(i int, id string, want int) fileJSON {
	d.t.Helper()
	var f fileJSON
	d.waitFor(fmt.Sprintf("daemon %d sees %d holders of %s", i, want, id[:8]), func() error {
		var err error
		if f, err = d.stat(i, id); err != nil {
			return err
		}
		if len(f.Holders) != want {
			return fmt.Errorf("%d holders", len(f.Holders))
		}
		return nil
	})
	return f
}

// getJSON runs `file get ID --out PATH --json` on daemon i and checks its
// events: one JSON object a line, done never going back, the last
// progress at the total (total, unless it is -1: a restricted file's
// ciphertext), and a final event with the result, which has the file's
// size (unless it is -1: a restricted file's size as Stat gives it) and
// says the file went to written.
func (d *daemonSet) getJSON(i int, id, out, written string, size, total int64) fetchEvent {
	d.t.Helper()
	stdout := d.pipes(i, "--json", "file", "get", id, "--out", out)
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	var evs []fetchEvent
	for _, l := range lines {
		var ev fetchEvent
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			d.t.Fatalf("line %q of get --json: %v", l, err)
		}
		evs = append(evs, ev)
	}
	if len(evs) < 2 {
		d.t.Fatalf("get --json printed %d events: %s", len(evs), stdout)
	}
	if total < 0 {
		total = evs[0].Total
	}
	for k, ev := range evs {
		if ev.Total != total || ev.Done < 0 || ev.Done > total || (k > 0 && ev.Done < evs[k-1].Done) {
			d.t.Fatalf("event %d of %d bytes: %+v in %s", k, total, ev, stdout)
		}
		if (ev.Result != nil) != (k == len(evs)-1) || ev.Error != "" {
			d.t.Fatalf("event %d: %+v in %s", k, ev, stdout)
		}
	}
	final := evs[len(evs)-1]
	if evs[len(evs)-2].Done != total || final.Done != total || final.Result.ID != id || (size >= 0 && final.Result.Size != size) || final.Result.Path != written {
		d.t.Fatalf("last events %+v %+v", evs[len(evs)-2], final.Result)
	}
	return final
}

// sameFile fails the test unless path holds want.
func sameFile(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: %d bytes differ from the %d added", path, len(got), len(want))
	}
}

// TestCLIFiles drives the file service through `pipes file` against
// three daemons: a file added on one is fetched by a second with --json
// progress, then by the third from both holders, to standard output; ls,
// stat and rm show and change what each holds; bad input gets clear
// errors. Replicate and archive run last.
func TestCLIFiles(t *testing.T) {
	d := startDaemons(t, "files", 3)
	d.waitConnected()
	dir := t.TempDir()
	content := make([]byte, 3<<20+12345) // a dozen chunks and a short one
	rand.Read(content)
	size := int64(len(content))
	if err := os.WriteFile(filepath.Join(dir, "photos.tar"), content, 0o600); err != nil {
		t.Fatal(err)
	}

	// A relative path is the caller's, not the daemon's.
	add := d.cmd(0, "file", "add", "photos.tar")
	add.Dir = dir
	out, err := tryCmd(add)
	if err != nil {
		t.Fatalf("file add: %v", err)
	}
	id := strings.TrimSpace(out)
	if len(id) != 64 || strings.Trim(id, "0123456789abcdef") != "" {
		t.Fatalf("file add printed %q, not an id", out)
	}
	// The same content is the same file.
	var again fileJSON
	json.Unmarshal([]byte(d.pipes(0, "--json", "file", "add", filepath.Join(dir, "photos.tar"))), &again)
	if again.ID != id || again.Size != size || !again.Local {
		t.Fatalf("add --json of the same file: %+v", again)
	}
	var ls []fileJSON
	json.Unmarshal([]byte(d.pipes(0, "--json", "file", "ls")), &ls)
	if len(ls) != 1 || ls[0].ID != id || ls[0].Name != "photos.tar" || ls[0].Size != size || !ls[0].Local {
		t.Fatalf("file ls on the adder: %+v", ls)
	}
	if out := d.pipes(0, "file", "ls"); !strings.Contains(out, id[:16]) || !strings.Contains(out, "photos.tar") {
		t.Fatalf("file ls: %s", out)
	}
	if out := d.pipes(1, "file", "ls"); !strings.Contains(out, "No files") {
		t.Fatalf("file ls on a node without files: %s", out)
	}

	t.Run("get", func(t *testing.T) {
		d := d.with(t)
		f := d.waitHolders(1, id, 1)
		if f.Local || f.Name != "photos.tar" || f.Size != size {
			t.Fatalf("stat on a node without the file: %+v", f)
		}
		got := filepath.Join(t.TempDir(), "got.tar")
		if final := d.getJSON(1, id, got, got, size, size); final.Result.Holders != 1 {
			t.Fatalf("fetched from %d holders, 1 known", final.Result.Holders)
		}
		sameFile(t, got, content)
		// An id prefix names a file the node keeps.
		if out := d.pipes(1, "file", "stat", id[:10]); !strings.Contains(out, "Local:    yes") || !strings.Contains(out, "Holders:  ") {
			t.Fatalf("stat by prefix after the fetch: %s", out)
		}

		// The third node fetches from both holders, into a directory: the
		// file goes there under its name.
		d.waitHolders(2, id, 2)
		into := t.TempDir()
		if final := d.getJSON(2, id, into, filepath.Join(into, "photos.tar"), size, size); final.Result.Holders != 2 {
			t.Fatalf("fetched from %d holders, 2 known", final.Result.Holders)
		}
		sameFile(t, filepath.Join(into, "photos.tar"), content)
		// Without --out, the content goes to standard output.
		out, err := d.try(2, "file", "get", id[:8])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal([]byte(out), content) {
			t.Fatalf("get to standard output: %d bytes differ from the %d added", len(out), len(content))
		}
	})

	t.Run("errors", func(t *testing.T) {
		d := d.with(t)
		for _, c := range []struct {
			args []string
			want string
		}{
			{[]string{"file", "stat", strings.Repeat("0", 64)}, "not found"},
			{[]string{"file", "get", strings.Repeat("0", 64), "--out", filepath.Join(dir, "none")}, "not found"},
			{[]string{"file", "rm", strings.Repeat("0", 64)}, "not found"},
			{[]string{"file", "stat", "not-an-id"}, "invalid id"},
			{[]string{"file", "get", "xyz", "--out", filepath.Join(dir, "none")}, "invalid id"},
			{[]string{"file", "stat", "abc0123"}, "not found"}, // a prefix of no file this node keeps
			{[]string{"file", "add", dir}, "is a directory"},
			{[]string{"file", "add", filepath.Join(dir, "missing")}, "not found"},
			{[]string{"file", "get", id, "--out", filepath.Join(dir, "missing", "x")}, "not found"},
			{[]string{"--json", "file", "get", id}, "give --out"},
			{[]string{"file", "replicate", id}, "give --copies"},
			{[]string{"file", "archive", id, "--data", "2"}, "give --data K and --parity M"},
			{[]string{"file", "add", filepath.Join(dir, "photos.tar"), "--readers", "nobody"}, `no identity named "nobody"`},
		} {
			out, err := d.try(0, c.args...)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("pipes %s: %v (want %q); stdout %q", strings.Join(c.args, " "), err, c.want, out)
			}
			if msg := err.Error(); strings.Contains(msg, "\n") {
				t.Errorf("pipes %s: error on more than one line: %q", strings.Join(c.args, " "), msg)
			}
		}
		if _, err := os.Stat(filepath.Join(dir, "none")); !os.IsNotExist(err) {
			t.Fatalf("a failed get left a file: %v", err)
		}
	})

	// Readers: they need the file service's access control.
	t.Run("readers", func(t *testing.T) {
		d := d.with(t)
		secret := []byte("for user1's eyes only\n")
		path := filepath.Join(t.TempDir(), "note.txt")
		os.WriteFile(path, secret, 0o600)
		var user1 nodeJSON
		json.Unmarshal([]byte(d.pipes(1, "--json", "node", "status")), &user1)
		// A reader by the name of a known node's identity, and this
		// node's own by an id prefix.
		var me nodeJSON
		json.Unmarshal([]byte(d.pipes(0, "--json", "node", "status")), &me)
		out, err := d.try(0, "--json", "file", "add", path, "--readers", "user1", "--readers", me.IdentityID[:12])
		if err != nil && strings.Contains(err.Error(), "not supported yet") {
			t.Skip(err)
		}
		if err != nil {
			t.Fatal(err)
		}
		var f struct {
			ID      string `json:"id"`
			Readers []struct {
				ID string `json:"id"`
			} `json:"readers"`
			Readable bool `json:"readable"`
		}
		json.Unmarshal([]byte(out), &f)
		var rs []string
		for _, r := range f.Readers {
			rs = append(rs, r.ID)
		}
		slices.Sort(rs)
		want := []string{user1.IdentityID, me.IdentityID}
		slices.Sort(want)
		if !slices.Equal(rs, want) || !f.Readable {
			t.Fatalf("add --readers: %s", out)
		}
		d.waitHolders(1, f.ID, 1)
		got := filepath.Join(t.TempDir(), "note.txt")
		d.getJSON(1, f.ID, got, got, -1, -1)
		sameFile(t, got, secret)
		// Not a reader: the node may hold the ciphertext, not write the
		// content.
		if _, err := d.try(2, "file", "get", f.ID, "--out", filepath.Join(dir, "stolen.txt")); err == nil || !strings.Contains(err.Error(), "secret not set") {
			t.Fatalf("get by a node that is not a reader: %v", err)
		}
		if _, err := os.Stat(filepath.Join(dir, "stolen.txt")); !os.IsNotExist(err) {
			t.Fatalf("a refused get left a file: %v", err)
		}
	})

	t.Run("rm", func(t *testing.T) {
		d := d.with(t)
		d.waitHolders(0, id, 3)
		if out := d.pipes(1, "file", "rm", id[:12]); !strings.Contains(out, "Removed file "+id[:16]) {
			t.Fatalf("file rm: %s", out)
		}
		if out := d.pipes(1, "--json", "file", "ls"); strings.Contains(out, id) {
			t.Fatalf("file ls after rm: %s", out)
		}
		f := d.waitHolders(0, id, 2)
		var hs []string
		for _, h := range f.Holders {
			hs = append(hs, h.ID)
		}
		if me := nodeID(t, d, 1); slices.Contains(hs, me) {
			t.Fatalf("the node that removed the file is still a holder: %v", hs)
		}
		if _, err := d.try(1, "file", "rm", id); err == nil || !strings.Contains(err.Error(), "not found") {
			t.Fatalf("rm twice: %v", err)
		}
	})

	// Ctrl-C stops a get; the next one resumes from what was verified.
	t.Run("interrupt", func(t *testing.T) {
		d := d.with(t)
		big := make([]byte, 24<<20)
		rand.Read(big)
		src := filepath.Join(t.TempDir(), "big.bin")
		os.WriteFile(src, big, 0o600)
		bid := strings.TrimSpace(d.pipes(0, "file", "add", src))
		d.waitHolders(1, bid, 1)
		out := filepath.Join(t.TempDir(), "big.bin")
		cmd := d.cmd(1, "--json", "file", "get", bid, "--out", out)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr syncBuffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var last fetchEvent
		interrupted, finished := false, false
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var ev fetchEvent
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				t.Fatalf("line %q: %v", sc.Text(), err)
			}
			if ev.Done < last.Done {
				t.Fatalf("done went back: %+v after %+v", ev, last)
			}
			last, finished = ev, ev.Result != nil
			if !interrupted && ev.Done > 0 && ev.Done < ev.Total {
				cmd.Process.Signal(os.Interrupt)
				interrupted = true
			}
		}
		err = cmd.Wait()
		switch {
		case finished:
			t.Logf("the fetch ended before the interrupt took effect (%v)", err)
		case err == nil || !strings.Contains(stderr.String(), "interrupted"):
			t.Fatalf("interrupted get: %v, stderr %q", err, stderr.String())
		default:
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Fatalf("an interrupted get wrote the file: %v", err)
			}
		}
		// The next get starts from what the first verified, at least.
		lines := strings.Split(strings.TrimSpace(d.pipes(1, "--json", "file", "get", bid, "--out", out)), "\n")
		var first fetchEvent
		if err := json.Unmarshal([]byte(lines[0]), &first); err != nil || first.Done < last.Done {
			t.Fatalf("the second get starts at %+v (%v), the first had %d bytes", first, err, last.Done)
		}
		sameFile(t, out, big)
		t.Logf("interrupted at %d of %d bytes; resumed at %d", last.Done, last.Total, first.Done)
	})

	// Replication and archives: they need the file service's
	// implementations of Replicate and Archive. They work on a file of
	// their own, which no node removed (a node that removed a file does
	// not take it back for a duty).
	kept := filepath.Join(t.TempDir(), "kept.bin")
	os.WriteFile(kept, content[:1<<20], 0o600)
	kid := strings.TrimSpace(d.pipes(0, "file", "add", kept))
	t.Run("replicate", func(t *testing.T) {
		d := d.with(t)
		d.waitHolders(1, kid, 1)
		out, err := d.tryFor(90*time.Second, 0, "--json", "file", "replicate", kid, "--copies", "3")
		skipUnbuilt(t, err)
		if err != nil {
			t.Fatal(err)
		}
		var f fileJSON
		json.Unmarshal([]byte(out), &f)
		if f.Copies != 3 || len(f.Holders) < 3 {
			t.Fatalf("replicate --copies 3: %+v", f)
		}
		if out := d.pipes(0, "file", "stat", kid); !strings.Contains(out, "Copies:   3 kept by the network") {
			t.Fatalf("stat after replicate: %s", out)
		}
		if _, err := d.try(0, "file", "replicate", kid, "--copies", "-1"); err == nil || !strings.Contains(err.Error(), "invalid argument") {
			t.Fatalf("replicate --copies -1: %v", err)
		}
		if _, err := d.tryFor(90*time.Second, 0, "file", "replicate", kid, "--copies", "5"); err == nil || !strings.Contains(err.Error(), "too few nodes") {
			t.Fatalf("replicate --copies 5 with 3 nodes: %v", err)
		}
		if _, err := d.try(0, "file", "replicate", kid, "--copies", "0"); err != nil {
			t.Fatalf("replicate --copies 0 (end the duty): %v", err)
		}
		if out := d.pipes(0, "file", "stat", kid); !strings.Contains(out, "Copies:   no duty") {
			t.Fatalf("stat after the duty ended: %s", out)
		}
	})
	t.Run("archive", func(t *testing.T) {
		d := d.with(t)
		out, err := d.tryFor(90*time.Second, 0, "--json", "file", "archive", kid, "--data", "2", "--parity", "1")
		skipUnbuilt(t, err)
		if err != nil {
			t.Fatal(err)
		}
		var f fileJSON
		json.Unmarshal([]byte(out), &f)
		if f.Archive == nil || f.Archive.Data != 2 || f.Archive.Parity != 1 || len(f.Archive.Shards) != 3 {
			t.Fatalf("archive --data 2 --parity 1: %s", out)
		}
		for _, s := range f.Archive.Shards {
			if len(s.Holders) == 0 {
				t.Fatalf("shard %d has no holder: %s", s.Index, out)
			}
		}
		if out := d.pipes(0, "file", "stat", kid); !strings.Contains(out, "Archive:  2 data + 1 parity shards") || !strings.Contains(out, "shard 2") {
			t.Fatalf("stat after archive: %s", out)
		}
		if _, err := d.tryFor(90*time.Second, 0, "file", "archive", kid, "--data", "4", "--parity", "2"); err == nil || !strings.Contains(err.Error(), "too few nodes") {
			t.Fatalf("archive of 6 shards on 3 nodes: %v", err)
		}
		if _, err := d.try(0, "file", "archive", kid, "--data", "0", "--parity", "1"); err == nil || !strings.Contains(err.Error(), "invalid argument") {
			t.Fatalf("archive --data 0: %v", err)
		}
	})
}

// tryFor is try for a command that waits on the network: past limit it
// is interrupted (Ctrl-C), and so fails, rather than hold the test up.
func (d *daemonSet) tryFor(limit time.Duration, i int, args ...string) (string, error) {
	cmd := d.cmd(i, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		return "", err
	}
	stop := time.AfterFunc(limit, func() { cmd.Process.Signal(os.Interrupt) })
	err := cmd.Wait()
	stop.Stop()
	if err != nil {
		return out.String(), fmt.Errorf("%w: %s", err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// skipUnbuilt skips a test of a file service feature that this tree does
// not have yet (its stub's error).
func skipUnbuilt(t *testing.T, err error) {
	t.Helper()
	if err != nil && strings.Contains(err.Error(), "not built yet") {
		t.Skip(err)
	}
}

// nodeID is daemon i's node id.
func nodeID(t *testing.T, d *daemonSet, i int) string {
	t.Helper()
	var n nodeJSON
	if err := json.Unmarshal([]byte(d.pipes(i, "--json", "node", "status")), &n); err != nil {
		t.Fatal(err)
	}
	return n.ID
}
