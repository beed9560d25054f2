package identity

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKeyFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	path := filepath.Join(dir, "k.key")
	k := mustKey(t)
	if err := SaveKey(path, k); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", st.Mode().Perm())
	}
	if dst, _ := os.Stat(dir); dst.Mode().Perm() != 0o700 {
		t.Fatalf("key dir mode %v, want 0700", dst.Mode().Perm())
	}
	b, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(b), keyFileHeader+"\n") || len(b) != len(keyFileHeader)+1+44+1 {
		t.Fatalf("key file content %q", b)
	}
	got, err := LoadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Private, k.Private) || !bytes.Equal(got.Public, k.Public) {
		t.Fatal("loaded a different key")
	}
	// SaveKey replaces a key and leaves no temporary file.
	k2 := mustKey(t)
	if err := SaveKey(path, k2); err != nil {
		t.Fatal(err)
	}
	if got, _ := LoadKey(path); got == nil || !bytes.Equal(got.Public, k2.Public) {
		t.Fatal("SaveKey did not replace the key")
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".tmp-*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
	if err := SaveKey(filepath.Join(dir, "nil.key"), nil); err == nil {
		t.Fatal("saved a nil key")
	}
}

func TestLoadKeyRefusesReadableFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k.key")
	if err := SaveKey(path, mustKey(t)); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err := LoadKey(path)
		if err == nil || !strings.Contains(err.Error(), "chmod 600") || !strings.Contains(err.Error(), path) {
			t.Fatalf("mode %#o: %v", mode, err)
		}
	}
	if err := os.Chmod(path, 0o400); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKey(path); err != nil {
		t.Fatalf("mode 0400: %v", err)
	}
}

func TestLoadKeyDamaged(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "k.key")
	if err := SaveKey(path, mustKey(t)); err != nil {
		t.Fatal(err)
	}
	good, _ := os.ReadFile(path)
	check := func(what string, content []byte, want string) {
		t.Helper()
		if err := os.WriteFile(path, content, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := LoadKey(path)
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: %v (want it to name the file and say %q)", what, err, want)
		}
	}
	// Every truncation is refused; only the final newline is optional.
	for n := 0; n < len(good)-1; n++ {
		want := "truncated"
		if n == 0 {
			want = "empty"
		}
		check(fmt.Sprintf("truncated to %d bytes", n), good[:n], want)
	}
	check("other header", []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n"), "not a Pipes key file")
	check("bad base64", append([]byte(keyFileHeader+"\n"), bytes.Repeat([]byte("!"), 44)...), "not base64")
	check("trailing text", append(bytes.Clone(good), "more\n"...), "unexpected text")
	check("huge", bytes.Repeat([]byte("a"), maxKeyFileSize+10), "larger than")

	// CRLF line ends and a missing final newline are accepted.
	crlf := strings.ReplaceAll(string(good), "\n", "\r\n")
	for _, content := range [][]byte{good[:len(good)-1], []byte(crlf)} {
		os.WriteFile(path, content, 0o600)
		if _, err := LoadKey(path); err != nil {
			t.Fatalf("%q: %v", content, err)
		}
	}

	_, err := LoadKey(filepath.Join(dir, "missing.key"))
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "missing.key") {
		t.Fatalf("missing file: %v", err)
	}
	sub := filepath.Join(dir, "sub")
	os.Mkdir(sub, 0o700)
	if _, err := LoadKey(sub); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("directory: %v", err)
	}
}
