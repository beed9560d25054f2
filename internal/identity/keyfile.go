package identity

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/pipesnet/pipes/internal/atomicfile"
)

// keyFileHeader is the first line of a key file. The second line is the
// 32-byte Ed25519 seed in standard, padded base64.
const keyFileHeader = "PIPES ED25519 PRIVATE KEY v1"

// maxKeyFileSize bounds what LoadKey reads; a key file is 74 bytes.
const maxKeyFileSize = 4 << 10

// SaveKey writes k's seed to path in the key file format (see the package
// documentation) with mode 0600, atomically: a temporary file in the same
// directory, fsync, rename. It creates the directory with mode 0700 if it
// is missing and replaces an existing file.
func SaveKey(path string, k *KeyPair) error {
	if err := k.check(); err != nil {
		return fmt.Errorf("identity: key file %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("identity: key file %s: %w", path, err)
	}
	content := keyFileHeader + "\n" + base64.StdEncoding.EncodeToString(k.Private.Seed()) + "\n"
	if err := atomicfile.Write(path, []byte(content), 0o600); err != nil {
		return fmt.Errorf("identity: key file: %w", err)
	}
	return nil
}

// LoadKey reads a key file written by SaveKey. It refuses a file that its
// group or others may read (mode & 0077 != 0), asking for chmod 600. Every
// error names the file.
func LoadKey(path string) (*KeyPair, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("identity: key file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("identity: key file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("identity: key file %s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("identity: key file %s is readable by others (mode %#o): run chmod 600 %s", path, perm, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("identity: key file %s: %w", path, err)
	}
	k, err := parseKeyFile(b)
	if err != nil {
		return nil, fmt.Errorf("identity: key file %s: %w", path, err)
	}
	return k, nil
}

// parseKeyFile decodes the content of a key file. It accepts CRLF line
// ends and a missing final newline.
func parseKeyFile(b []byte) (*KeyPair, error) {
	if len(b) == 0 {
		return nil, errors.New("the file is empty")
	}
	if len(b) > maxKeyFileSize {
		return nil, fmt.Errorf("not a Pipes key file (larger than %d bytes)", maxKeyFileSize)
	}
	text := strings.ReplaceAll(string(b), "\r\n", "\n")
	header, rest, _ := strings.Cut(text, "\n")
	if header != keyFileHeader {
		if strings.HasPrefix(keyFileHeader, header) && rest == "" {
			return nil, errors.New("truncated: the header line is incomplete and no key follows")
		}
		return nil, fmt.Errorf("not a Pipes key file: the first line is not %q", keyFileHeader)
	}
	line, extra, _ := strings.Cut(rest, "\n")
	if strings.TrimSpace(extra) != "" {
		return nil, errors.New("damaged: unexpected text after the key line")
	}
	if line == "" {
		return nil, errors.New("truncated: no key after the header line")
	}
	seed, err := base64.StdEncoding.Strict().DecodeString(line)
	if err != nil {
		return nil, fmt.Errorf("truncated or damaged: the key line is not base64: %w", err)
	}
	k, err := FromSeed(seed)
	if err != nil {
		return nil, fmt.Errorf("truncated or damaged: %w", err)
	}
	return k, nil
}
