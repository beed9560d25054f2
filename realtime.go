package pipes

import (
	"errors"
	"fmt"

	"github.com/pipesnet/pipes/internal/mesh"
)

// realtimeErr maps the engine's datagram errors.
func realtimeErr(err error) error {
	var tl *mesh.DatagramTooLargeError
	if errors.As(err, &tl) {
		return &DatagramTooLargeError{Max: tl.Max}
	}
	return nil
}

// DatagramTooLargeError is returned by Put on a realtime pipeline for a
// packet larger than one datagram on the path to a receiver. Max is the
// largest data that fits now (QUIC probes the path, so it may grow). It
// matches ErrTooLarge with errors.Is.
type DatagramTooLargeError struct{ Max int }

func (e *DatagramTooLargeError) Error() string {
	return fmt.Sprintf("pipes: realtime packet larger than a datagram on the path (at most %d bytes now)", e.Max)
}

// Unwrap makes errors.Is(err, ErrTooLarge) true.
func (e *DatagramTooLargeError) Unwrap() error { return ErrTooLarge }
