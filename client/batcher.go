package client

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// batcher collects the events queued for one leaderboard and cuts them into
// batches by size (in add) or by age (in loop). With routes known, it keeps
// one queue per node that leads the events' partitions, so a batch of
// WithBatchSize events goes whole to one leader: splitting fixed-size
// batches by partition instead would send N nodes requests of 1/N the size,
// and a node's cost per event grows as its requests shrink.
type batcher struct {
	c      *Client
	lb     string
	mu     sync.Mutex
	queues map[string]*queue // by leader base URL; "" for events without a known leader
	closed bool
	kick   chan struct{} // size 1: coalesces "a queue started a batch" signals for loop
}

// queue is the batch being collected for one destination.
type queue struct {
	events  []Event
	started time.Time // when the first of events was queued
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
		b.cutAllLocked()
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
	b := &batcher{c: c, lb: lb, kick: make(chan struct{}, 1), queues: map[string]*queue{}}
	c.batchers[lb] = b
	c.wg.Add(1)
	go b.loop()
	return b, nil
}

// waitCapacity blocks while WithMaxInFlight batches per destination node are
// unanswered. The bound is soft: one add may cut several batches, and age
// cuts do not wait.
func (c *Client) waitCapacity(ctx context.Context) error {
	for {
		limit := c.opts.maxInFlight * max(1, c.nodes.Load().routes.nodes())
		c.fmu.Lock()
		if len(c.flights) < limit {
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
	for i, e := range events {
		if len(e.Dimensions) > 0 {
			return invalidArg("add to "+lbName(b.lb), "events[%d].dimensions: not supported yet", i)
		}
	}
	r := b.c.nodes.Load().routes
	lb := lbName(b.lb)
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	for _, e := range events {
		dest := r.leaderOf(lb, e, now)
		q := b.queues[dest]
		if q == nil {
			q = &queue{}
			b.queues[dest] = q
		}
		if len(q.events) == 0 {
			q.events = make([]Event, 0, b.c.opts.batchSize)
			q.started = now
			select { // loop times the new batch
			case b.kick <- struct{}{}:
			default:
			}
		}
		q.events = append(q.events, e)
		if len(q.events) >= b.c.opts.batchSize {
			b.cutLocked(q)
		}
	}
	return nil
}

// cutLocked sends q's events as a batch.
func (b *batcher) cutLocked(q *queue) {
	if len(q.events) == 0 {
		return
	}
	batch := q.events
	q.events = nil
	b.c.launch(b.lb, batch)
}

// cutAllLocked sends every queue's events.
func (b *batcher) cutAllLocked() {
	for _, q := range b.queues {
		b.cutLocked(q)
	}
}

// cutAgedLocked sends the queues whose first event is batchAge old and
// returns when the oldest remaining one will be (zero when none remains).
func (b *batcher) cutAgedLocked(now time.Time) time.Time {
	var next time.Time
	for dest, q := range b.queues {
		if len(q.events) == 0 {
			delete(b.queues, dest) // destinations change with the leaders
			continue
		}
		due := q.started.Add(b.c.opts.batchAge)
		if !due.After(now) {
			b.cutLocked(q)
			continue
		}
		if next.IsZero() || due.Before(next) {
			next = due
		}
	}
	return next
}

// close refuses further events; queued ones stay for the final flush.
func (b *batcher) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
}

// loop sends each queue's batch once its first event is batchAge old.
func (b *batcher) loop() {
	defer b.c.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		b.mu.Lock()
		next := b.cutAgedLocked(time.Now())
		b.mu.Unlock()
		var fire <-chan time.Time
		if !next.IsZero() {
			timer.Reset(time.Until(next))
			fire = timer.C
		}
		select {
		case <-b.kick:
		case <-fire:
		case <-b.c.stop:
			timer.Stop()
			return
		}
		timer.Stop()
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
