package files

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/pipesnet/pipes/internal/blob"
	"github.com/pipesnet/pipes/internal/ids"
)

// The transfer protocol (docs/protocol.md, "File transfer"), on a data
// connection to the service ServiceName of a holder. Every frame, both
// ways, is
//
//	type (1 byte) | length (4 bytes, big endian) | body (length bytes)
//
// and every length is bounded before anything is allocated: a request
// body by maxRequest, a response body by what the fetcher expects next
// (the manifest frame's bound, or 4 + the length of the chunk it asked
// for). The fetcher may send requests before the answers to earlier ones
// came (pipelining); the holder answers them in order.
//
// Requests (fetcher to holder):
//
//	reqManifest: root (32)
//	reqChunks:   root (32) | first index (4) | count (4), count 1..maxRange
//
// Answers (holder to fetcher): to reqManifest one respManifest or
// respNotFound; to reqChunks one respChunk or respMissing per index, in
// order, or one respNotFound for the whole range.
//
//	respManifest: name length (2) | name | marshalled blob manifest
//	respChunk:    index (4) | the chunk's bytes
//	respMissing:  index (4)        the holder lacks that chunk
//	respNotFound: root (32)        the holder has no such file
const (
	reqManifest byte = 1
	reqChunks   byte = 2

	respManifest byte = 1
	respChunk    byte = 2
	respMissing  byte = 3
	respNotFound byte = 4
)

// ServiceName is the data connections' service the holders listen on.
// The root package refuses user listeners on names beginning "pipes/".
const ServiceName = "pipes/files"

// Bounds of the protocol.
const (
	// MaxName is the longest file name, in bytes.
	MaxName = 1024
	// maxRange is the most chunks one reqChunks asks for.
	maxRange = 64
	// maxRequest is the longest request body.
	maxRequest = 32 + 4 + 4
	// maxManifest is the longest marshalled manifest.
	maxManifest = 4 + 1 + 4 + 8 + 16 + 32*blob.MaxChunks
	// maxManifestFrame is the longest respManifest body.
	maxManifestFrame = 2 + MaxName + maxManifest
)

// ErrProtocol: the other end broke the transfer protocol.
var ErrProtocol = errors.New("files: protocol error")

// writeFrame writes one frame.
func writeFrame(w io.Writer, typ byte, body ...[]byte) error {
	n := 0
	for _, b := range body {
		n += len(b)
	}
	var h [5]byte
	h[0] = typ
	binary.BigEndian.PutUint32(h[1:], uint32(n))
	if _, err := w.Write(h[:]); err != nil {
		return err
	}
	for _, b := range body {
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	return nil
}

// readFrame reads one frame whose body is at most limit bytes, into buf
// if it is large enough.
func readFrame(r *bufio.Reader, limit int, buf []byte) (typ byte, body []byte, err error) {
	var h [5]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(h[1:])
	if uint64(n) > uint64(limit) {
		return 0, nil, fmt.Errorf("%w: frame of type %d has %d bytes, at most %d here", ErrProtocol, h[0], n, limit)
	}
	if cap(buf) >= int(n) {
		body = buf[:n]
	} else {
		body = make([]byte, n)
	}
	if _, err := io.ReadFull(r, body); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return h[0], body, nil
}

// request is a decoded request.
type request struct {
	typ          byte
	root         ids.Content
	first, count int
}

// parseRequest decodes a request frame.
func parseRequest(typ byte, body []byte) (request, error) {
	q := request{typ: typ}
	switch {
	case typ == reqManifest && len(body) == 32:
		q.root = ids.Content(body)
		return q, nil
	case typ == reqChunks && len(body) == 40:
		q.root = ids.Content(body[:32])
		first, count := binary.BigEndian.Uint32(body[32:]), binary.BigEndian.Uint32(body[36:])
		if count < 1 || count > maxRange || first >= blob.MaxChunks || count > blob.MaxChunks-first {
			return q, fmt.Errorf("%w: chunks %d+%d", ErrProtocol, first, count)
		}
		q.first, q.count = int(first), int(count)
		return q, nil
	}
	return q, fmt.Errorf("%w: request of type %d with %d bytes", ErrProtocol, typ, len(body))
}

// chunksRequest encodes a reqChunks body.
func chunksRequest(root ids.Content, first, count int) []byte {
	b := append(make([]byte, 0, 40), root[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(first))
	return binary.BigEndian.AppendUint32(b, uint32(count))
}

// parseManifestResp decodes a respManifest body and checks that the
// manifest is the one of root.
func parseManifestResp(body []byte, root ids.Content) (string, *blob.Manifest, error) {
	if len(body) < 2 {
		return "", nil, fmt.Errorf("%w: short manifest answer", ErrProtocol)
	}
	n := int(binary.BigEndian.Uint16(body))
	if n > MaxName || len(body) < 2+n {
		return "", nil, fmt.Errorf("%w: name of %d bytes", ErrProtocol, n)
	}
	name := string(body[2 : 2+n])
	m, err := blob.ParseManifest(body[2+n:])
	if err != nil {
		return "", nil, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	if m.Root() != root {
		return "", nil, fmt.Errorf("%w: %w: the manifest is not the file's", ErrProtocol, ErrBadData)
	}
	return name, m, nil
}

// chunkAnswer is a decoded answer to one index of a reqChunks.
type chunkAnswer struct {
	index    int
	data     []byte // nil when the holder lacks the chunk
	notFound bool   // the holder has no such file
}

// readChunkAnswer reads the answer about chunk want of the file of
// manifest m: its body is bounded by the chunk's length, and the index
// must be want.
func readChunkAnswer(r *bufio.Reader, m *blob.Manifest, want int, buf []byte) (chunkAnswer, error) {
	typ, body, err := readFrame(r, max(32, 4+m.ChunkLen(want)), buf)
	if err != nil {
		return chunkAnswer{}, err
	}
	a := chunkAnswer{index: want}
	switch typ {
	case respNotFound:
		a.notFound = true
		return a, nil
	case respChunk, respMissing:
		if len(body) < 4 || int(binary.BigEndian.Uint32(body)) != want {
			return a, fmt.Errorf("%w: answer about another chunk than %d", ErrProtocol, want)
		}
		if typ == respChunk {
			if a.data = body[4:]; len(a.data) != m.ChunkLen(want) {
				return a, fmt.Errorf("%w: chunk %d has %d bytes, not %d", ErrProtocol, want, len(a.data), m.ChunkLen(want))
			}
		} else if len(body) != 4 {
			return a, fmt.Errorf("%w: missing-chunk answer of %d bytes", ErrProtocol, len(body))
		}
		return a, nil
	}
	return a, fmt.Errorf("%w: answer of type %d to a chunk request", ErrProtocol, typ)
}
