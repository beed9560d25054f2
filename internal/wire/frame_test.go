package wire

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/pipesnet/pipes/internal/wire/pb"
)

func sampleFrames() []*pb.Frame {
	return []*pb.Frame{
		{Body: &pb.Frame_Gossip{Gossip: &pb.Gossip{Id: bytes.Repeat([]byte{1}, 32), Kind: 1, Payload: []byte("hello"), Hops: 3}}},
		{Body: &pb.Frame_Ihave{Ihave: &pb.IHave{Messages: []*pb.Announcement{{Id: make([]byte, 32), Hops: 1}}}}},
		{Body: &pb.Frame_Graft{Graft: &pb.Graft{Id: make([]byte, 32)}}},
		{Body: &pb.Frame_Prune{Prune: &pb.Prune{}}},
		{Body: &pb.Frame_Peers{Peers: &pb.PeerList{Peers: []*pb.PeerInfo{{NodeId: make([]byte, 32), Addrs: []string{"127.0.0.1:1"}}}}}},
		{Body: &pb.Frame_Goodbye{Goodbye: &pb.Goodbye{Reason: "bye"}}},
		{},
	}
}

func TestRoundTrip(t *testing.T) {
	var buf []byte
	var err error
	frames := sampleFrames()
	for _, f := range frames {
		if buf, err = AppendMsg(buf, f); err != nil {
			t.Fatal(err)
		}
	}
	r := bufio.NewReader(bytes.NewReader(buf))
	for i, want := range frames {
		got, err := ReadFrame(r)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !proto.Equal(got, want) {
			t.Fatalf("frame %d: got %v want %v", i, got, want)
		}
	}
	if _, err := ReadFrame(r); err != io.EOF {
		t.Fatalf("after last frame: %v, want io.EOF", err)
	}
}

func TestTruncated(t *testing.T) {
	buf, err := AppendMsg(nil, sampleFrames()[0])
	if err != nil {
		t.Fatal(err)
	}
	for n := 1; n < len(buf); n++ {
		_, err := ReadFrame(bufio.NewReader(bytes.NewReader(buf[:n])))
		if err == nil {
			t.Fatalf("prefix %d of %d decoded", n, len(buf))
		}
		if err == io.EOF {
			t.Fatalf("prefix %d: clean EOF inside a frame", n)
		}
	}
}

func TestOversizedRejectedBeforeRead(t *testing.T) {
	hdr := binary.AppendUvarint(nil, MaxFrameSize+1)
	_, err := ReadFrame(bufio.NewReader(bytes.NewReader(hdr)))
	if !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("got %v, want ErrFrameTooLarge", err)
	}
	big := &pb.Frame{Body: &pb.Frame_Gossip{Gossip: &pb.Gossip{Payload: make([]byte, MaxFrameSize)}}}
	if _, err := AppendMsg(nil, big); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("encode oversized: %v", err)
	}
}

func TestGarbage(t *testing.T) {
	buf := append(binary.AppendUvarint(nil, 3), 0xff, 0xff, 0xff)
	if _, err := ReadFrame(bufio.NewReader(bytes.NewReader(buf))); !errors.Is(err, ErrMalformed) {
		t.Fatalf("got %v, want ErrMalformed", err)
	}
	overlong := bytes.Repeat([]byte{0x80}, 11)
	if _, err := ReadFrame(bufio.NewReader(bytes.NewReader(overlong))); !errors.Is(err, ErrMalformed) {
		t.Fatalf("overlong varint: %v", err)
	}
}

// FuzzReadFrame feeds arbitrary streams to the frame reader: it must never
// panic, and whatever it decodes must re-encode to a frame that decodes to
// the same message.
func FuzzReadFrame(f *testing.F) {
	for _, fr := range sampleFrames() {
		b, _ := AppendMsg(nil, fr)
		f.Add(b)
	}
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReader(bytes.NewReader(data))
		for range 8 {
			fr, err := ReadFrame(r)
			if err != nil {
				return
			}
			b, err := AppendMsg(nil, fr)
			if err != nil {
				t.Fatalf("re-encode: %v", err)
			}
			again, err := ReadFrame(bufio.NewReader(bytes.NewReader(b)))
			if err != nil || !proto.Equal(again, fr) {
				t.Fatalf("re-decode mismatch: %v", err)
			}
		}
	})
}
