package files

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
	"github.com/klauspost/reedsolomon"

	"github.com/pipesnet/pipes/internal/ids"
)

// A shard is a file of the service whose content is a header and the
// shard's bytes:
//
//	file id (32) | index (2) | data (2) | parity (2) | shard bytes
//
// The header makes every shard's content, hence its id, distinct (the
// data shards of a file of zeros would otherwise be one file, on one
// node), and says what the shard is.
const shardHeader = 32 + 2 + 2 + 2

// compressSample is how much of a file is compressed to decide whether
// compressing it pays; it pays when the sample shrinks below
// compressRatio of its size.
const (
	compressSample = 1 << 20
	compressRatio  = 0.9
)

func shardHead(file ids.Content, index, data, parity int) []byte {
	b := append(make([]byte, 0, shardHeader), file[:]...)
	b = binary.BigEndian.AppendUint16(b, uint16(index))
	b = binary.BigEndian.AppendUint16(b, uint16(data))
	return binary.BigEndian.AppendUint16(b, uint16(parity))
}

// shardSizeOf is the size of each shard of payload bytes cut into data
// shards.
func shardSizeOf(payload int64, data int) int64 {
	return (payload + int64(data) - 1) / int64(data)
}

// coder returns the streaming Reed-Solomon coder of data+parity shards,
// whose working memory (one block of each shard) stays under 32 MiB.
func coder(data, parity int) (reedsolomon.StreamEncoder, error) {
	bs := (32 << 20) / (data + parity)
	bs = max(64<<10, min(4<<20, bs)) &^ 63
	return reedsolomon.NewStream(data, parity, reedsolomon.WithStreamBlockSize(bs))
}

// pays reports whether compressing sample with zstd shrinks it enough.
func pays(sample []byte) bool {
	if len(sample) == 0 {
		return false
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		return false
	}
	defer enc.Close()
	out := enc.EncodeAll(sample, make([]byte, 0, len(sample)))
	return float64(len(out)) < compressRatio*float64(len(sample))
}

// compressTo writes r compressed with zstd to the scratch file name and
// returns its size.
func compressTo(sc *scratch, name string, r io.Reader) (int64, error) {
	f, err := sc.create(name)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	enc, err := zstd.NewWriter(f, zstd.WithEncoderConcurrency(1))
	if err != nil {
		return 0, err
	}
	if _, err := io.Copy(enc, r); err != nil {
		enc.Close()
		return 0, err
	}
	if err := enc.Close(); err != nil {
		return 0, err
	}
	if err := f.Sync(); err != nil {
		return 0, err
	}
	return f.n, nil
}

// decompressTo writes r decompressed to w.
func decompressTo(w io.Writer, r io.Reader) error {
	dec, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(64<<20))
	if err != nil {
		return err
	}
	defer dec.Close()
	_, err = io.Copy(w, dec)
	return err
}

// cutShards writes the data+parity shards of the payload src (size
// bytes) of file to scratch files, each beginning with its header, and
// returns their names.
func cutShards(sc *scratch, file ids.Content, data, parity int, src io.Reader, size int64) ([]string, error) {
	n := data + parity
	paths := make([]string, n)
	files := make([]*scratchFile, n)
	defer func() {
		for _, f := range files {
			if f != nil {
				f.Close()
			}
		}
	}()
	for i := range n {
		paths[i] = fmt.Sprintf("shard%d", i)
		f, err := sc.create(paths[i])
		if err != nil {
			return nil, err
		}
		files[i] = f
		if _, err := f.Write(shardHead(file, i, data, parity)); err != nil {
			return nil, err
		}
	}
	if size > 0 {
		enc, err := coder(data, parity)
		if err != nil {
			return nil, err
		}
		dst := make([]io.Writer, data)
		for i := range dst {
			dst[i] = files[i]
		}
		if err := enc.Split(src, dst, size); err != nil {
			return nil, fmt.Errorf("splitting: %w", err)
		}
		if parity > 0 {
			in := make([]io.Reader, data)
			for i := range in {
				f, err := sc.open(paths[i])
				if err != nil {
					return nil, err
				}
				defer f.Close()
				if _, err := f.Seek(shardHeader, io.SeekStart); err != nil {
					return nil, err
				}
				in[i] = f
			}
			out := make([]io.Writer, parity)
			for i := range out {
				out[i] = files[data+i]
			}
			if err := enc.Encode(in, out); err != nil {
				return nil, fmt.Errorf("encoding: %w", err)
			}
		}
	}
	for _, f := range files {
		if err := f.Sync(); err != nil {
			return nil, err
		}
	}
	return paths, nil
}

// checkHead reads a shard's header from r and checks it is shard index
// of file's archive of data+parity shards.
func checkHead(r io.Reader, file ids.Content, index, data, parity int) error {
	var h [shardHeader]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return err
	}
	if !bytes.Equal(h[:], shardHead(file, index, data, parity)) {
		return fmt.Errorf("%w: shard %d has another header", ErrBadData, index)
	}
	return nil
}
