package blob

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// ImportOption is an option of Import.
type ImportOption func(*importOptions)

type importOptions struct {
	nonce *[16]byte
}

// WithNonce makes the manifest's nonce n instead of random bytes, so that
// the root depends on the content alone (see Import). The nonce is only
// carried (the at-rest encryption uses a random data key per blob file
// whatever the nonce), so a fixed one weakens nothing of the store.
func WithNonce(n [16]byte) ImportOption {
	return func(o *importOptions) { o.nonce = &n }
}

// fill writes into the installed blob of b's root the chunks it lacks,
// reading them from b, the temporary file of an import of the same
// content (still open, not installed).
func (s *Store) fill(b *blob) error {
	missing, err := s.Missing(b.root)
	if err != nil {
		return err
	}
	for _, i := range missing {
		c, err := b.read(i)
		if err != nil {
			return err
		}
		if err := s.WriteChunk(b.root, i, c); err != nil {
			return err
		}
	}
	return nil
}

// ErrChanged: a file's size changed while it was imported.
var ErrChanged = errors.New("blob: the file changed while it was imported")

// sizeCheck reads a file of a known size and fails, at its end, if the
// file grew or shrank meanwhile: a read that comes short of size is a
// shrink, and the size reported by Stat once all bytes are read must
// still be size.
type sizeCheck struct {
	f    *os.File
	size int64
	read int64
}

func (c *sizeCheck) Read(p []byte) (int, error) {
	n, err := c.f.Read(p)
	c.read += int64(n)
	if err == io.EOF && c.read < c.size {
		return n, fmt.Errorf("%w: %d bytes read of %d", ErrChanged, c.read, c.size)
	}
	if err == nil && c.read == c.size {
		fi, serr := c.f.Stat()
		// The last bytes are withheld on failure: io.ReadFull would
		// drop an error that comes with them.
		if serr != nil {
			return 0, serr
		}
		if fi.Size() != c.size {
			return 0, fmt.Errorf("%w: size now %d, was %d", ErrChanged, fi.Size(), c.size)
		}
	}
	return n, err
}
