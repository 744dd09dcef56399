// Package sketch holds the approximate counting structures behind topkd's
// approximate leaderboard modes: a mergeable Space-Saving summary, a linear
// Count-Min sketch, a Count-Min sketch with a heap of top-k candidates, and
// the merge of per-partition answers (Result) with deterministic error bounds.
//
// Every answer carries bounds that hold for every input, not just with high
// probability: Count is an upper bound on an item's true count, Count-Err a
// lower bound, and Rest or Floor or Bound an upper bound on every item that
// is not listed. Only Count-Min's accuracy (not its soundness) is
// probabilistic, over the choice of seed.
//
// The structures are replicated state of the FSM, so the package never reads
// the clock, never uses randomness that is not an explicit seed parameter, and
// never lets Go map iteration order reach an output, a snapshot or a decision:
// every ranking uses one total order (count desc, then item asc), so a
// structure rebuilt from its canonical snapshot behaves exactly like the
// original. It starts no goroutines and is not safe for concurrent mutation.
// Restore functions validate their input and return errors; they never panic.
//
// See DESIGN.md for the choices and their costs.
package sketch
