package fsm

// tuning holds the knobs of the state machine's internals. Each FSM carries
// its own (Options.tune), shared by its leaderboards, so a test that turns
// one builds an FSM with it instead of changing package state, and tests
// can run in parallel. Replicas must agree on every knob, like on code:
// production uses defaultTuning. offMin, the off-heap allocator's
// threshold, is process-wide by nature (one allocator per process): it
// stays a package variable, changed only by TestMain.
type tuning struct {
	// unstaged applies without resolve: only the side-by-side benchmark.
	unstaged bool
	// Switches of BenchmarkWithout, each turning one optimisation off:
	// the all-time journal (counts written by id, prefetched in resolve),
	// expiry's record prefetch, the hand-written ingest decoder
	// (protobuf's instead).
	noJournal, noExpiryPrefetch, protoIngest bool
	// trackedMin, when >= 0, overrides the least number of outsiders kept
	// in classes (window.keepTracked); tests set it small so floors move.
	trackedMin int
	// foldMin is the fewest all-time journal entries worth a fold; above
	// it a fold waits for an eighth of the ids, so a fold writes most lines
	// of the chunks it visits.
	foldMin int
	// maxProducers bounds a partition's deduplication rows (about 64 MiB of
	// one-shot rows): a client that makes a new producer id per request
	// would otherwise keep a row per request for the whole TTL.
	maxProducers int
}

// defaultTuning is what Options without tune gets. TestMain changes it
// once, before any test runs.
var defaultTuning = tuning{trackedMin: -1, foldMin: 4096, maxProducers: 256 << 10}
