//go:build !(linux && (amd64 || arm64))

package fsm

const hugeBytes = 2 << 20

// OffHeapBytes is 0 where records stay on the Go heap.
func OffHeapBytes() int64 { return 0 }

func hugeSlab(n uintptr) (uintptr, bool) { return 0, false }

func freeSlab(addr, n uintptr) {}

func wordsAt(addr uintptr, n int) []uint64 { return nil }
