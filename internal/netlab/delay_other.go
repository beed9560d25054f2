//go:build !linux

package netlab

import (
	"errors"
	"time"
)

type delayQueue struct{}

// SetDelay holds every IPv4 packet to or from node's link to the public
// segment for d, in each direction. It needs Linux.
func (l *Lab) SetDelay(node Node, d time.Duration) error {
	return errors.New("netlab: delay needs Linux")
}

func (l *Lab) applyDelays() error { return nil }

func (l *Lab) closeDelays() {}
