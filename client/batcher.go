package client

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"time"
)

// batcher collects the events queued for one leaderboard and cuts them into
// batches by size (in add) or by age (in loop).
type batcher struct {
	c   *Client
	lb  string
	mu  sync.Mutex
	buf []Event
	// gen numbers the batch being collected; it changes whenever buf goes
	// from empty to non-empty, so a timer armed for an older batch is void.
	gen     uint64
	started time.Time
	closed  bool
	kick    chan struct{} // size 1: coalesces "a new batch started" signals for loop
}

// flight is one batch sent and not yet finally answered.
type flight struct {
	done chan struct{}
	err  error // the batch's final error; read after done is closed
}

// Add queues one event for leaderboard ("" means "default"). It blocks only
// while WithMaxInFlight batches are unanswered. Errors of the batch come
// back from the next Flush or Close, or through WithBatchHandler.
func (c *Client) Add(ctx context.Context, leaderboard string, e Event) error {
	return c.AddMany(ctx, leaderboard, []Event{e})
}

// AddMany queues events for leaderboard; see Add. The events are copied.
func (c *Client) AddMany(ctx context.Context, leaderboard string, events []Event) error {
	if len(events) == 0 {
		return nil
	}
	b, err := c.batcher(leaderboard)
	if err != nil {
		return err
	}
	if err := c.waitCapacity(ctx); err != nil {
		return fmt.Errorf("add to %q: %w", lbName(leaderboard), err)
	}
	return b.add(events)
}

// Flush sends every queued event now and waits until every batch sent so far
// has its final answer. It returns the first error of the batches it waited
// for (saying how many more failed), else the first error of a batch that
// failed before any Flush waited for it, or ctx's error. Concurrent Flushes
// each report the failures of the batches they waited for.
func (c *Client) Flush(ctx context.Context) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	bs := make([]*batcher, 0, len(c.batchers))
	for _, b := range c.batchers {
		bs = append(bs, b)
	}
	c.mu.Unlock()
	return c.flush(ctx, bs)
}

func (c *Client) flush(ctx context.Context, bs []*batcher) error {
	for _, b := range bs {
		b.mu.Lock()
		b.cutLocked(len(b.buf))
		b.mu.Unlock()
	}
	c.fmu.Lock()
	wait := make([]*flight, 0, len(c.flights))
	for f := range c.flights {
		wait = append(wait, f)
	}
	c.fmu.Unlock()
	var first error
	failed := 0
	for _, f := range wait {
		select {
		case <-f.done:
		case <-ctx.Done():
			return fmt.Errorf("flush: %w", ctx.Err())
		}
		if f.err != nil {
			if first == nil {
				first = f.err
			}
			failed++
		}
	}
	c.fmu.Lock()
	if first == nil {
		first = c.firstErr
	}
	c.firstErr = nil
	c.fmu.Unlock()
	if failed > 1 {
		return fmt.Errorf("%w (and %d more failed batches)", first, failed-1)
	}
	return first
}

// batcher returns the leaderboard's batcher, starting it on first use.
func (c *Client) batcher(lb string) (*batcher, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if b := c.batchers[lb]; b != nil {
		return b, nil
	}
	b := &batcher{c: c, lb: lb, kick: make(chan struct{}, 1), buf: make([]Event, 0, c.opts.batchSize)}
	c.batchers[lb] = b
	c.wg.Add(1)
	go b.loop()
	return b, nil
}

// waitCapacity blocks while maxInFlight batches are unanswered. The bound is
// soft: one add may cut several batches, and age cuts do not wait.
func (c *Client) waitCapacity(ctx context.Context) error {
	for {
		c.fmu.Lock()
		if len(c.flights) < c.opts.maxInFlight {
			c.fmu.Unlock()
			return nil
		}
		ch := c.fchanged
		c.fmu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (b *batcher) add(events []Event) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	wasEmpty := len(b.buf) == 0
	for _, e := range events {
		if e.Dimensions != nil {
			e.Dimensions = maps.Clone(e.Dimensions)
		}
		b.buf = append(b.buf, e)
	}
	if wasEmpty {
		b.startLocked()
	}
	for len(b.buf) >= b.c.opts.batchSize {
		b.cutLocked(b.c.opts.batchSize)
	}
	return nil
}

// startLocked marks the start of a new batch and wakes loop to time it.
func (b *batcher) startLocked() {
	b.gen++
	b.started = time.Now()
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// cutLocked sends the first n queued events as a batch.
func (b *batcher) cutLocked(n int) {
	n = min(n, len(b.buf))
	if n == 0 {
		return
	}
	batch := b.buf[:n:n]
	rest := b.buf[n:]
	b.buf = make([]Event, len(rest), max(b.c.opts.batchSize, len(rest)))
	copy(b.buf, rest)
	if len(b.buf) > 0 {
		b.startLocked()
	}
	b.c.launch(b.lb, batch)
}

// close refuses further events; queued ones stay for the final flush.
func (b *batcher) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
}

// loop sends a batch once its first event is batchAge old.
func (b *batcher) loop() {
	defer b.c.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-b.kick:
		case <-b.c.stop:
			return
		}
		b.mu.Lock()
		gen, started, empty := b.gen, b.started, len(b.buf) == 0
		b.mu.Unlock()
		if empty {
			continue
		}
		timer.Reset(time.Until(started.Add(b.c.opts.batchAge)))
		select {
		case <-timer.C:
		case <-b.c.stop:
			timer.Stop()
			return
		}
		b.mu.Lock()
		if b.gen == gen {
			b.cutLocked(len(b.buf))
		}
		b.mu.Unlock()
	}
}

// launch sends a batch on its own goroutine, owned by the client.
func (c *Client) launch(lb string, events []Event) {
	f := &flight{done: make(chan struct{})}
	c.fmu.Lock()
	if c.stopped.Load() {
		// Only a Flush racing Close gets here: Close has already flushed.
		if c.firstErr == nil {
			c.firstErr = fmt.Errorf("ingest %d events into %q: %w", len(events), lbName(lb), ErrClosed)
		}
		c.fmu.Unlock()
		return
	}
	c.flights[f] = struct{}{}
	c.fmu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		start := time.Now()
		res, err := c.ingest(c.runCtx, lb, events, 0)
		if c.opts.onBatch != nil {
			c.opts.onBatch(BatchResult{Leaderboard: lbName(lb), Events: len(events), Result: res, Err: err,
				Latency: time.Since(start)})
		}
		c.fmu.Lock()
		delete(c.flights, f)
		f.err = err
		if err != nil && c.firstErr == nil {
			c.firstErr = err // for a Flush that starts after this batch finished
		}
		close(c.fchanged)
		c.fchanged = make(chan struct{})
		c.fmu.Unlock()
		close(f.done)
	}()
}
