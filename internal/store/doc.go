// Package store is the embedded database of a Pipes platform data
// directory: a Pebble v2 database in dir/db, guarded by an exclusive lock on
// dir/LOCK.pipes so that one Platform at a time, in this process or any
// other, has the directory open.
//
// # Keyspace
//
// The store is one ordered keyspace shared by every caller. Callers own
// prefixes: each kind of record (a "table") has a one-byte tag, allocated
// in tables.go (the one list, so that no two packages take the same byte)
// and used by the package that stores it, and every key of that table
// starts with the tag. What follows the tag is the record's id, made of fixed-size
// parts (32-byte ids, big-endian integers), so that a table's keys sort by
// id and any leading run of parts is itself a prefix that Scan can list:
//
//	Key(tNode, networkID[:], nodeID[:]) // one node of one network
//	Scan(Key(tNode, networkID[:]), fn)  // every node of that network
//
// Key builds such keys and PrefixEnd gives the exclusive upper bound of a
// prefix. Variable-length parts are safe only as the last part of a key,
// since nothing marks where they end.
//
// # Durability and concurrency
//
// Set, Delete and Batch are synced: when they return nil the change
// survives a crash of the process or the machine. A Batch applies all of
// its writes or none. A DB is safe for concurrent use; after Close every
// method returns ErrClosed (Close itself returns nil again).
package store
