package client

import (
	"crypto/tls"
	"net/http"
	"strings"
	"time"
)

// Defaults of a Client.
const (
	DefaultBatchSize      = 1000
	DefaultBatchAge       = 5 * time.Millisecond
	DefaultMaxInFlight    = 4
	DefaultRetryTimeout   = 30 * time.Second
	DefaultAttemptTimeout = 10 * time.Second
	DefaultMinBackoff     = 10 * time.Millisecond
	DefaultMaxBackoff     = time.Second
)

// Option configures a Client.
type Option func(*options)

type options struct {
	httpClient     *http.Client
	producerID     string
	epoch          uint64
	batchSize      int
	batchAge       time.Duration
	maxInFlight    int
	retryTimeout   time.Duration
	attemptTimeout time.Duration
	minBackoff     time.Duration
	maxBackoff     time.Duration
	onBatch        func(BatchResult)
	discovery      time.Duration // 0: off
	noRouting      bool
	tls            *tls.Config
	token          string
	refusedTimeout time.Duration // 0: retryTimeout alone
}

func defaultOptions() options {
	return options{
		batchSize:      DefaultBatchSize,
		batchAge:       DefaultBatchAge,
		maxInFlight:    DefaultMaxInFlight,
		retryTimeout:   DefaultRetryTimeout,
		attemptTimeout: DefaultAttemptTimeout,
		minBackoff:     DefaultMinBackoff,
		maxBackoff:     DefaultMaxBackoff,
		discovery:      DefaultDiscoveryInterval,
	}
}

// WithHTTPClient sends requests through hc instead of the client's own
// transport. The caller owns hc: Close does not close its connections.
func WithHTTPClient(hc *http.Client) Option {
	return func(o *options) { o.httpClient = hc }
}

// WithTLS connects over TLS with cfg (LoadTLS reads one from files);
// addresses without a scheme then mean https. Ignored with WithHTTPClient:
// configure that client's transport instead.
func WithTLS(cfg *tls.Config) Option {
	return func(o *options) { o.tls = cfg }
}

// WithToken sends a bearer token with every request. The client never
// logs it or puts it in an error.
func WithToken(token string) Option {
	return func(o *options) { o.token = strings.TrimSpace(token) }
}

// WithProducer sets the producer identity instead of a random id and the
// creation time as epoch. A producer that restarts with the same id must use
// a higher epoch: the server fences batches of older epochs.
func WithProducer(id string, epoch uint64) Option {
	return func(o *options) { o.producerID, o.epoch = id, epoch }
}

// WithBatchSize sets how many events Add collects before sending a batch
// (default 1000).
func WithBatchSize(n int) Option {
	return func(o *options) {
		if n > 0 {
			o.batchSize = n
		}
	}
}

// WithBatchAge sets how long the first queued event may wait before its
// batch is sent (default 5 ms).
func WithBatchAge(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.batchAge = d
		}
	}
}

// WithMaxInFlight bounds the batches Add has sent and not yet had answered,
// per node that leads partitions; Add blocks while the bound is reached
// (default 4).
func WithMaxInFlight(n int) Option {
	return func(o *options) {
		if n > 0 {
			o.maxInFlight = n
		}
	}
}

// WithRetryTimeout bounds how long one call keeps retrying, attempts and
// backoff included (default 30 s). A shorter context deadline wins.
func WithRetryTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.retryTimeout = d
		}
	}
}

// WithRefusedTimeout gives up on a call sooner when every attempt so far
// found no node listening (connection refused) for d: a command-line tool
// pointed at a node that is not running says so in seconds. By default
// such a call retries for the whole retry timeout, as for a node
// restarting.
func WithRefusedTimeout(d time.Duration) Option {
	return func(o *options) { o.refusedTimeout = max(d, 0) }
}

// WithAttemptTimeout bounds one attempt of a call (default 10 s); an attempt
// that times out is retried like any unknown outcome.
func WithAttemptTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.attemptTimeout = d
		}
	}
}

// WithBackoff sets the exponential backoff between retries (with jitter)
// when the server gives no retry hint (defaults 10 ms and 1 s).
func WithBackoff(minDelay, maxDelay time.Duration) Option {
	return func(o *options) {
		if minDelay > 0 {
			o.minBackoff = minDelay
		}
		if maxDelay >= o.minBackoff {
			o.maxBackoff = maxDelay
		}
	}
}

// WithBatchHandler calls f after every batch sent by Add, AddMany or Flush
// has its final answer (success or the error after retries). f runs on the
// batch's goroutine and must not block for long.
func WithBatchHandler(f func(BatchResult)) Option {
	return func(o *options) { o.onBatch = f }
}
