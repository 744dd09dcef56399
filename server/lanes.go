package server

import (
	"strconv"
	"sync"
)

// AssignedProducerPrefix starts the producer ids a node assigns to ingest
// requests that carry none; clients may not use it.
const AssignedProducerPrefix = "~"

// producerLanes assign a producer id, epoch and sequence to each ingest
// request that carries none, so that the node's own retries of its parts
// (across forwarding and leader changes, after an unknown outcome) count
// each part once. A lane is one producer id; it serves one request at a
// time, so its sequences reach every partition in order and the dedupe
// window never sees them out of order. Lanes are made as concurrency
// demands and reused, so each partition's dedupe table holds at most one
// row per lane: the peak number of concurrent id-less requests on a node.
type producerLanes struct {
	prefix string // "~<node>/"
	epoch  uint64 // this process's start: a restart outdates the rows of the one before
	mu     sync.Mutex
	free   []*lane
	made   int
}

type lane struct {
	id  string
	seq uint64
}

func newProducerLanes(nodeID string, epoch uint64) *producerLanes {
	return &producerLanes{prefix: AssignedProducerPrefix + nodeID + "/", epoch: epoch}
}

// get takes a free lane, or makes one, and advances its sequence.
func (l *producerLanes) get() *lane {
	l.mu.Lock()
	var ln *lane
	if n := len(l.free); n > 0 {
		ln, l.free = l.free[n-1], l.free[:n-1]
	} else {
		ln = &lane{id: l.prefix + strconv.Itoa(l.made)}
		l.made++
	}
	l.mu.Unlock()
	ln.seq++
	return ln
}

// put returns a lane once its request is done.
func (l *producerLanes) put(ln *lane) {
	l.mu.Lock()
	l.free = append(l.free, ln)
	l.mu.Unlock()
}
