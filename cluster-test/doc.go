// Package clustertest runs topkd as real processes and containers and
// injects faults: SIGKILL, restarts, pauses, isolation, partial partitions.
// Its checkers (package history) compare what the servers answer with what
// producers had acknowledged; package testbed runs the clusters. It imports
// nothing of the server's internals. README.md lists the scenarios and
// their figures.
package clustertest
