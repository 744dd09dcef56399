package ring

import "github.com/cespare/xxhash/v2"

// Partition maps a (leaderboard, item) to one of p partitions:
// xxhash64(leaderboard, 0x00, item) mod p. Every count of an item lives in
// exactly one partition, so per-partition top-k lists merge exactly. The
// function is part of the on-disk format and must never change.
func Partition(leaderboard, item string, p int) int {
	var h xxhash.Digest // on the stack: this runs once per ingested event
	h.Reset()
	_, _ = h.WriteString(leaderboard)
	_, _ = h.Write([]byte{0})
	_, _ = h.WriteString(item)
	return int(h.Sum64() % uint64(p))
}
