// Package ring decides where data lives. Partition maps a (leaderboard,
// item) to one of P partitions; Place maps each partition to the nodes
// holding its replicas and names a preferred leader; Diff turns two
// placements into the moves between them. The meta leader commits
// placements, and any node can recompute one from the same committed input.
//
// ring is pure: no networking, no clocks, no randomness, no goroutines, no
// state beyond what its callers hand it, and it imports nothing of ours but
// proto. Its answers are part of the cluster's protocol, so they change only
// on purpose: golden tests pin them (see DESIGN.md).
package ring
