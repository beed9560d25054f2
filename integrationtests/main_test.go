package integrationtests

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/pipesnet/pipes/internal/testnet"
)

// TestMain runs the tests, or the writer of the SIGKILL test when the
// binary is started as one; it removes the pipes command the tests built.
func TestMain(m *testing.M) {
	if os.Getenv(writerEnv) != "" {
		os.Exit(runWriter())
	}
	dir, err := os.MkdirTemp("", "pipes-integrationtests-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	built.dir = dir
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		os.RemoveAll(dir)
		os.Exit(code)
	}))
}

// built is the pipes command, built on first use.
var built struct {
	dir  string // set by TestMain
	once sync.Once
	path string
	err  error
}

// pipesBinary returns the path of the pipes command built from this tree,
// building it the first time: with -race when the tests run with it.
func pipesBinary(t testing.TB) string {
	t.Helper()
	built.once.Do(func() {
		// go test puts the go command of its GOROOT first in PATH.
		goCmd, err := exec.LookPath("go")
		if err != nil {
			built.err = fmt.Errorf("no go command to build pipes: %w", err)
			return
		}
		path := filepath.Join(built.dir, "pipes")
		args := []string{"build", "-o", path}
		if testnet.RaceEnabled {
			args = append(args, "-race")
		}
		out, err := exec.Command(goCmd, append(args, "github.com/pipesnet/pipes/cmd/pipes")...).CombinedOutput()
		if err != nil {
			built.err = fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
			return
		}
		built.path = path
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.path
}

// pipesCmd prepares the pipes command with args, in an environment of
// this process's and env.
func pipesCmd(t testing.TB, env []string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(pipesBinary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	return cmd
}

// runPipes runs the command and returns its standard output; it fails the
// test on a non-zero exit.
func runPipes(t testing.TB, env []string, args ...string) string {
	t.Helper()
	out, err := tryCmd(pipesCmd(t, env, args...))
	if err != nil {
		t.Fatalf("pipes %s: %v\nstdout: %s", strings.Join(args, " "), err, out)
	}
	return out
}

// tryCmd runs cmd and returns its standard output, or an error with its
// standard error.
func tryCmd(cmd *exec.Cmd) (string, error) {
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%w: %s", err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}
