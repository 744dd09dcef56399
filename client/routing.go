package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	topkv1 "github.com/topkd/topkd/proto/topk/v1"
	"github.com/topkd/topkd/proto/topk/v1/topkv1connect"
	"github.com/topkd/topkd/ring"
)

// Partition-aware ingest. A node that receives a batch splits it by
// partition and forwards the parts whose leader is elsewhere: with N nodes,
// (N-1)/N of every batch crosses the network twice and is decoded twice.
// The client knows the partition function (ring.Partition) and learns each
// partition's leader with the members, so it splits the batch itself and
// sends each part to its leader under the batch's (producer, epoch,
// sequence). Every partition deduplicates its own part, so a retry of any
// part, or of the whole batch by Resend, still counts once. A part sent to a
// node that no longer leads is forwarded by that node: stale routes cost a
// hop, never correctness.
//
// Validation stays all-or-nothing (design.md §5): a batch is split only
// when every event is within the limits the cluster published, so no part
// is refused for content while another is committed. Any other batch goes
// whole to one node, which validates it and answers why it is refused.

// WithRouting turns partition-aware ingest on (the default) or off. It
// needs discovery (WithDiscovery), which learns the partitions' leaders.
func WithRouting(on bool) Option {
	return func(o *options) { o.noRouting = !on }
}

// routes is the partitions' leaders as the client last learned them.
type routes struct {
	addrs   []string                          // leader base URL by partition; "" unknown
	leaders []topkv1connect.TopKServiceClient // by partition, from the node set; nil unknown
	limits  *topkv1.IngestLimits
	nleader int // distinct nodes among addrs
}

// leaderAddrs returns each partition's leader (else its preferred leader)
// as a base URL, "" where the answering node knows neither.
func leaderAddrs(st *topkv1.StatusResponse, scheme string) []string {
	if st.Partitions == 0 || len(st.PartitionStatus) != int(st.Partitions) {
		return nil
	}
	http := map[string]string{}
	for _, n := range st.Nodes {
		if n.HttpAddr != "" && !n.Leaving && !n.Down {
			http[n.NodeId] = scheme + n.HttpAddr
		}
	}
	out := make([]string, st.Partitions)
	for _, ps := range st.PartitionStatus {
		if int(ps.Partition) >= len(out) {
			return nil
		}
		id := ps.Leader
		if id == "" && len(ps.Placement) > 0 {
			id = ps.Placement[0]
		}
		out[ps.Partition] = http[id]
	}
	return out
}

func newRoutes(ns *nodeSet, addrs []string, limits *topkv1.IngestLimits) *routes {
	if len(addrs) == 0 || limits == nil {
		return nil
	}
	r := &routes{addrs: addrs, leaders: make([]topkv1connect.TopKServiceClient, len(addrs)), limits: limits}
	seen := map[string]bool{}
	for p, a := range addrs {
		if i := slices.Index(ns.addrs, a); a != "" && i >= 0 {
			r.leaders[p] = ns.conns[i]
		}
		if a != "" && !seen[a] {
			seen[a] = true
			r.nleader++
		}
	}
	return r
}

func (r *routes) same(addrs []string, limits *topkv1.IngestLimits) bool {
	if r == nil {
		return len(addrs) == 0 || limits == nil
	}
	return slices.Equal(r.addrs, addrs) && proto.Equal(r.limits, limits)
}

// split groups events by the node that leads their partition, or returns
// nil when the batch should go whole: no routes, a partition without a
// known leader, or an event a node might refuse. A node that leads several
// partitions gets their events in one request and splits it itself.
func (r *routes) split(leaderboard string, events []Event, now time.Time) []routedPart {
	if r == nil || !r.splittable(events, now) {
		return nil
	}
	if leaderboard == "" {
		leaderboard = "default"
	}
	var out []routedPart
	slot := make([]int, len(r.leaders)) // partition -> index in out + 1
	for _, e := range events {
		p := ring.Partition(leaderboard, e.Item, len(r.leaders))
		if slot[p] == 0 {
			if r.leaders[p] == nil {
				return nil
			}
			i := slices.IndexFunc(out, func(rp routedPart) bool { return rp.leader == r.leaders[p] })
			if i < 0 {
				out = append(out, routedPart{leader: r.leaders[p], addr: r.addrs[p]})
				i = len(out) - 1
			}
			slot[p] = i + 1
		}
		rp := &out[slot[p]-1]
		rp.events = append(rp.events, e)
	}
	return out
}

// splittable checks events against the published limits.
func (r *routes) splittable(events []Event, now time.Time) bool {
	if len(events) > int(r.limits.MaxBatchEvents) {
		return false
	}
	horizon := r.horizon(now)
	for _, e := range events {
		if !r.eventOK(e, horizon) {
			return false
		}
	}
	return true
}

// horizon is the latest event time every node accepts, with room for the
// nodes' clocks to differ from this one's.
func (r *routes) horizon(now time.Time) time.Time {
	return now.Add(time.Duration(r.limits.MaxFutureSkewMs) * time.Millisecond / 2)
}

// eventOK says whether no node would refuse e for its content.
func (r *routes) eventOK(e Event, horizon time.Time) bool {
	l := r.limits
	if e.Item == "" || len(e.Item) > int(l.MaxItemBytes) || !utf8.ValidString(e.Item) || e.Count < 0 ||
		e.Count > l.MaxEventCount || len(e.Dimensions) > 0 {
		return false
	}
	return e.Time.IsZero() || (e.Time.UnixMilli() >= 1000 && !e.Time.After(horizon))
}

// leaderOf returns the base URL of the node leading e's partition, or ""
// when it is unknown or e should travel in a batch sent whole.
func (r *routes) leaderOf(leaderboard string, e Event, now time.Time) string {
	if r == nil || !r.eventOK(e, r.horizon(now)) {
		return ""
	}
	return r.addrs[ring.Partition(leaderboard, e.Item, len(r.addrs))]
}

// nodes is how many distinct nodes lead partitions (0 without routes).
func (r *routes) nodes() int {
	if r == nil {
		return 0
	}
	return r.nleader
}

// routedPart is the events of a batch whose partitions one node leads, or
// a whole batch (leader nil).
type routedPart struct {
	leader topkv1connect.TopKServiceClient
	addr   string
	events []Event
}

// send sends each part's request to the part's leader (any node when it
// has none) and sums the answers. Attempts is the most any part took. The
// batch's outcome is unknown when some part committed or may have.
func (c *Client) send(ctx context.Context, op string, parts []routedPart, msgs []*topkv1.IngestRequest, seq uint64) (IngestResult, error) {
	type answer struct {
		resp     *topkv1.IngestResponse
		attempts int
		err      error
		maybe    bool // some attempt may have been applied
	}
	answers := make([]answer, len(parts))
	call := func(i int) {
		a := &answers[i]
		a.attempts, a.err = c.callFrom(ctx, op, retryUnknown, parts[i].leader, func(ctx context.Context, n topkv1connect.TopKServiceClient) error {
			r, err := n.Ingest(ctx, connect.NewRequest(msgs[i]))
			if err == nil {
				a.resp = r.Msg
			} else if !notApplied(err) {
				a.maybe = true
			}
			return err
		})
	}
	var wg sync.WaitGroup
	for i := range parts[1:] {
		wg.Go(func() { call(i + 1) })
	}
	call(0)
	wg.Wait()
	out := IngestResult{Sequence: seq}
	var errs []error
	committed, unknown := 0, false
	for i, a := range answers {
		out.Attempts = max(out.Attempts, a.attempts)
		if a.err != nil {
			unknown = unknown || a.maybe
			if len(parts) > 1 {
				a.err = fmt.Errorf("part for %s: %w", parts[i].addr, a.err)
			}
			errs = append(errs, a.err)
			continue
		}
		committed++
		out.Accepted += a.resp.Accepted
		out.Rejected += a.resp.Rejected
		out.Duplicate = out.Duplicate || a.resp.Duplicate
		for _, l := range a.resp.LateDropped {
			if out.LateDropped == nil {
				out.LateDropped = map[string]uint64{}
			}
			out.LateDropped[l.Window] += l.Events
		}
	}
	if len(errs) == 0 {
		return out, nil
	}
	err := errors.Join(errs...)
	if len(errs) == 1 {
		err = errs[0]
	}
	if committed > 0 {
		// Some parts are counted: the batch is not refused as a whole, and
		// resending its sequence completes it.
		err = fmt.Errorf("%d of %d parts committed: %w", committed, len(parts), err)
	}
	if committed > 0 || unknown {
		err = &UnknownOutcomeError{Sequence: seq, Err: err}
	}
	return IngestResult{Sequence: seq, Attempts: out.Attempts}, err
}
