package integrationtests

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os/exec"
	"testing"
	"time"

	"github.com/pipesnet/pipes"
	"github.com/pipesnet/pipes/internal/netlab"
	"github.com/pipesnet/pipes/internal/testnet"
)

// The file service in the lab: each holder's link rate-limited.

// labHolderRate is the rate of each holder's link (tbf on its egress).
// It is low enough that three links at once stay well below what the
// nodes of one process move under -race on two cores, so the fetch is
// bound by the links, not by the machine.
const labHolderRate = "16mbit"

// limitEgress rate-limits everything h sends (its eth0) with a token
// bucket filter.
func limitEgress(t *testing.T, h *netlab.Host, rate string) {
	t.Helper()
	if out, err := h.Run("tc", "qdisc", "add", "dev", "eth0", "root", "tbf",
		"rate", rate, "burst", "32kb", "latency", "100ms"); err != nil {
		t.Fatalf("tc: %v: %s", err, out)
	}
}

// TestFileMultiSourceLab: three holders, each on a link limited to
// labHolderRate, deliver a file to a fourth node at least 2.5 times as
// fast as one of them alone. Both fetches get the same content in the
// same test; the rates (from the first chunk stored to the last) are
// logged (go test -run TestFileMultiSourceLab -v ./integrationtests/, as
// root), the ratio is asserted.
func TestFileMultiSourceLab(t *testing.T) {
	lab := netlab.New(t, "pfms")
	if _, err := exec.LookPath("tc"); err != nil {
		t.Skip("no tc (iproute2)")
	}
	netPath := testnet.Netfile(t, "pfms")
	var ms []*testnet.Member
	for i, name := range []string{"fetcher", "holder1", "holder2", "holder3"} {
		h, err := lab.AddHost(nil)
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			limitEgress(t, h, labHolderRate)
		}
		m := testnet.NewMember(t, netPath, name, pipes.WithListenAddr(net.JoinHostPort(h.Addr().String(), "0")))
		if i > 0 {
			m.Gateway(t, ms[0])
		}
		startIn(t, m, h)
		ms = append(ms, m)
	}
	testnet.Eventually(t, 60*time.Second, "all see all", testnet.AllSeeAll(ms))
	f, holders := ms[0], ms[1:]

	data := make([]byte, 20<<20)
	rand.NewChaCha8([32]byte{'l', 'a', 'b'}).Read(data)
	ctx := context.Background()
	add := func(m *testnet.Member) pipes.FileID {
		t.Helper()
		id, err := m.N.Files().AddReader(ctx, "lab.bin", bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	waitHolders := func(id pipes.FileID, n int) {
		t.Helper()
		testnet.Eventually(t, 60*time.Second, fmt.Sprintf("%d holders known", n), func() error {
			st, err := f.N.Files().Stat(ctx, id)
			if err != nil {
				return err
			}
			if len(st.Holders) != n {
				return fmt.Errorf("holders %v", st.Holders)
			}
			return nil
		})
	}
	fetch := func(id pipes.FileID) float64 {
		t.Helper()
		fctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
		// Timed from the first chunk stored to the last, so that the
		// set-up (the manifest, the data connections) does not count.
		var first time.Time
		var firstDone int64
		err := f.N.Files().Fetch(fctx, id, func(done, total int64) {
			if first.IsZero() && done > 0 {
				first, firstDone = time.Now(), done
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		d := time.Since(first)
		r, err := f.N.Files().Open(id)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("the fetched copy differs (%v)", err)
		}
		return float64(int64(len(data))-firstDone) / 1e6 / d.Seconds()
	}

	// One holder first.
	id := add(holders[0])
	waitHolders(id, 1)
	one := fetch(id)
	if err := f.N.Files().Remove(ctx, id); err != nil {
		t.Fatal(err)
	}
	// Then all three.
	add(holders[1])
	add(holders[2])
	waitHolders(id, 3)
	three := fetch(id)
	t.Logf("each holder's link %s: one holder %.2f MB/s, three holders %.2f MB/s: %.2fx", labHolderRate, one, three, three/one)
	if three < 2.5*one {
		t.Fatalf("three holders deliver %.2f MB/s, one %.2f MB/s: %.2fx, want at least 2.5x", three, one, three/one)
	}
}
