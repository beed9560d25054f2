package pipes_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/pipesnet/pipes"
)

// Example shows the main flow: an admin creates a network; two platforms
// join it with the secret; their nodes find each other.
func Example() {
	dir, _ := os.MkdirTemp("", "pipes-example-")
	defer os.RemoveAll(dir)

	// The admin writes a netfile and hands it out with the secret.
	netfile := filepath.Join(dir, "team.net")
	if _, err := pipes.CreateNetwork(netfile, pipes.NetworkSpec{Name: "team", Secret: "s3cret-of-the-team", KDF: pipes.FastKDF}); err != nil {
		log.Fatal(err)
	}

	// Each member: open a data directory, add the network, set the secret,
	// add an identity and a node, start it.
	join := func(name string, gateway *pipes.Node) (*pipes.Platform, *pipes.Node) {
		p, err := pipes.Open(filepath.Join(dir, name), pipes.WithTestMode(true))
		if err != nil {
			log.Fatal(err)
		}
		nw, err := p.AddNetwork(netfile)
		if err != nil {
			log.Fatal(err)
		}
		if ok, err := nw.SetSecret("s3cret-of-the-team"); !ok || err != nil {
			log.Fatal("wrong secret", err)
		}
		if gateway != nil {
			a := gateway.ListenAddrs()[0]
			nw.AddGateway(a.Addr().String(), int(a.Port()))
		}
		me, _ := p.AddIdentity(name)
		n, err := p.AddNode(nw, me, "laptop")
		if err != nil {
			log.Fatal(err)
		}
		if err := n.Start(context.Background()); err != nil {
			log.Fatal(err)
		}
		return p, n
	}
	pa, alice := join("alice", nil)
	defer pa.Close()
	pb, bob := join("bob", alice)
	defer pb.Close()

	for len(bob.ConnectedNodes()) == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	peer := bob.ConnectedNodes()[0]
	fmt.Println(peer.Name(), peer.Location(), peer.IsPeer())
	// Output: alice laptop true
}

// ExampleNodeListenerFuncs shows how to follow presence with callbacks.
func ExampleNodeListenerFuncs() {
	l := &pipes.NodeListenerFuncs{
		NodeStatusUpdate: func(peer pipes.NodeRef, n *pipes.Node) {
			fmt.Printf("%s@%s online=%v\n", peer.Name(), peer.Location(), peer.IsConnected())
		},
	}
	_ = l // node.AddListener(l) on a started or stopped node
}

// ExamplePipeline_PacketsSince shows a persistent pipeline: every Put is
// on disk when it returns, and the history is read back in log order, also
// after a restart.
func ExamplePipeline_PacketsSince() {
	dir, _ := os.MkdirTemp("", "pipes-example-")
	defer os.RemoveAll(dir)
	netfile := filepath.Join(dir, "notes.net")
	if _, err := pipes.CreateNetwork(netfile, pipes.NetworkSpec{Name: "notes", Secret: "a long secret", KDF: pipes.FastKDF}); err != nil {
		log.Fatal(err)
	}
	p, err := pipes.Open(filepath.Join(dir, "me"), pipes.WithTestMode(true))
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	nw, _ := p.AddNetwork(netfile)
	nw.SetSecret("a long secret")
	me, _ := p.AddIdentity("me")
	n, _ := p.AddNode(nw, me, "desk")
	if err := n.Start(context.Background()); err != nil {
		log.Fatal(err)
	}
	id, err := n.CreatePipeline("journal", pipes.PipelineOptions{Persistent: true})
	if err != nil {
		log.Fatal(err)
	}
	journal, _ := n.Pipeline(id)
	for _, entry := range []string{"bought milk", "fixed the bike", "called home"} {
		if _, err := journal.Put([]byte(entry)); err != nil {
			log.Fatal(err)
		}
	}
	for pk, err := range journal.PacketsSince(0) { // everything after LogID 0
		if err != nil {
			log.Fatal(err)
		}
		data, _ := pk.Data()
		fmt.Printf("%d: %s\n", pk.LogID(), data)
	}
	// Output:
	// 1: fixed the bike
	// 2: called home
}
