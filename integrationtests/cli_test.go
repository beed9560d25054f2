package integrationtests

import (
	"bytes"
	"strings"
	"testing"
)

// TestErrorsAreOneLineAndNonZero: the command reports an error on one line
// of standard error, and exits non-zero.
func TestErrorsAreOneLineAndNonZero(t *testing.T) {
	home := t.TempDir()
	cmd := pipesCmd(t, nil, "--home", home, "network", "set-secret", "nope")
	var errb bytes.Buffer
	cmd.Stderr = &errb
	err := cmd.Run()
	if err == nil {
		t.Fatal("exit 0 for an unknown network")
	}
	msg := strings.TrimSpace(errb.String())
	if strings.Count(msg, "\n") != 0 || !strings.HasPrefix(msg, "pipes: ") {
		t.Fatalf("error output not one line: %q", msg)
	}
}
