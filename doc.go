// Package pipes is a peer-to-peer platform SDK: nodes of a private network
// find each other, connect directly over QUIC, prove they are members, and
// keep track of who is online — with no server to run.
//
// # Concepts
//
// A Platform is an open data directory (Open). It holds identities (named
// Ed25519 keys, AddIdentity), networks (AddNetwork, from a netfile made by
// CreateNetwork or `pipes network create`) and nodes (AddNode): a node is
// one identity's presence in one network at one location, with its own
// device key. Only one Platform may have a directory open at a time; a
// second Open fails with ErrLocked.
//
// A network is private: its netfile holds Argon2id parameters and a
// verifier of the network secret, never the secret. Network.SetSecret
// checks a secret and stores the derived network key. After TLS 1.3, nodes
// prove they hold that key with an HMAC over the TLS exporter; a node that
// cannot is disconnected before it learns anything beyond a public key.
//
// # Joining and presence
//
//	p, err := pipes.Open(dir)
//	nw, err := p.AddNetwork("team.net")
//	ok, err := nw.SetSecret(secret)
//	me, err := p.AddIdentity("alice")
//	node, err := p.AddNode(nw, me, "laptop")
//	err = node.Start(ctx)
//	defer p.Close()
//
// A started node dials its network's gateways, learns of other nodes from
// them and keeps about six direct peers (ConnectedPeers). Every node
// broadcasts a signed status; ConnectedNodes lists every node online now,
// KnownNodes every node ever seen (kept across restarts). A node that shuts
// down is reported offline at once; one that vanishes, within 20 seconds
// by default (WithPresenceTiming). NodeListener callbacks report changes.
//
// # Pipelines
//
//	id, err := node.CreatePipeline("chat", pipes.PipelineOptions{})
//	p, err := other.WaitPipeline(ctx, id)   // on any node of the network
//	for pk := range p.Subscribe(ctx) { data, _ := pk.Data(); … }
//	_, err = p.Put([]byte("hello"), pipes.WithPacketType(1))
//
// A live pipeline delivers each packet to every node online now, once;
// ToNode makes a point-to-point pipeline between two nodes that need not be
// peers (the mesh routes it, end to end encrypted), and WithDestination
// sends one packet of a broadcast pipeline to one node only. Packets are
// signed by their sender and verified by every receiver. See Pipeline for
// delivery and flow-control guarantees.
//
// A persistent pipeline (PipelineOptions{Persistent: true}) keeps its
// whole history on every node, encrypted at rest. Put returns once the
// packet is on disk; every node logs packets at LogIDs 0, 1, 2, ... that
// stay put across restarts (PacketsSince, PacketWithID, SubscribeSince);
// nodes that were offline, new nodes and the halves of a healed partition
// catch up from their peers by themselves, pulling only what they lack
// (IsSynchronizing, PipelineListener.HandleSyncUpdate). What a node stored
// reads without Start: after pipes.Open, Pipelines, Pipeline,
// PacketWithID, PacketsSince and the packets' Data and Open (file packets
// excepted) work on a node that is not started; Put, CreatePipeline,
// subscriptions and everything else that needs the network give
// ErrNotActive until Start.
//
// An encrypted pipeline (Encrypted, with a Secret) seals its packets with
// a key derived from the pipeline secret, which never leaves a node: nodes
// without it relay and store the packets but cannot read them (SetSecret,
// HasSecret, NodesWithEncryptionSecret). An ephemeral pipeline can be shut
// down network-wide (Pipeline.Shutdown). A realtime pipeline carries each
// packet as one datagram, with no retransmission; SetupUDPPortMap bridges
// a realtime point-to-point pipeline to a local UDP port. PutFile puts a
// file of up to 32 GiB as one packet whose content every receiver fetches
// in checked chunks (Packet.Open, Packet.WriteDataToPath).
//
// # Data connections
//
//	l, err := node.Listen("chat")                 // on one node
//	c, err := other.Dial(ctx, node.ID(), "chat")  // a net.Conn to it
//
// A data connection is a QUIC stream between direct peers, and TLS end to
// end through the relays otherwise. Dial fails fast with ErrNotConnected
// or ErrRefused; a connection whose path fails gives errors matching
// ErrConnectionLost.
//
// Errors wrap the package's sentinels (ErrNotActive, ErrNotFound, …) and
// keep the cause in their chain: test them with errors.Is.
//
// # Guarantees
//
// Callbacks never run under a lock of this package and a slow callback
// never stalls the network (see NodeListener for the queue and its drop
// policy). Every goroutine a node starts stops before Shutdown returns.
// Nothing received from the network can make the package panic: every
// decoder is fuzzed.
package pipes
