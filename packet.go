package pipes

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/pipesnet/pipes/internal/atomicfile"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/pipeline"
)

// Packet is one unit of data on a pipeline, verified as sent by Sender.
type Packet struct {
	p  *pipeline.Packet
	pl *Pipeline

	mu    sync.Mutex
	plain []byte // decrypted data (encrypted pipelines), once read
	read  bool
	id    PacketID // computed id (realtime packets)
}

// packet wraps a packet of p.
func (p *Pipeline) packet(pk *pipeline.Packet) *Packet { return &Packet{p: pk, pl: p} }

// ID returns the packet id: SHA-256 of its header and data (computed on
// first use for a realtime packet).
func (pk *Packet) ID() PacketID {
	if pk.p.ID != (ids.Packet{}) {
		return PacketID(pk.p.ID)
	}
	pk.mu.Lock()
	defer pk.mu.Unlock()
	if pk.id == (PacketID{}) {
		pk.id = PacketID(pk.p.ComputeID())
	}
	return pk.id
}

// Type returns the application's packet type.
func (pk *Packet) Type() int { return int(pk.p.Type) }

// IsFile reports whether the packet is a file packet (PutFile): its
// content is read with Open or WriteDataToPath.
func (pk *Packet) IsFile() bool { return pk.p.File }

// Size returns the size of the data in bytes (on an encrypted pipeline,
// of the data as the application put it; for a file packet, of the file).
func (pk *Packet) Size() int64 {
	if pk.p.File {
		if e := pk.pl.n.engineOrNil(); e != nil {
			if n, err := e.FileSize(pk.p); err == nil {
				return n
			}
		}
		return -1
	}
	if pk.pl != nil && pk.pl.Encrypted() {
		return int64(max(len(pk.p.Data)-pipeline.SealOverhead, 0))
	}
	return int64(len(pk.p.Data))
}

// LogID returns the packet's position in the local log of a persistent
// pipeline: 0, 1, 2, ... in the order the node logged its packets, stable
// across restarts. It is -1 on live pipelines (and for a packet a Put
// returned before it was read back).
func (pk *Packet) LogID() int64 {
	if pk.p.Logged {
		return pk.p.LogID
	}
	return -1
}

// Sender returns the node that put the packet.
func (pk *Packet) Sender() NodeID { return NodeID(pk.p.Sender) }

// Seq returns the packet's sequence number among its sender's packets on
// the pipeline.
func (pk *Packet) Seq() uint64 { return pk.p.Seq }

// Time returns the packet's hybrid-logical-clock time.
func (pk *Packet) Time() time.Time { return pk.p.Time() }

// Data returns the packet's data. The slice is shared: do not modify it.
// On an encrypted pipeline it is decrypted (once): ErrNoSecret if this
// node lacks the pipeline secret, ErrCannotRead if the data does not
// decrypt. For a file packet it reads the whole file into memory, waiting
// for its content to arrive, up to MaxFileData bytes (ErrTooLarge beyond:
// use Open or WriteDataToPath).
func (pk *Packet) Data() ([]byte, error) {
	if pk.p.File {
		return pk.fileData()
	}
	if pk.pl == nil || !pk.pl.Encrypted() {
		return pk.p.Data, nil
	}
	pk.mu.Lock()
	defer pk.mu.Unlock()
	if pk.read {
		return pk.plain, nil
	}
	e, err := pk.pl.n.readEngine() // stored keys read without Start
	if err != nil {
		return nil, err
	}
	plain, err := e.ReadData(pk.p)
	if err != nil {
		return nil, mapErr(err, "")
	}
	pk.plain, pk.read = plain, true
	return plain, nil
}

// Open returns a reader of the packet's data. For a file packet it
// streams the file chunk by chunk, waiting for chunks still on their way
// (each is checked against the packet's manifest before it is read);
// Close it to stop waiting. It is OpenContext with a background context.
func (pk *Packet) Open() (io.ReadCloser, error) {
	return pk.OpenContext(context.Background())
}

// OpenContext is Open whose reads give up when ctx ends.
func (pk *Packet) OpenContext(ctx context.Context) (io.ReadCloser, error) {
	if pk.p.File {
		// A complete file reads without Start; only fetching what is
		// missing needs the network (ErrNotActive).
		e, err := pk.pl.n.readEngine()
		if err != nil {
			return nil, err
		}
		r, err := e.OpenFile(ctx, pk.p)
		if err != nil {
			return nil, mapErr(err, "")
		}
		return fileReader{r}, nil
	}
	d, err := pk.Data()
	if err != nil {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(d)), nil
}

// WriteDataToPath writes the packet's data to path (mode 0644), replacing
// it atomically once complete. A file packet is streamed, never held in
// memory; if the transfer is interrupted, calling it again continues from
// the chunks already received. It is WriteDataToPathContext with a
// background context.
func (pk *Packet) WriteDataToPath(path string) error {
	return pk.WriteDataToPathContext(context.Background(), path)
}

// WriteDataToPathContext is WriteDataToPath that gives up when ctx ends.
func (pk *Packet) WriteDataToPathContext(ctx context.Context, path string) error {
	if !pk.p.File {
		d, err := pk.Data()
		if err != nil {
			return err
		}
		return atomicfile.Write(path, d, 0o644)
	}
	r, err := pk.OpenContext(ctx)
	if err != nil {
		return err
	}
	defer r.Close()
	return atomicfile.WriteFrom(path, r, 0o644)
}

// fileReader maps the errors of a file packet's reader to the package's.
type fileReader struct{ io.ReadCloser }

func (r fileReader) Read(b []byte) (int, error) {
	n, err := r.ReadCloser.Read(b)
	if errors.Is(err, pipeline.ErrCannotRead) {
		err = mapErr(err, "")
	}
	return n, err
}

// MaxFileData is the largest file packet Data reads into memory (64 MiB).
const MaxFileData = 64 << 20

func (pk *Packet) fileData() ([]byte, error) {
	if n := pk.Size(); n > MaxFileData {
		return nil, fmt.Errorf("%w: file packet of %d bytes: use Open or WriteDataToPath", ErrTooLarge, n)
	}
	r, err := pk.Open()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}
