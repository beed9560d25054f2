package pipes_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
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
	p, n := exampleNode(dir)
	defer p.Close()
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

// exampleNode opens a platform in dir with one started node of a new
// network.
func exampleNode(dir string) (*pipes.Platform, *pipes.Node) {
	netfile := filepath.Join(dir, "example.net")
	if _, err := pipes.CreateNetwork(netfile, pipes.NetworkSpec{Name: "example", Secret: "a long secret", KDF: pipes.FastKDF}); err != nil {
		log.Fatal(err)
	}
	p, err := pipes.Open(filepath.Join(dir, "me"), pipes.WithTestMode(true))
	if err != nil {
		log.Fatal(err)
	}
	nw, _ := p.AddNetwork(netfile)
	nw.SetSecret("a long secret")
	me, _ := p.AddIdentity("me")
	n, _ := p.AddNode(nw, me, "desk")
	if err := n.Start(context.Background()); err != nil {
		log.Fatal(err)
	}
	return p, n
}

// exampleJoiner starts bob's node, on a platform of its own in dir, in
// exampleNode's network with the given node as its gateway.
func exampleJoiner(dir string, gateway *pipes.Node, location string) (*pipes.Platform, *pipes.Node) {
	p, err := pipes.Open(filepath.Join(dir, "bob"), pipes.WithTestMode(true))
	if err != nil {
		log.Fatal(err)
	}
	nw, _ := p.AddNetwork(filepath.Join(dir, "example.net"))
	nw.SetSecret("a long secret")
	gw := gateway.ListenAddrs()[0]
	nw.AddGateway(gw.Addr().String(), int(gw.Port()))
	me, _ := p.AddIdentity("bob")
	n, _ := p.AddNode(nw, me, location)
	if err := n.Start(context.Background()); err != nil {
		log.Fatal(err)
	}
	return p, n
}

// ExamplePipeline_SetSecret shows an encrypted pipeline: its packets are
// sealed with a key derived from the pipeline secret, which never leaves
// a node; a node that learns the secret later calls SetSecret, and a
// wrong secret is recognised at once.
func ExamplePipeline_SetSecret() {
	dir, _ := os.MkdirTemp("", "pipes-example-")
	defer os.RemoveAll(dir)
	p, n := exampleNode(dir)
	defer p.Close()
	id, err := n.CreatePipeline("board", pipes.PipelineOptions{Persistent: true, Encrypted: true, Secret: []byte("only the board knows")})
	if err != nil {
		log.Fatal(err)
	}
	board, _ := n.Pipeline(id)
	if _, err := board.Put([]byte("minutes of the meeting")); err != nil {
		log.Fatal(err)
	}
	ok, _ := board.SetSecret([]byte("a guess"))
	fmt.Println("guess accepted:", ok)
	for pk := range board.PacketsSince(-1) {
		data, _ := pk.Data()
		fmt.Printf("%s (%d bytes)\n", data, pk.Size())
	}
	fmt.Println("holders:", len(board.NodesWithEncryptionSecret()))
	// Output:
	// guess accepted: false
	// minutes of the meeting (22 bytes)
	// holders: 1
}

// ExamplePipeline_PutFile shows a file packet: the file is streamed into
// the node's store in chunks and its manifest put on the pipeline; other
// nodes fetch and check the chunks, and read the content with
// Packet.Open or Packet.WriteDataToPath.
func ExamplePipeline_PutFile() {
	dir, _ := os.MkdirTemp("", "pipes-example-")
	defer os.RemoveAll(dir)
	p, n := exampleNode(dir)
	defer p.Close()
	id, err := n.CreatePipeline("shared", pipes.PipelineOptions{Persistent: true})
	if err != nil {
		log.Fatal(err)
	}
	shared, _ := n.Pipeline(id)
	src := filepath.Join(dir, "report.txt")
	os.WriteFile(src, []byte("quarterly report\n"), 0o644)
	pid, err := shared.PutFile(src)
	if err != nil {
		log.Fatal(err)
	}
	pk, _ := shared.PacketWithID(pid)
	dst := filepath.Join(dir, "copy.txt")
	if err := pk.WriteDataToPath(dst); err != nil {
		log.Fatal(err)
	}
	b, _ := os.ReadFile(dst)
	fmt.Printf("file packet: %v, %d bytes: %s", pk.IsFile(), pk.Size(), b)
	// Output:
	// file packet: true, 17 bytes: quarterly report
}

// ExampleNode_Dial shows a data connection: bob serves HTTP on a service
// of his node, and alice fetches a page from it through Dial. Any net.Conn
// code works over it.
func ExampleNode_Dial() {
	dir, _ := os.MkdirTemp("", "pipes-example-")
	defer os.RemoveAll(dir)
	pa, alice := exampleNode(dir)
	defer pa.Close()
	pb, bob := exampleJoiner(dir, alice, "server")
	defer pb.Close()

	l, err := bob.Listen("web")
	if err != nil {
		log.Fatal(err)
	}
	go http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from bob's %s", r.URL.Path)
	}))

	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return alice.Dial(ctx, bob.ID(), "web")
		},
	}}
	for len(alice.ConnectedNodes()) == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	resp, err := client.Get("http://bob/page")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(string(body))
	// Output: hello from bob's /page
}

// ExampleOpenRouterPort forwards a public port of the router to an
// application's own TCP port, for as long as the application runs. (It
// needs a router that grants mappings, so it has no output to check.)
func ExampleOpenRouterPort() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rp, err := pipes.OpenRouterPort(ctx, pipes.RouterPortOptions{Port: 8080, Protocol: "tcp"})
	if err != nil {
		fmt.Println("no port mapping:", err) // ErrNoGateway, ErrRouterRefused or ErrNoPortMapping
		return
	}
	defer rp.Close(context.Background())
	fmt.Printf("reachable at %s (%s)\n", rp.External(), rp.Protocol())
}
