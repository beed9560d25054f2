package identity

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/pipesnet/pipes/internal/atomicfile"
)

// keyFileHeader is the first line of a key file. The second line is the
// 32-byte Ed25519 seed in standard base64.
const keyFileHeader = "PIPES ED25519 PRIVATE KEY v1"

// SaveKey writes k's seed to path with mode 0600, atomically (temporary
// file, fsync, rename), creating the directory with mode 0700 if needed.
func SaveKey(path string, k *KeyPair) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("identity: key file %s: %w", path, err)
	}
	content := keyFileHeader + "\n" + base64.StdEncoding.EncodeToString(k.Private.Seed()) + "\n"
	if err := atomicfile.Write(path, []byte(content), 0o600); err != nil {
		return fmt.Errorf("identity: key file: %w", err)
	}
	return nil
}

// LoadKey reads a key file written by SaveKey. It refuses a file that group
// or others may read.
func LoadKey(path string) (*KeyPair, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("identity: key file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("identity: key file %s is readable by others (mode %v): run chmod 600 %s", path, st.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("identity: key file: %w", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) != 2 || lines[0] != keyFileHeader {
		return nil, fmt.Errorf("identity: key file %s: not a Pipes key file (truncated or damaged?)", path)
	}
	seed, err := base64.StdEncoding.DecodeString(lines[1])
	if err != nil {
		return nil, fmt.Errorf("identity: key file %s: damaged: %v", path, err)
	}
	k, err := FromSeed(seed)
	if err != nil {
		return nil, fmt.Errorf("identity: key file %s: %w", path, err)
	}
	return k, nil
}
