// Package integrationtests holds the tests that go beyond one process on
// loopback, and so stay out of the root package's API tests:
//
//   - the pipes command as real processes (daemons_test.go, kinds_test.go,
//     cli_test.go): TestMain's helper builds cmd/pipes once, with -race
//     when the tests run with it, and the tests start daemons of it, each
//     with its own data directory, and drive them through the CLI;
//   - durability under SIGKILL (durability_test.go): the test binary
//     re-executes itself as a writer and is killed mid-stream;
//   - NATs (nat_test.go, nat_impair_test.go): nodes of this process with
//     their sockets in network namespaces built by internal/netlab, behind
//     NATs of each kind, under loss, delay, partitions and address
//     changes. They need root, ip, nft and conntrack, and skip without.
//
// The package has test files only. The README's test command runs it
// with the rest (go test -race ./...); on its own:
//
//	go test -race -count=1 ./integrationtests/
//	go test -count=1 -run 'NAT|Punch|Netcheck' -v ./integrationtests/ # as root
//
// The helpers it shares with the root package's tests are in
// internal/testnet.
package integrationtests
