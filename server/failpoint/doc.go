// Package failpoint lets crash and fault tests stop or fail a real topkd
// process at a named point in its code (etcd's gofail, reduced to what
// topkd needs).
//
// Points are compiled in only with the build tag "failpoint"; without it Hit
// is an empty function the compiler removes, so a release binary has no
// failure switch. With the tag, TOPKD_FAILPOINTS arms points:
//
//	TOPKD_FAILPOINTS="raftlog-commit=error@40,migrate-after-commit=kill"
//
// An action is "kill" (SIGKILL the process itself at the Nth hit) or "error"
// (Hit returns ErrInjected from the Nth hit on); N counts from 1 and
// defaults to 1.
// A running process also arms points by PUT /debug/failpoints on its
// --debug-addr (the same syntax in the body), so a test can arm them once
// its cluster has formed.
// It must never be armed in production: it exists for cluster-test/.
package failpoint
