//go:build !race

package pipes_test

// raceEnabled: the race detector slows heavy tests down several times.
const raceEnabled = false
