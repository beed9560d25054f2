package files

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/pipesnet/pipes/internal/blob"
	"github.com/pipesnet/pipes/internal/ids"
)

// Serving bounds.
const (
	maxServed   = 64              // connections served at once
	idleServing = 2 * time.Minute // a connection with no request for that long is closed
)

// accept serves the connections of the service's listener until it
// closes.
func (s *Service) accept() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed || len(s.served) >= maxServed {
			s.mu.Unlock()
			c.Close()
			continue
		}
		s.served[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.served, c)
				s.mu.Unlock()
				c.Close()
			}()
			if err := s.serve(c); !errors.Is(err, io.EOF) {
				s.log.Debug("serving files", "to", c.RemoteAddr().String(), "err", err)
			}
		}()
	}
}

// serve answers the requests of one connection, in order, until it
// closes (io.EOF) or fails or breaks the protocol.
func (s *Service) serve(c net.Conn) error {
	r := bufio.NewReader(c)
	w := bufio.NewWriterSize(c, 64<<10)
	asker, named := askerOf(c)
	for {
		c.SetReadDeadline(time.Now().Add(idleServing))
		typ, body, err := readFrame(r, maxRequest, nil)
		if err != nil {
			return err
		}
		q, err := parseRequest(typ, body)
		if err != nil {
			return err
		}
		if err := s.answer(w, q, asker, named); err != nil {
			return err
		}
		if r.Buffered() == 0 {
			if err := w.Flush(); err != nil {
				return err
			}
		}
	}
}

// kept reports whether id is a file of the service on this node (only
// those are served: the blob store holds pipelines' blobs too).
func (s *Service) kept(id ids.Content) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.files[id]
	if r == nil {
		return "", false
	}
	return r.name, true
}

// answer writes the answer to one request of asker (named: the
// connection names it).
func (s *Service) answer(w *bufio.Writer, q request, asker ids.Node, named bool) error {
	name, ok := s.kept(q.root)
	if !ok && named {
		ok = s.authorized(q.root, asker)
	}
	var m *blob.Manifest
	if ok {
		var err error
		if m, err = s.blobs.Manifest(q.root); err != nil {
			ok = false
		}
	}
	if !ok {
		return writeFrame(w, respNotFound, q.root[:])
	}
	if q.typ == reqManifest {
		var n [2]byte
		binary.BigEndian.PutUint16(n[:], uint16(len(name)))
		return writeFrame(w, respManifest, n[:], []byte(name), m.Marshal())
	}
	h := s.hook()
	// The chunks are read (and opened at rest) by a goroutine of its own
	// one ahead of the one being written to the connection, so reading
	// and sending overlap. It ends before answer returns.
	type read struct {
		data []byte // nil: the chunk is missing here
	}
	next, stop := make(chan read, 1), make(chan struct{})
	var wg sync.WaitGroup
	defer func() { close(stop); wg.Wait() }()
	wg.Go(func() {
		defer close(next)
		for i := q.first; i < q.first+q.count; i++ {
			var r read
			if i < len(m.Chunks) {
				if h.ServeChunk != nil {
					h.ServeChunk(i)
				}
				if data, err := s.blobs.ReadChunk(q.root, i); err == nil {
					r.data = data
				}
			}
			select {
			case next <- r:
			case <-stop:
				return
			}
		}
	})
	i := q.first
	for r := range next {
		var idx [4]byte
		binary.BigEndian.PutUint32(idx[:], uint32(i))
		i++
		if r.data == nil {
			if err := writeFrame(w, respMissing, idx[:]); err != nil {
				return err
			}
			continue
		}
		data := r.data
		if h.Corrupt && len(data) > 0 {
			data = append([]byte(nil), data...)
			data[len(data)/2] ^= 0xff
		}
		if h.Served != nil {
			h.Served(i, data)
		}
		if err := writeFrame(w, respChunk, idx[:], data); err != nil {
			return err
		}
		s.nServed.Add(1)
		if err := w.Flush(); err != nil {
			return err
		}
	}
	return nil
}

// manifestOn asks for the manifest of id on connection c (r reads c) and
// checks that it hashes to id.
func manifestOn(c net.Conn, r *bufio.Reader, id ids.Content) (string, *blob.Manifest, error) {
	if err := writeFrame(c, reqManifest, id[:]); err != nil {
		return "", nil, err
	}
	typ, body, err := readFrame(r, maxManifestFrame, nil)
	if err != nil {
		return "", nil, err
	}
	switch typ {
	case respManifest:
		return parseManifestResp(body, id)
	case respNotFound:
		return "", nil, fmt.Errorf("%w: the holder has no file %s", ErrNotFound, id.Short())
	}
	return "", nil, fmt.Errorf("%w: answer of type %d to a manifest request", ErrProtocol, typ)
}
