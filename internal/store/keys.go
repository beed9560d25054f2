package store

// Key returns a new key made of the table tag followed by the parts, in
// order. See the package documentation for the keyspace convention.
func Key(table byte, parts ...[]byte) []byte {
	n := 1
	for _, p := range parts {
		n += len(p)
	}
	k := make([]byte, 0, n)
	k = append(k, table)
	for _, p := range parts {
		k = append(k, p...)
	}
	return k
}

// PrefixEnd returns the smallest key that is greater than every key
// starting with prefix, or nil if there is none (prefix is empty or all
// 0xff), meaning "no upper bound". It does not modify prefix.
func PrefixEnd(prefix []byte) []byte {
	for i := len(prefix) - 1; i >= 0; i-- {
		if prefix[i] != 0xff {
			end := make([]byte, i+1)
			copy(end, prefix)
			end[i]++
			return end
		}
	}
	return nil
}
