// Package client is the Go client library of topkd: it ingests events with
// automatic batching and idempotent retries, and runs queries and admin calls
// against any node, speaking the Connect protocol with binary protobuf.
//
// Ingest. A Client has one producer identity, (producer_id, epoch), random
// unless given by WithProducer, and numbers every batch it sends with the next
// sequence. A batch whose outcome is unknown (Unavailable, DeadlineExceeded,
// ResourceExhausted, or a transport error after the request may have reached
// the server) is retried with the SAME sequence until the retry deadline, so
// the server counts it once and answers a retry with the original outcome.
// InvalidArgument, NotFound and other definite failures come back at once.
// Add and AddMany queue events per leaderboard and, once the partitions'
// leaders are known, per leader node; a queue is sent as a batch when it
// holds WithBatchSize events or its first event is WithBatchAge old, so every
// node receives requests of the batch size. Flush waits for everything
// queued so far.
//
// Routing. With discovery on (the default), the client learns each
// partition's leader with the members and splits a batch by partition
// (ring.Partition), sending the events a node leads straight to it under
// the batch's one sequence, so no node forwards them; a node that no longer
// leads forwards them as it would any batch. A batch with an event some
// node might refuse (over the limits the cluster publishes in its status)
// goes whole to one node, so it is refused whole. WithRouting(false) sends
// every batch whole.
//
// Queries and admin calls (TopK, Count, leaderboards, Status) return plain Go
// types. Read-only calls are retried and fail over across the addresses given
// to New; CreateLeaderboard and DropLeaderboard only fail over when the
// connection was refused, since a retry after an unknown outcome could
// answer AlreadyExists or NotFound for work that succeeded.
//
// Errors keep their Connect code: use connect.CodeOf(err) to tell
// InvalidArgument from NotFound from Unavailable.
//
// The client never imports the server: it depends only on the public API in
// proto/topk/v1 and on ring's partition function. It never invents a new sequence for a batch whose outcome is
// unknown, never retries a definite failure, and never leaves a goroutine
// running after Close.
package client
