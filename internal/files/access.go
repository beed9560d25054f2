package files

import "errors"

// errReaders: files restricted to readers are not built yet.
var errReaders = errors.New("files: files restricted to readers are not supported yet")
