package files

import (
	"context"
	"errors"

	"github.com/pipesnet/pipes/internal/ids"
)

// Archive spreads an erasure-coded archive of file id over distinct
// nodes: data+parity shards, any data of which restore it.
func (s *Service) Archive(ctx context.Context, id ids.Content, data, parity int) error {
	return errors.New("files: archives are not built yet")
}
