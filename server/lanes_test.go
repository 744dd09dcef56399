package server

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// Requests without a producer id get one from the node: each is counted,
// concurrent ones too (one lane each), none is reported a duplicate, and a
// client may not pose as an assigned producer.
func TestAssignedProducerIDs(t *testing.T) {
	n := openTestNode(t, t.TempDir())
	defer n.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const workers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for range workers {
		wg.Go(func() {
			for range each {
				res, err := n.Ingest(ctx, IngestRequest{Events: []Event{{Item: "x", Count: 1}, {Item: "y", Count: 2}}})
				if err == nil && (res.Accepted != 2 || res.Duplicate) {
					err = errors.New("not counted once")
				}
				if err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for item, want := range map[string]int64{"x": workers * each, "y": 2 * workers * each} {
		got, err := n.Count(ctx, "default", item, 0, Linearizable)
		if err != nil || got.Count != want {
			t.Errorf("%s = %d (%v), want %d", item, got.Count, err, want)
		}
	}
	if made := n.coord.lanes.made; made < 1 || made > workers {
		t.Errorf("%d lanes for %d concurrent requests", made, workers)
	}
	_, err := n.Ingest(ctx, IngestRequest{Events: []Event{{Item: "x"}}, ProducerID: AssignedProducerPrefix + "n1/0", Epoch: 1, Sequence: 1})
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("a client id with the reserved prefix: %v, want ErrInvalid", err)
	}
}
