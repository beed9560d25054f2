package pipes_test

import (
	"context"
	"io"
	"iter"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/pipesnet/pipes"
)

// The required public API, checked by the compiler: each line fails to
// build if a signature drifts from the design.
var (
	_ func(string, ...pipes.Option) (*pipes.Platform, error)                                                   = pipes.Open
	_ func(*slog.Logger) pipes.Option                                                                          = pipes.WithLogger
	_ func(string, pipes.NetworkSpec) (*pipes.Netfile, error)                                                  = pipes.CreateNetwork
	_ func(string) pipes.NodeOption                                                                            = pipes.WithListenAddr
	_ func(*pipes.Platform) string                                                                             = (*pipes.Platform).Version
	_ func(*pipes.Platform) error                                                                              = (*pipes.Platform).Close
	_ func(*pipes.Platform) []*pipes.Network                                                                   = (*pipes.Platform).Networks
	_ func(*pipes.Platform) (*pipes.Network, error)                                                            = (*pipes.Platform).BootstrapNetwork
	_ func(*pipes.Platform, pipes.NetworkID) (*pipes.Network, error)                                           = (*pipes.Platform).Network
	_ func(*pipes.Platform, string) (*pipes.Network, error)                                                    = (*pipes.Platform).AddNetwork
	_ func(*pipes.Platform) bool                                                                               = (*pipes.Platform).HasLocalIdentity
	_ func(*pipes.Platform) (*pipes.Identity, error)                                                           = (*pipes.Platform).LocalIdentity
	_ func(*pipes.Platform, pipes.IdentityID) (*pipes.Identity, error)                                         = (*pipes.Platform).Identity
	_ func(*pipes.Platform) []*pipes.Identity                                                                  = (*pipes.Platform).Identities
	_ func(*pipes.Platform, string) (*pipes.Identity, error)                                                   = (*pipes.Platform).AddIdentity
	_ func(*pipes.Platform) []*pipes.Node                                                                      = (*pipes.Platform).Nodes
	_ func(*pipes.Platform, pipes.NodeID) (*pipes.Node, error)                                                 = (*pipes.Platform).Node
	_ func(*pipes.Platform, *pipes.Network, *pipes.Identity, string, ...pipes.NodeOption) (*pipes.Node, error) = (*pipes.Platform).AddNode

	_ func(*pipes.Network) string                = (*pipes.Network).Name
	_ func(*pipes.Network) pipes.NetworkID       = (*pipes.Network).ID
	_ func(*pipes.Network) bool                  = (*pipes.Network).IsBootstrap
	_ func(*pipes.Network) bool                  = (*pipes.Network).HasSecret
	_ func(*pipes.Network, string) (bool, error) = (*pipes.Network).SetSecret
	_ func(*pipes.Network, string, int) error    = (*pipes.Network).AddGateway
	_ func(*pipes.Network) []pipes.Gateway       = (*pipes.Network).Gateways
	_ func(*pipes.Identity) pipes.IdentityID     = (*pipes.Identity).ID
	_ func(*pipes.Identity) string               = (*pipes.Identity).Name
	_                                            = pipes.Gateway{Network: (*pipes.Network)(nil), NetworkID: pipes.NetworkID{}, Host: "", Port: 0}
	_                                            = pipes.NetworkSpec{Name: "", Secret: "", Gateways: []string(nil), Bootstrap: false}

	_ func(*pipes.Node) pipes.NodeID                                                = (*pipes.Node).ID
	_ func(*pipes.Node) *pipes.Network                                              = (*pipes.Node).Network
	_ func(*pipes.Node) *pipes.Identity                                             = (*pipes.Node).Identity
	_ func(*pipes.Node) string                                                      = (*pipes.Node).Location
	_ func(*pipes.Node, context.Context) error                                      = (*pipes.Node).Start
	_ func(*pipes.Node) error                                                       = (*pipes.Node).Shutdown
	_ func(*pipes.Node) bool                                                        = (*pipes.Node).IsActive
	_ func(*pipes.Node) bool                                                        = (*pipes.Node).IsConnected
	_ func(*pipes.Node) []netip.AddrPort                                            = (*pipes.Node).ListenAddrs
	_ func(*pipes.Node) []pipes.NodeRef                                             = (*pipes.Node).ConnectedPeers
	_ func(*pipes.Node) []pipes.NodeRef                                             = (*pipes.Node).ConnectedNodes
	_ func(*pipes.Node) []pipes.NodeRef                                             = (*pipes.Node).KnownNodes
	_ func(*pipes.Node, string) (pipes.NodeRef, error)                              = (*pipes.Node).NodeWithID
	_ func(*pipes.Node) []*pipes.Pipeline                                           = (*pipes.Node).Pipelines
	_ func(*pipes.Node, pipes.PipelineID) (*pipes.Pipeline, error)                  = (*pipes.Node).Pipeline
	_ func(*pipes.Node, string, pipes.PipelineOptions) (pipes.PipelineID, error)    = (*pipes.Node).CreatePipeline
	_ func(*pipes.Node, context.Context, pipes.PipelineID) (*pipes.Pipeline, error) = (*pipes.Node).WaitPipeline
	_ func(*pipes.Node) ([]pipes.NetworkInfo, error)                                = (*pipes.Node).BootstrapNetworks
	_ func(*pipes.Node, pipes.NetworkID) error                                      = (*pipes.Node).AddBootstrapNetwork
	_ func(*pipes.Node, pipes.NodeListener)                                         = (*pipes.Node).AddListener
	_ func(*pipes.Node, pipes.NodeListener)                                         = (*pipes.Node).RemoveListener
	_ func(*pipes.Node, context.Context, pipes.NodeID, string) (net.Conn, error)    = (*pipes.Node).Dial
	_ func(*pipes.Node, string) (net.Listener, error)                               = (*pipes.Node).Listen

	_ = pipes.PipelineOptions{ToNode: pipes.NodeID{}, Persistent: false, Encrypted: false, Secret: []byte(nil),
		Ephemeral: false, Realtime: false, Unsalted: false, Salt: []byte(nil)}

	_ func(*pipes.Pipeline) pipes.PipelineID                                    = (*pipes.Pipeline).ID
	_ func(*pipes.Pipeline) string                                              = (*pipes.Pipeline).Name
	_ func(*pipes.Pipeline) bool                                                = (*pipes.Pipeline).Encrypted
	_ func(*pipes.Pipeline) bool                                                = (*pipes.Pipeline).IsPointToPoint
	_ func(*pipes.Pipeline) (pipes.NodeID, bool)                                = (*pipes.Pipeline).OtherNode
	_ func(*pipes.Pipeline) bool                                                = (*pipes.Pipeline).Persistent
	_ func(*pipes.Pipeline) bool                                                = (*pipes.Pipeline).Live
	_ func(*pipes.Pipeline) bool                                                = (*pipes.Pipeline).Realtime
	_ func(*pipes.Pipeline) error                                               = (*pipes.Pipeline).Shutdown
	_ func(*pipes.Pipeline) []pipes.NodeID                                      = (*pipes.Pipeline).NodesWithEncryptionSecret
	_ func(*pipes.Pipeline, []byte) (bool, error)                               = (*pipes.Pipeline).SetSecret
	_ func(*pipes.Pipeline, []byte, ...pipes.PutOption) (pipes.PacketID, error) = (*pipes.Pipeline).Put
	_ func(int) pipes.PutOption                                                 = pipes.WithPacketType
	_ func(pipes.NodeID) pipes.PutOption                                        = pipes.WithDestination
	_ func(*pipes.Pipeline, string) (pipes.PacketID, error)                     = (*pipes.Pipeline).PutFile
	_ func(*pipes.Pipeline, pipes.PacketID) (*pipes.Packet, error)              = (*pipes.Pipeline).PacketWithID
	_ func(*pipes.Pipeline, int64) iter.Seq2[*pipes.Packet, error]              = (*pipes.Pipeline).PacketsSince
	_ func(*pipes.Pipeline, context.Context) <-chan *pipes.Packet               = (*pipes.Pipeline).Subscribe
	_ func(*pipes.Pipeline) bool                                                = (*pipes.Pipeline).IsSynchronizing
	_ func(*pipes.Pipeline, string, int) error                                  = (*pipes.Pipeline).SetupUDPPortMap
	_ func(*pipes.Pipeline) *net.UDPAddr                                        = (*pipes.Pipeline).UDPAddr
	_ func(*pipes.Pipeline, pipes.PipelineListener)                             = (*pipes.Pipeline).AddListener
	_ func(*pipes.Pipeline, pipes.PipelineListener)                             = (*pipes.Pipeline).RemoveListener

	_ func(*pipes.Packet) pipes.PacketID         = (*pipes.Packet).ID
	_ func(*pipes.Packet) int                    = (*pipes.Packet).Type
	_ func(*pipes.Packet) int64                  = (*pipes.Packet).Size
	_ func(*pipes.Packet) int64                  = (*pipes.Packet).LogID
	_ func(*pipes.Packet) pipes.NodeID           = (*pipes.Packet).Sender
	_ func(*pipes.Packet) time.Time              = (*pipes.Packet).Time
	_ func(*pipes.Packet) ([]byte, error)        = (*pipes.Packet).Data
	_ func(*pipes.Packet) (io.ReadCloser, error) = (*pipes.Packet).Open
	_ func(*pipes.Packet, string) error          = (*pipes.Packet).WriteDataToPath

	// Beyond the spec: context variants, and state of the new kinds.
	_ func(*pipes.Pipeline, context.Context, string) (pipes.PacketID, error)    = (*pipes.Pipeline).PutFileContext
	_ func(*pipes.Packet, context.Context) (io.ReadCloser, error)               = (*pipes.Packet).OpenContext
	_ func(*pipes.Packet, context.Context, string) error                        = (*pipes.Packet).WriteDataToPathContext
	_ func(*pipes.Packet) bool                                                  = (*pipes.Packet).IsFile
	_ func(*pipes.Pipeline) bool                                                = (*pipes.Pipeline).HasSecret
	_ func(*pipes.Pipeline) bool                                                = (*pipes.Pipeline).Ephemeral
	_ func(*pipes.Pipeline) bool                                                = (*pipes.Pipeline).Closed
	_ func(*pipes.Pipeline)                                                     = (*pipes.Pipeline).ClosePortMap
	_ func(bool) pipes.NodeOption                                               = pipes.WithPortMapping
	_ func(int) pipes.NodeOption                                                = pipes.WithRelayRate
	_ func(*pipes.Node) pipes.PortMapping                                       = (*pipes.Node).PortMapping
	_ func(*pipes.Node) []netip.AddrPort                                        = (*pipes.Node).PublicAddrs
	_                                                                           = pipes.PortMapping{Enabled: false, Protocol: "", External: netip.AddrPort{}, Err: error(nil)}
	_ func(*pipes.Node, context.Context) (pipes.NATReport, error)               = (*pipes.Node).CheckNAT
	_ func(context.Context, pipes.RouterPortOptions) (*pipes.RouterPort, error) = pipes.OpenRouterPort
	_ func(*pipes.RouterPort) netip.AddrPort                                    = (*pipes.RouterPort).External
	_ func(*pipes.RouterPort, context.Context) error                            = (*pipes.RouterPort).Close

	_ pipes.NodeListener               = (*pipes.NodeListenerFuncs)(nil)
	_ pipes.PipelineListener           = (*pipes.PipelineListenerFuncs)(nil)
	_ func(pipes.NodeRef) pipes.NodeID = pipes.NodeRef.ID
	_ func(pipes.NodeRef) string       = pipes.NodeRef.Name
	_ func(pipes.NodeRef) string       = pipes.NodeRef.Location
	_ func(pipes.NodeRef) string       = pipes.NodeRef.Version
	_ func(pipes.NodeRef) bool         = pipes.NodeRef.IsConnected
	_ func(pipes.NodeRef) bool         = pipes.NodeRef.IsPeer

	_ func(pipes.NodeListener, bool, *pipes.Node)                  = pipes.NodeListener.HandleConnectionUpdate
	_ func(pipes.NodeListener, pipes.NodeRef, *pipes.Node)         = pipes.NodeListener.HandleNodeStatusUpdate
	_ func(pipes.NodeListener, *pipes.Pipeline, *pipes.Node)       = pipes.NodeListener.HandlePipeline
	_ func(pipes.PipelineListener, *pipes.Packet, *pipes.Pipeline) = pipes.PipelineListener.HandlePacket
	_ func(pipes.PipelineListener, *pipes.Pipeline)                = pipes.PipelineListener.HandleStatusUpdate
	_ func(pipes.PipelineListener, *pipes.Pipeline)                = pipes.PipelineListener.HandleUDPPortMap
	_ func(pipes.PipelineListener, bool, *pipes.Pipeline)          = pipes.PipelineListener.HandleSyncUpdate

	_ func(string) (pipes.NetworkID, error)  = pipes.ParseNetworkID
	_ func(string) (pipes.IdentityID, error) = pipes.ParseIdentityID
	_ func(string) (pipes.NodeID, error)     = pipes.ParseNodeID
	_ func(string) (pipes.PipelineID, error) = pipes.ParsePipelineID
	_ func(string) (pipes.PacketID, error)   = pipes.ParsePacketID
)
