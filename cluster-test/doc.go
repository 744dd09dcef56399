// Package clustertest runs topkd as real processes (and, for the cluster
// release, containers) and injects faults: SIGKILL, restarts, pauses. Its
// checkers compare what the servers answer with what producers had
// acknowledged. It imports nothing of the server's internals.
package clustertest
