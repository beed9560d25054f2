package mesh

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"
)

// TestStreams: a stream opened to a direct peer reaches its OnStream (an
// echo here) and half-closes cleanly; a node that is not a direct peer
// gets ErrNotPeer.
func TestStreams(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, r, b := datagramLine(t, ctx)
	st, err := a.OpenStream(ctx, r.id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write([]byte("over the stream")); err != nil {
		t.Fatal(err)
	}
	st.Close() // our side is done: the echo ends when it has sent it back
	got, err := io.ReadAll(st)
	if err != nil || string(got) != "over the stream" {
		t.Fatalf("echo: %q %v", got, err)
	}
	if _, err := a.OpenStream(ctx, b.id); !errors.Is(err, ErrNotPeer) {
		t.Fatalf("stream to a node that is not a peer: %v", err)
	}
}
