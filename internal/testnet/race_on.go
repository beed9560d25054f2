//go:build race

package testnet

// RaceEnabled says whether the race detector is on: it slows heavy tests
// down several times, and integrationtests builds the pipes command with
// it when the tests have it.
const RaceEnabled = true
