package dispatch

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math/big"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/kinds"
)

// quicPair connects a client to a server on 127.0.0.1 over real QUIC and
// hands every stream the client opens to accept (as the mesh does with
// mesh.Config.OnStream).
func quicPair(t *testing.T, accept func(*quic.Stream)) *quic.Conn {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, priv.Public(), priv)
	if err != nil {
		t.Fatal(err)
	}
	srvTLS := &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: priv}}, NextProtos: []string{"t"}}
	ln, err := quic.ListenAddr("127.0.0.1:0", srvTLS, &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept(ctx)
		if err != nil {
			return
		}
		for {
			st, err := c.AcceptStream(ctx)
			if err != nil {
				c.CloseWithError(0, "")
				return
			}
			accept(st)
		}
	}()
	cc, err := quic.DialAddr(ctx, ln.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"t"}}, &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cc.CloseWithError(0, "")
		cancel()
		<-done
		ln.Close()
	})
	return cc
}

func openWith(t *testing.T, c *quic.Conn, first []byte) *quic.Stream {
	t.Helper()
	st, err := c.OpenStreamSync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(first) > 0 {
		if _, err := st.Write(first); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

// wantReset waits for st to be reset by the dispatcher.
func wantReset(t *testing.T, st *quic.Stream) {
	t.Helper()
	_, err := io.ReadAll(st)
	var se *quic.StreamError
	if !errors.As(err, &se) || se.ErrorCode != StreamCode {
		t.Fatalf("the stream ended with %v, want a reset with code %#x", err, StreamCode)
	}
}

func TestAStreamReachesTheHandlerOfItsProtocol(t *testing.T) {
	d := New(nil)
	defer d.Close()
	peer := ids.Node{7}
	got := make(chan string, 1)
	if err := d.HandleStream(kinds.StreamConns, func(from ids.Node, st *quic.Stream) {
		if from != peer {
			t.Errorf("handler told of peer %s", from.Short())
		}
		go func() { // the handler hands the stream on, as a service does
			b, _ := io.ReadAll(st)
			got <- string(b)
			st.Close()
		}()
	}); err != nil {
		t.Fatal(err)
	}
	if err := d.HandleStream(kinds.StreamConns, func(ids.Node, *quic.Stream) {}); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("a protocol registered twice: %v", err)
	}
	c := quicPair(t, func(st *quic.Stream) { d.AcceptStream(peer, st) })

	st := openWith(t, c, append(StreamHeader(kinds.StreamConns), "hello"...))
	st.Close()
	if s := <-got; s != "hello" {
		t.Fatalf("the handler read %q, want the stream past its protocol bytes", s)
	}

	// A protocol nobody registered: reset and counted.
	wantReset(t, openWith(t, c, StreamHeader(0x0101)))
	if n := d.Stats().Unknown; n != 1 {
		t.Fatalf("Unknown = %d after a stream of no protocol", n)
	}
}

// Closing the dispatcher resets a stream that has not said its protocol,
// and refuses the streams that come after.
func TestCloseResetsStreamsStillWaiting(t *testing.T) {
	d := New(nil)
	reached := make(chan struct{}, 1)
	if err := d.HandleStream(kinds.StreamConns, func(ids.Node, *quic.Stream) { reached <- struct{}{} }); err != nil {
		t.Fatal(err)
	}
	accepted := make(chan struct{}, 2)
	c := quicPair(t, func(st *quic.Stream) { d.AcceptStream(ids.Node{1}, st); accepted <- struct{}{} })

	silent := openWith(t, c, []byte{0x70}) // one byte of two: the dispatcher waits
	<-accepted
	d.Close() // returns although the stream never says its protocol
	wantReset(t, silent)

	wantReset(t, openWith(t, c, StreamHeader(kinds.StreamConns)))
	select {
	case <-reached:
		t.Fatal("a stream reached its handler after Close")
	default:
	}
	if err := d.HandleStream(0x0202, func(ids.Node, *quic.Stream) {}); !errors.Is(err, ErrClosed) {
		t.Fatalf("HandleStream after Close: %v", err)
	}
}
