package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// byteTracer counts the message payload bytes GossipSub hands to peers.
type byteTracer struct{ bytes, sends atomic.Uint64 }

func (t *byteTracer) SendRPC(rpc *pubsub.RPC, p peer.ID) {
	for _, m := range rpc.GetPublish() {
		t.bytes.Add(uint64(len(m.GetData())))
		t.sends.Add(1)
	}
}
func (t *byteTracer) AddPeer(peer.ID, protocol.ID)                         {}
func (t *byteTracer) RemovePeer(peer.ID)                                   {}
func (t *byteTracer) Join(string)                                          {}
func (t *byteTracer) Leave(string)                                         {}
func (t *byteTracer) Graft(peer.ID, string)                                {}
func (t *byteTracer) Prune(peer.ID, string)                                {}
func (t *byteTracer) ValidateMessage(*pubsub.Message)                      {}
func (t *byteTracer) DeliverMessage(*pubsub.Message)                       {}
func (t *byteTracer) RejectMessage(*pubsub.Message, string)                {}
func (t *byteTracer) DuplicateMessage(*pubsub.Message)                     {}
func (t *byteTracer) ThrottlePeer(peer.ID)                                 {}
func (t *byteTracer) RecvRPC(*pubsub.RPC)                                  {}
func (t *byteTracer) DropRPC(*pubsub.RPC, peer.ID)                         {}
func (t *byteTracer) UndeliverableMessage(*pubsub.Message)                 {}
func (t *byteTracer) OnNewOutboundStream(peer.ID, protocol.ID)             {}
func (t *byteTracer) OnClosedOutboundStream(peer.ID)                       {}
func (t *byteTracer) SendRPCCompleted(*pubsub.RPC, peer.ID, time.Duration) {}

func runGossipSub(w workload) (result, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hosts := make([]host.Host, w.nodes)
	for i := range hosts {
		h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/udp/0/quic-v1"))
		if err != nil {
			return result{}, err
		}
		defer h.Close()
		hosts[i] = h
	}
	for _, e := range w.edges() {
		a, b := hosts[e[0]], hosts[e[1]]
		if err := b.Connect(ctx, peer.AddrInfo{ID: a.ID(), Addrs: a.Addrs()}); err != nil {
			return result{}, err
		}
	}
	// Queues large enough that GossipSub drops nothing (its defaults drop
	// most of a full-speed burst); signing and strict verification are its
	// defaults.
	q := w.messages*2 + 64
	tracer := &byteTracer{}
	want := w.messages * (w.nodes - 1)
	rec := newRecorder(want)
	topics := make([]*pubsub.Topic, w.nodes)
	for i, h := range hosts {
		ps, err := pubsub.NewGossipSub(ctx, h, pubsub.WithPeerOutboundQueueSize(q),
			pubsub.WithValidateQueueSize(q), pubsub.WithRawTracer(tracer),
			pubsub.WithMaxMessageSize(8<<20))
		if err != nil {
			return result{}, err
		}
		t, err := ps.Join("bench")
		if err != nil {
			return result{}, err
		}
		topics[i] = t
		sub, err := t.Subscribe(pubsub.WithBufferSize(q))
		if err != nil {
			return result{}, err
		}
		self := h.ID()
		go func() {
			for {
				m, err := sub.Next(ctx)
				if err != nil {
					return
				}
				if m.ReceivedFrom == self {
					continue
				}
				rec.deliver(m.Data)
			}
		}()
	}
	// Let the mesh form (heartbeats every second) before publishing.
	deadline := time.Now().Add(20 * time.Second)
	for {
		ready := true
		for _, t := range topics {
			if len(t.ListPeers()) == 0 {
				ready = false
			}
		}
		if ready || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	b0, s0 := tracer.bytes.Load(), tracer.sends.Load()
	start := time.Now()
	err := publishPlan(w, func(pub, seq int) error {
		return topics[pub].Publish(ctx, makePayload(w.size, pub, seq))
	})
	if err != nil {
		return result{}, err
	}
	select {
	case <-rec.done:
	case <-time.After(60 * time.Second):
	}
	res := rec.result(start, w.nodes-1, tracer.bytes.Load()-b0, tracer.sends.Load()-s0)
	if res.delivered < want {
		res.note = fmt.Sprintf("delivered %d of %d", res.delivered, want)
	}
	return res, nil
}
