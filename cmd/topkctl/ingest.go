package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/topkd/topkd/client"
)

type ingestFlags struct {
	mapping
	leaderboard string
	batch       int
	producers   int
	skipInvalid bool
	progress    bool
	perLeader   bool
}

func (a *app) ingestCmd() *cobra.Command {
	var f ingestFlags
	cmd := &cobra.Command{
		Use:   "ingest [FILE]",
		Short: "Send events from a CSV or NDJSON file (or stdin), gzip or not",
		Long: "ingest reads records from FILE (or stdin when FILE is absent or -), maps columns to events and sends\n" +
			"them in batches from parallel producers, each retrying with its own idempotent sequence numbers.\n\n" +
			"Example (flights): topkctl ingest flights.csv.gz --item-col origin+destination --item-sep - --time-col time",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := ""
			if len(args) == 1 {
				path = args[0]
			}
			return a.runIngest(cmd.Context(), path, f)
		},
	}
	f.mapping.register(cmd)
	fl := cmd.Flags()
	fl.StringVar(&f.leaderboard, "leaderboard", "default", "leaderboard to count into")
	fl.IntVar(&f.batch, "batch", 1000, "events per batch")
	fl.BoolVar(&f.perLeader, "batch-per-leader", false, perLeaderUsage)
	fl.IntVar(&f.producers, "producers", 2, "parallel producers (each has its own producer id)")
	fl.BoolVar(&f.skipInvalid, "skip-invalid", false, "skip records that cannot be mapped instead of stopping")
	fl.BoolVar(&f.progress, "progress", true, "show a progress bar on stderr")
	return cmd
}

// ingestStats sums the answers of the batches sent.
type ingestStats struct {
	mu         sync.Mutex
	sent       uint64 // events in batches answered
	batches    uint64
	accepted   uint64
	duplicates uint64 // batches answered as already applied
	rejected   uint64
	retried    uint64 // batches that needed more than one attempt
	late       map[string]uint64
	latencies  []time.Duration
}

func (s *ingestStats) add(events int, r client.IngestResult, latency time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sent += uint64(events)
	s.batches++
	s.accepted += r.Accepted
	s.rejected += r.Rejected
	if r.Duplicate {
		s.duplicates++
	}
	if r.Attempts > 1 {
		s.retried++
	}
	for w, n := range r.LateDropped {
		if s.late == nil {
			s.late = map[string]uint64{}
		}
		s.late[w] += n
	}
	s.latencies = append(s.latencies, latency)
}

func (s *ingestStats) lateString() string {
	if len(s.late) == 0 {
		return "0"
	}
	var parts []string
	for _, w := range slices.Sorted(maps.Keys(s.late)) {
		parts = append(parts, fmt.Sprintf("%s:%d", w, s.late[w]))
	}
	return strings.Join(parts, ",")
}

// sendMode is how producers send what they read.
type sendMode struct {
	// perLeader queues events in the client's Add queue, which cuts
	// batches of size events per partition leader; else every batch read
	// is sent as it is (and split by leader when routing is on).
	perLeader bool
	size      int
}

// perLeaderUsage documents --batch-per-leader for ingest and bench.
const perLeaderUsage = "queue events in the client (Add), which sends each partition leader batches of --batch events; " +
	"without it each batch of --batch is sent as read, split across the leaders, so with N nodes each gets about 1/N of it"

// produce runs n producers, each with its own client, sending the batches
// from the channel until it closes; it returns the first error.
func (a *app) produce(ctx context.Context, n int, lb string, mode sendMode, batches <-chan []client.Event, stats *ingestStats,
	onBatch func(events int)) error {
	var (
		errOnce  sync.Once
		firstErr error
		failed   atomic.Bool
	)
	// The first failure stops every producer: each batch has had the
	// client's retries (a refusing node's Retry-After included) by then.
	fail := func(err error) { errOnce.Do(func() { firstErr = err; failed.Store(true) }) }
	var opts []client.Option
	if mode.perLeader {
		opts = append(opts, client.WithBatchSize(mode.size), client.WithBatchHandler(func(r client.BatchResult) {
			if r.Err != nil {
				fail(r.Err)
				return
			}
			stats.add(r.Events, r.Result, r.Latency)
			if onBatch != nil {
				onBatch(r.Events)
			}
		}))
	}
	clients := make([]*client.Client, n)
	for i := range clients {
		c, err := a.client(opts...)
		if err != nil {
			for _, c := range clients[:i] {
				c.Close(context.Background())
			}
			return err
		}
		clients[i] = c
	}
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range batches {
				if failed.Load() {
					continue // drain, so the feeder never blocks
				}
				if mode.perLeader {
					if err := c.AddMany(ctx, lb, b); err != nil {
						fail(err)
					}
					continue
				}
				start := time.Now()
				res, err := c.IngestBatch(ctx, lb, b)
				if err != nil {
					fail(err)
					continue
				}
				stats.add(len(b), res, time.Since(start))
				if onBatch != nil {
					onBatch(len(b))
				}
			}
			if mode.perLeader {
				if err := c.Flush(ctx); err != nil {
					fail(err)
				}
			}
		}()
	}
	wg.Wait()
	for _, c := range clients {
		c.Close(context.Background())
	}
	return firstErr
}

func (a *app) runIngest(ctx context.Context, path string, f ingestFlags) error {
	if f.batch <= 0 || f.producers <= 0 {
		return fmt.Errorf("--batch and --producers must be positive")
	}
	in, err := openInput(path, a.stdin)
	if err != nil {
		return err
	}
	defer in.close()
	src, err := newSource(in, path, f.mapping)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var bar *progressbar.ProgressBar
	stats := &ingestStats{}
	if f.progress {
		if isTerminal(a.stderr) {
			bar = newBar(a.stderr, in.size, "ingest", in.size > 0)
		} else {
			// A redrawn bar is noise in a log file: a line every 5 s instead.
			defer progressLines(a.stderr, stats, 5*time.Second)()
		}
	}
	batches := make(chan []client.Event) // unbuffered: producers pull, the reader stays one batch ahead
	var readErr error
	var skipped uint64
	var rwg sync.WaitGroup
	rwg.Add(1)
	go func() {
		defer rwg.Done()
		defer close(batches)
		batch := make([]client.Event, 0, f.batch)
		send := func() bool {
			select {
			case batches <- batch:
				batch = make([]client.Event, 0, f.batch)
				if bar != nil && in.size > 0 {
					_ = bar.Set64(in.read.Load())
				}
				return true
			case <-ctx.Done():
				return false
			}
		}
		for {
			e, err := src.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			var re *recordError
			if err != nil && f.skipInvalid && errors.As(err, &re) {
				skipped++
				continue
			}
			if err != nil {
				readErr = fmt.Errorf("%s: %w", in.name, err)
				cancel()
				return
			}
			batch = append(batch, e)
			if len(batch) == f.batch && !send() {
				return
			}
		}
		if len(batch) > 0 {
			send()
		}
	}()

	start := time.Now()
	var onBatch func(int)
	if bar != nil && in.size <= 0 {
		onBatch = func(n int) { _ = bar.Add(n) }
	}
	perr := a.produce(ctx, f.producers, f.leaderboard, sendMode{f.perLeader, f.batch}, batches, stats, onBatch)
	if perr != nil {
		cancel()
	}
	rwg.Wait()
	elapsed := time.Since(start)
	if bar != nil {
		_ = bar.Finish()
		fmt.Fprintln(a.stderr)
	}
	rate := float64(stats.sent) / max(elapsed.Seconds(), 1e-9)
	fmt.Fprintf(a.stdout, "ingest %s into %s: sent %d events in %d batches, accepted %d, duplicates %d, late %s, rejected %d",
		in.name, f.leaderboard, stats.sent, stats.batches, stats.accepted, stats.duplicates, stats.lateString(), stats.rejected)
	if skipped > 0 {
		fmt.Fprintf(a.stdout, ", skipped %d invalid records", skipped)
	}
	if stats.retried > 0 {
		fmt.Fprintf(a.stdout, ", retried %d batches", stats.retried)
	}
	fmt.Fprintf(a.stdout, ", elapsed %v, %.0f events/s\n", elapsed.Round(time.Millisecond), rate)
	switch {
	case readErr != nil:
		return readErr
	case perr != nil:
		return perr
	}
	return ctx.Err()
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// progressLines prints the acknowledged events every period until the
// returned stop is called.
func progressLines(w io.Writer, stats *ingestStats, period time.Duration) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(finished)
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				stats.mu.Lock()
				sent, batches := stats.sent, stats.batches
				stats.mu.Unlock()
				el := time.Since(start)
				fmt.Fprintf(w, "ingest: %d events in %d batches acknowledged after %v (%.0f events/s)\n",
					sent, batches, el.Round(time.Second), float64(sent)/el.Seconds())
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

// newBar is a progress bar up to size (bytes or events), or a counter of
// events when the size is unknown (-1).
func newBar(w io.Writer, size int64, desc string, inBytes bool) *progressbar.ProgressBar {
	opts := []progressbar.Option{
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionThrottle(100 * time.Millisecond),
		progressbar.OptionSetWidth(30),
		progressbar.OptionShowElapsedTimeOnFinish(),
	}
	switch {
	case size > 0 && inBytes:
		opts = append(opts, progressbar.OptionShowBytes(true))
		return progressbar.NewOptions64(size, opts...)
	case size > 0:
		opts = append(opts, progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("events"))
		return progressbar.NewOptions64(size, opts...)
	}
	opts = append(opts, progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("events"))
	return progressbar.NewOptions64(-1, opts...)
}
