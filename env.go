package pipes

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
)

// Environment variables read by the platform (documented in the README).
const (
	EnvHome      = "PIPES_HOME"       // default data directory
	EnvPortStart = "PIPES_PORT_START" // first UDP port to try (default 7420)
	EnvPortRange = "PIPES_PORT_RANGE" // how many further ports to try (default 10)
	EnvListen    = "PIPES_LISTEN"     // listen host or host:port (default all interfaces)
	EnvDebug     = "PIPES_DEBUG"      // any non-empty value except 0/false: debug logging
)

const (
	defaultPortStart = 7420
	defaultPortRange = 10
)

// DefaultHome returns $PIPES_HOME, else ~/.pipes.
func DefaultHome() string {
	if h := os.Getenv(EnvHome); h != "" {
		return h
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".pipes")
	}
	return ".pipes"
}

func debugEnv() bool {
	v := os.Getenv(EnvDebug)
	return v != "" && v != "0" && v != "false"
}

func envInt(name string, def int) (int, error) {
	v := os.Getenv(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > 65535 {
		return 0, fmt.Errorf("pipes: %s=%q is not a port number", name, v)
	}
	return n, nil
}

// listenCandidates returns the addresses to try in order, from the
// environment: PIPES_LISTEN with a port is used alone; otherwise its host
// (default all interfaces) with each port of the range.
func listenCandidates() ([]string, error) {
	host := ""
	if l := os.Getenv(EnvListen); l != "" {
		if h, p, err := net.SplitHostPort(l); err == nil {
			if _, err := strconv.Atoi(p); err != nil {
				return nil, fmt.Errorf("pipes: %s=%q: bad port", EnvListen, l)
			}
			_ = h
			return []string{l}, nil
		}
		host = l
	}
	start, err := envInt(EnvPortStart, defaultPortStart)
	if err != nil {
		return nil, err
	}
	rng, err := envInt(EnvPortRange, defaultPortRange)
	if err != nil {
		return nil, err
	}
	var out []string
	for p := start; p <= start+rng && p <= 65535; p++ {
		out = append(out, net.JoinHostPort(host, strconv.Itoa(p)))
	}
	return out, nil
}
