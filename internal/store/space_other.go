//go:build !unix

package store

// freeSpace is unknown here: the guard lets every write try.
var freeSpace func(dir string) (uint64, error)
