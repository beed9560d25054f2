//go:build !linux

package netlab

import (
	"context"
	"errors"
	"os"
)

const platformOK = false

func doIn(string, func() error) error {
	return errors.New("netlab: network namespaces need Linux")
}

func lockPrefix(context.Context, string) (*os.File, error) {
	return nil, errors.New("netlab: network namespaces need Linux")
}
