package integrationtests

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/pipesnet/pipes"
	"github.com/pipesnet/pipes/internal/testnet"
)

// writerEnv names the data directory when the test binary runs as the
// writing process of TestSIGKILLLosesNothingAcknowledged.
const writerEnv = "PIPES_TEST_WRITER_DIR"

// runWriter is the writing process: it starts the platform's node, puts
// packets on a persistent pipeline as fast as it can, and prints
// "ack <n> <packet id>" each time Put returns nil, until it is killed.
func runWriter() int {
	p, err := pipes.Open(os.Getenv(writerEnv), pipes.WithTestMode(true))
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	n := p.Nodes()[0]
	if err := n.Start(context.Background()); err != nil {
		fmt.Println("error", err)
		return 1
	}
	id, err := n.CreatePipeline("durable", pipes.PipelineOptions{Persistent: true})
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	pl, _ := n.Pipeline(id)
	for i := 0; ; i++ {
		pid, err := pl.Put(fmt.Appendf(nil, "packet %d", i))
		if err != nil {
			fmt.Println("error", err)
			return 1
		}
		fmt.Printf("ack %d %s\n", i, pid) // unbuffered: one write(2) per line
	}
}

// TestSIGKILLLosesNothingAcknowledged kills a writing process with SIGKILL
// in the middle of a stream of Puts and finds, after a restart, every
// packet whose Put returned, at its LogID.
func TestSIGKILLLosesNothingAcknowledged(t *testing.T) {
	m := testnet.NewMember(t, testnet.Netfile(t, "durable"), "writer")
	if err := m.P.Close(); err != nil {
		t.Fatal(err)
	}
	var before int64 // packets logged before this round
	for round := range 2 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), writerEnv+"="+m.Dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var acked []pipes.PacketID
		sc := bufio.NewScanner(out)
		for sc.Scan() && len(acked) < 400 {
			f := strings.Fields(sc.Text())
			if len(f) != 3 || f[0] != "ack" {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("writer: %s", sc.Text())
			}
			id, err := pipes.ParsePacketID(f[2])
			if err != nil {
				t.Fatal(err)
			}
			acked = append(acked, id)
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()
		if len(acked) < 400 {
			t.Fatalf("round %d: the writer acknowledged only %d packets", round, len(acked))
		}

		m.Open(t)
		m.Start(t)
		var pl *pipes.Pipeline
		for _, p := range m.N.Pipelines() {
			if p.Name() == "durable" {
				pl = p
			}
		}
		if pl == nil {
			t.Fatal("the pipeline is gone after the crash")
		}
		// This round's packets follow those of the rounds before, in
		// the order their Puts returned.
		for i, id := range acked {
			pk, err := pl.PacketWithID(id)
			if err != nil {
				t.Fatalf("round %d: acknowledged packet %d lost: %v", round, i, err)
			}
			if pk.LogID() != before+int64(i) {
				t.Fatalf("round %d: packet %d at LogID %d, want %d", round, i, pk.LogID(), before+int64(i))
			}
		}
		hist := testnet.History(t, pl)
		if int64(len(hist)) != pl.Stats().Logged {
			t.Fatalf("history of %d packets, Logged says %d", len(hist), pl.Stats().Logged)
		}
		before = pl.Stats().Logged
		if err := m.P.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
