//go:build accuracy

package sketch_test

// Streams of the accuracy benchmark: synthetic Zipf streams (inverse-CDF
// sampler, any s > 0) and the two real data sets of /work/shared/data, with
// their exact ground truth and their split over item-hash partitions.

import (
	"compress/gzip"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/topkd/topkd/ring"
)

const (
	// accPartitions is the number of item-hash partitions of the merge variants.
	accPartitions = 16
	// accBoard is the leaderboard name fed to ring.Partition.
	accBoard = "bench"
	// dataDir holds the real data sets, relative to the package directory
	// (the test's working directory): /work/main/fsm/sketch -> /work/shared/data.
	dataDir = "../../../shared/data"
)

// stream is one event stream with its exact truth. Events are item ids, not
// strings: the heap measurements run a full garbage collection per build,
// and ten million string headers would make each of them scan ten million
// pointers. build materializes the item strings it feeds, outside the
// timed loop and outside the measured heap (see builder.build).
type stream struct {
	name string
	desc string
	note string // e.g. what the loader skipped

	names []string          // distinct items by id
	index map[string]uint32 // item -> id
	truth []uint64          // exact count by id
	order []uint32          // ids with a positive count, by (count desc, item asc)

	ids     []uint32 // the events
	weights []uint64 // the events' weights; nil: every weight is 1
	total   uint64   // N: sum of weights

	parts [accPartitions]substream // the events split by ring.Partition
}

// substream is the events of one partition, in stream order.
type substream struct {
	ids     []uint32
	weights []uint64
	total   uint64
}

func (s *stream) events() int   { return len(s.ids) }
func (s *stream) distinct() int { return len(s.order) }

// materialize is the item strings of events.
func (s *stream) materialize(ids []uint32) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = s.names[id]
	}
	return out
}

// trueCount is the exact count of an item (0 if it never occurred).
func (s *stream) trueCount(item string) uint64 {
	if id, ok := s.index[item]; ok {
		return s.truth[id]
	}
	return 0
}

// kth is the true count of the k-th item of the true ranking (0 if fewer than k items occurred).
func (s *stream) kth(k int) uint64 {
	if k > len(s.order) {
		return 0
	}
	return s.truth[s.order[k-1]]
}

// finish computes the truth and splits the stream over the partitions.
func (s *stream) finish(ids []uint32) {
	s.ids = ids
	s.truth = make([]uint64, len(s.names))
	s.total = 0
	for i, id := range ids {
		w := uint64(1)
		if s.weights != nil {
			w = s.weights[i]
		}
		s.truth[id] += w
		s.total += w
	}
	s.order = s.order[:0]
	for id, c := range s.truth {
		if c > 0 {
			s.order = append(s.order, uint32(id))
		}
	}
	slices.SortFunc(s.order, func(a, b uint32) int {
		if s.truth[a] != s.truth[b] {
			if s.truth[a] > s.truth[b] {
				return -1
			}
			return 1
		}
		return strings.Compare(s.names[a], s.names[b])
	})
	pid := make([]uint8, len(s.names))
	var sizes [accPartitions]int
	for id, name := range s.names {
		pid[id] = uint8(ring.Partition(accBoard, name, accPartitions))
	}
	for _, id := range ids {
		sizes[pid[id]]++
	}
	for p := range s.parts {
		s.parts[p] = substream{ids: make([]uint32, 0, sizes[p])}
		if s.weights != nil {
			s.parts[p].weights = make([]uint64, 0, sizes[p])
		}
	}
	for i, id := range ids {
		ps := &s.parts[pid[id]]
		ps.ids = append(ps.ids, id)
		w := uint64(1)
		if s.weights != nil {
			w = s.weights[i]
			ps.weights = append(ps.weights, w)
		}
		ps.total += w
	}
}

// ---- Zipf ----

// zipfNames are the item strings of the Zipf streams: rank r (0-based) is
// item zipfNames[r], "song_<perm[r]>" for a fixed random permutation perm, so
// neither the item order nor the item length says anything about the rank.
func zipfNames(n int, seed uint64) []string {
	perm := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)).Perm(n)
	names := make([]string, n)
	for r, p := range perm {
		names[r] = "song_" + strconv.Itoa(p)
	}
	return names
}

// zipfSampler draws ranks 0..n-1 with P(r) proportional to (r+1)^-s by
// inverting the CDF: a guide table narrows the search to a few entries.
// Unlike math/rand's Zipf it accepts any s > 0, including s <= 1.
type zipfSampler struct {
	cdf   []float64 // cdf[r] = P(rank <= r); cdf[n-1] = 1
	guide []int32   // guide[j] = smallest r with cdf[r] > j/len(guide)
	rng   *rand.Rand
}

func newZipfSampler(n int, s float64, seed uint64) *zipfSampler {
	z := &zipfSampler{cdf: make([]float64, n), guide: make([]int32, n), rng: rand.New(rand.NewPCG(seed, 0x2545f4914f6cdd1d))}
	// Sum from the smallest terms up for accuracy.
	w := make([]float64, n)
	for r := range n {
		w[r] = math.Pow(float64(r+1), -s)
	}
	var h float64
	for r := n - 1; r >= 0; r-- {
		h += w[r]
	}
	var c float64
	for r := range n {
		c += w[r]
		z.cdf[r] = c / h
	}
	z.cdf[n-1] = 1
	r := 0
	for j := range z.guide {
		u := float64(j) / float64(n)
		for z.cdf[r] <= u {
			r++
		}
		z.guide[j] = int32(r)
	}
	return z
}

func (z *zipfSampler) next() uint32 {
	u := z.rng.Float64()
	r := int(z.guide[int(u*float64(len(z.guide)))])
	for z.cdf[r] <= u {
		r++
	}
	return uint32(r)
}

// zipfStream is events draws of Zipf(s) over the n items of names (rank r = names[r]).
func zipfStream(names []string, index map[string]uint32, s float64, events int, seed uint64) *stream {
	z := newZipfSampler(len(names), s, seed)
	ids := make([]uint32, events)
	for i := range ids {
		ids[i] = z.next()
	}
	st := &stream{
		name:  fmt.Sprintf("zipf-%.1f", s),
		desc:  fmt.Sprintf("Zipf s=%.1f, %d events over %d items (inverse-CDF sampler, seed %d; ranks mapped to items by a fixed random permutation)", s, events, len(names), seed),
		names: names, index: index,
	}
	st.finish(ids)
	return st
}

// ---- real data ----

// errNoData marks a data file that is absent: the stream is skipped.
var errNoData = errors.New("data file absent")

func openGzipCSV(name string) (*csv.Reader, func(), error) {
	path := filepath.Join(dataDir, name)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		abs, _ := filepath.Abs(path)
		return nil, nil, fmt.Errorf("%w: %s", errNoData, abs)
	}
	if err != nil {
		return nil, nil, err
	}
	gz, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	r := csv.NewReader(gz)
	r.ReuseRecord = true
	return r, func() { gz.Close(); f.Close() }, nil
}

// columns maps the header's column names to their positions.
func columns(r *csv.Reader, want ...string) ([]int, error) {
	hdr, err := r.Read()
	if err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	var out []int
	for _, w := range want {
		i := slices.Index(hdr, w)
		if i < 0 {
			return nil, fmt.Errorf("header %q has no column %q", hdr, w)
		}
		out = append(out, i)
	}
	return out, nil
}

// interner assigns ids to distinct items in first-seen order.
type interner struct {
	names []string
	index map[string]uint32
}

func newInterner() *interner { return &interner{index: map[string]uint32{}} }

func (in *interner) id(item string) uint32 {
	if id, ok := in.index[item]; ok {
		return id
	}
	id := uint32(len(in.names))
	in.names = append(in.names, item)
	in.index[item] = id
	return id
}

// flightsStream is the routes (origin-destination, weight 1) of flights-3m.csv.gz.
func flightsStream() (*stream, error) {
	r, closeFn, err := openGzipCSV("flights-3m.csv.gz")
	if err != nil {
		return nil, err
	}
	defer closeFn()
	col, err := columns(r, "origin", "destination")
	if err != nil {
		return nil, err
	}
	in := newInterner()
	ids := make([]uint32, 0, 3_000_000)
	var buf []byte
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("flights-3m.csv.gz: %w", err)
		}
		buf = append(append(append(buf[:0], rec[col[0]]...), '-'), rec[col[1]]...)
		ids = append(ids, in.id(string(buf)))
	}
	st := &stream{
		name:  "flights",
		desc:  fmt.Sprintf("flights-3m.csv.gz routes origin-destination, weight 1: %d events over %d routes", len(ids), len(in.names)),
		names: in.names, index: in.index,
	}
	st.finish(ids)
	return st, nil
}

// retailStream is the StockCodes of online-retail.csv.gz weighted by Quantity.
// Rows with Quantity <= 0 (cancellations) are skipped: the approximate modes
// reject non-positive deltas at validation.
func retailStream() (*stream, error) {
	r, closeFn, err := openGzipCSV("online-retail.csv.gz")
	if err != nil {
		return nil, err
	}
	defer closeFn()
	col, err := columns(r, "StockCode", "Quantity")
	if err != nil {
		return nil, err
	}
	in := newInterner()
	var ids []uint32
	var weights []uint64
	var rows, skipped int
	var skippedW int64
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("online-retail.csv.gz: %w", err)
		}
		rows++
		q, err := strconv.ParseInt(strings.TrimSpace(rec[col[1]]), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("online-retail.csv.gz row %d: quantity %q: %w", rows, rec[col[1]], err)
		}
		if q <= 0 {
			skipped++
			skippedW += q
			continue
		}
		ids = append(ids, in.id(strings.Clone(rec[col[0]])))
		weights = append(weights, uint64(q))
	}
	st := &stream{
		name:    "retail",
		names:   in.names,
		index:   in.index,
		weights: weights,
	}
	st.finish(ids)
	st.desc = fmt.Sprintf("online-retail.csv.gz StockCode weighted by Quantity: %d of %d rows, total weight %d, %d items",
		len(ids), rows, st.total, len(in.names))
	st.note = fmt.Sprintf("skipped %d rows with Quantity <= 0 (cancellations, rejected by the approximate modes), total weight %d",
		skipped, skippedW)
	return st, nil
}
