//go:build !linux

package netlab

import "errors"

const platformOK = false

func doIn(string, func() error) error {
	return errors.New("netlab: network namespaces need Linux")
}
