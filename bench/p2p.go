package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"math/big"
	"net"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/pipesnet/pipes"
)

const p2pSize = 1 << 20

// runP2P compares point-to-point throughput of 1 MiB messages: a Pipes
// point-to-point pipeline between two peers (signed, sealed end to end,
// routed) against one raw quic-go stream on the same loopback.
func runP2P(quick bool) {
	count := 300
	if quick {
		count = 50
	}
	raw, err := rawQUIC(count)
	must(err)
	pp, err := pipesP2P(count)
	must(err)
	fmt.Println("## Point-to-point: 1 MiB messages, Pipes pipeline vs one raw quic-go stream")
	fmt.Println()
	header("system", "messages", "MiB/s", "Pipes/raw")
	fmt.Printf("| raw quic-go stream | %d | %.0f | |\n", count, raw)
	fmt.Printf("| Pipes point-to-point pipeline | %d | %.0f | %.0f%% |\n", count, pp, 100*pp/raw)
	fmt.Println()
}

func selfSigned() (tls.Certificate, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, priv.Public(), priv)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv}, nil
}

// rawQUIC sends count messages of 1 MiB over one stream and returns MiB/s.
func rawQUIC(count int) (float64, error) {
	d, err := rawSend(int64(count)*p2pSize, p2pSize, false)
	if err != nil {
		return 0, err
	}
	return float64(count) / d.Seconds(), nil
}

// rawSend sends total bytes over one quic-go stream on loopback, in writes
// of chunk bytes, and returns the time until the receiver has read the
// last byte: from the dial if fromDial, else from the first write.
func rawSend(total int64, chunk int, fromDial bool) (time.Duration, error) {
	cert, err := selfSigned()
	if err != nil {
		return 0, err
	}
	tconf := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"bench"}, InsecureSkipVerify: true}
	ln, err := quic.ListenAddr("127.0.0.1:0", tconf, nil)
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	ctx := context.Background()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept(ctx)
		if err != nil {
			done <- err
			return
		}
		s, err := c.AcceptStream(ctx)
		if err != nil {
			done <- err
			return
		}
		_, err = io.CopyN(io.Discard, s, total)
		c.CloseWithError(0, "")
		done <- err
	}()
	start := time.Now()
	c, err := quic.DialAddr(ctx, ln.Addr().(*net.UDPAddr).String(), tconf, nil)
	if err != nil {
		return 0, err
	}
	s, err := c.OpenStreamSync(ctx)
	if err != nil {
		return 0, err
	}
	if !fromDial {
		start = time.Now()
	}
	buf := make([]byte, chunk)
	for sent := int64(0); sent < total; sent += int64(len(buf)) {
		if _, err := s.Write(buf[:min(int64(len(buf)), total-sent)]); err != nil {
			return 0, err
		}
	}
	if err := <-done; err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// pipesP2P sends count messages of 1 MiB on a point-to-point pipeline
// between two peers and returns MiB/s measured at the receiver.
func pipesP2P(count int) (float64, error) {
	net, err := startPipes(2, [][2]int{{0, 1}}, 1)
	if err != nil {
		return 0, err
	}
	defer net.close()
	a, b := net.nodes[0], net.nodes[1]
	id, err := a.CreatePipeline("p2p", pipes.PipelineOptions{ToNode: b.ID()})
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	pb, err := b.WaitPipeline(ctx, id)
	if err != nil {
		return 0, err
	}
	ch := pb.Subscribe(ctx)
	pa, _ := a.Pipeline(id)
	msg := make([]byte, p2pSize)
	start := time.Now()
	go func() {
		for range count {
			if _, err := pa.Put(msg); err != nil {
				return
			}
		}
	}()
	for i := range count {
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, fmt.Errorf("pipes p2p: received %d of %d", i, count)
		}
	}
	return float64(count) / time.Since(start).Seconds(), nil
}
