// Package wire frames protobuf messages on QUIC streams.
//
// A frame is the message's length as an unsigned LEB128 varint followed by
// that many bytes of protobuf encoding:
//
//	+----------------+---------------------------+
//	| length (1..5 B) | protobuf message (length) |
//	+----------------+---------------------------+
//
// The length is checked against a hard limit before any of the body is read
// or allocated, so a peer cannot make a reader allocate more than the limit.
// A zero length is a valid, empty message. The message types live in package
// pb (generated from proto/pipes/v1/pipes.proto).
package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/proto"

	"github.com/pipesnet/pipes/internal/wire/pb"
)

// MaxFrameSize is the largest control frame a node sends or accepts: 4 MiB,
// room for one largest packet (1 MiB) with its batch, sealing and routing
// envelopes. Files will travel on streams of their own.
const MaxFrameSize = 4 << 20

// MaxHandshakeSize bounds the Hello and Verdict messages of the handshake.
const MaxHandshakeSize = 16 << 10

// ErrFrameTooLarge is returned for a frame whose length prefix exceeds the limit.
var ErrFrameTooLarge = errors.New("wire: frame exceeds size limit")

// ErrMalformed is returned for a frame whose body does not decode.
var ErrMalformed = errors.New("wire: malformed frame")

var marshal = proto.MarshalOptions{Deterministic: true}

// AppendMsg appends m as one frame (length prefix and body) to buf.
func AppendMsg(buf []byte, m proto.Message) ([]byte, error) {
	size := marshal.Size(m)
	if size > MaxFrameSize {
		return buf, fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, size, MaxFrameSize)
	}
	buf = binary.AppendUvarint(buf, uint64(size))
	return marshal.MarshalAppend(buf, m)
}

// WriteMsg writes m as one frame with a single Write call.
func WriteMsg(w io.Writer, m proto.Message) error {
	buf, err := AppendMsg(nil, m)
	if err != nil {
		return err
	}
	_, err = w.Write(buf)
	return err
}

// ReadMsg reads one frame of at most max body bytes into m. It returns
// io.EOF only when the stream ends cleanly before a frame starts, and
// io.ErrUnexpectedEOF when it ends inside a frame.
func ReadMsg(r *bufio.Reader, m proto.Message, max int) error {
	n, err := readLength(r)
	if err != nil {
		return err
	}
	if n > uint64(max) {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, n, max)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	return Decode(body, m)
}

// readLength reads the varint length prefix. Errors of the stream pass
// through unchanged (io.EOF only before the first byte); an over-long
// varint is ErrMalformed.
func readLength(r *bufio.Reader) (uint64, error) {
	var x uint64
	for i := 0; i < binary.MaxVarintLen64; i++ {
		b, err := r.ReadByte()
		if err != nil {
			if i > 0 && errors.Is(err, io.EOF) {
				return 0, io.ErrUnexpectedEOF
			}
			return 0, err
		}
		if i == binary.MaxVarintLen64-1 && b > 1 {
			break
		}
		x |= uint64(b&0x7f) << (7 * i)
		if b < 0x80 {
			return x, nil
		}
	}
	return 0, fmt.Errorf("%w: length prefix overflows 64 bits", ErrMalformed)
}

// Decode unmarshals one frame body into m. Unknown fields are kept and
// ignored, so newer peers can add fields.
func Decode(body []byte, m proto.Message) error {
	if err := proto.Unmarshal(body, m); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return nil
}

// ReadFrame reads one control Frame.
func ReadFrame(r *bufio.Reader) (*pb.Frame, error) {
	f := new(pb.Frame)
	if err := ReadMsg(r, f, MaxFrameSize); err != nil {
		return nil, err
	}
	return f, nil
}
