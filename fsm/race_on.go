//go:build race

package fsm

// raceEnabled keeps the flat arrays on the Go heap under -race: the race
// detector does not watch memory outside the heap.
const raceEnabled = true
