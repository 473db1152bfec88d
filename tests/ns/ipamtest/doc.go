// Package ipamtest holds esb-ipam's privileged integration tests: the
// plugin binary driven through libcni like a runtime drives it, concurrent
// and killed plugin processes, a randomized multi-process property test and
// the reference bridge plugin delegating to esb-ipam in test-made network
// namespaces. Run them as root (CI=1 makes a missing privilege a failure):
//
//	CI=1 go test -race -count=1 -v ./tests/ns/ipamtest/
//
// The non-test code of the package is the event log shared by the
// property test and its stress helper (./stress).
package ipamtest
