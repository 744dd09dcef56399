//go:build accuracy

package sketch_test

// The accuracy benchmark of the approximate counting modes (make accuracy):
// spacesaving (Summary) and cms (CMSTopK) at memory budgets of measured live
// heap, on Zipf streams and two real data sets, single and merged over 16
// item-hash partitions. It fails only on a violated bound; the accuracy
// targets are reported as PASS or MISS.

import (
	"errors"
	"fmt"
	"github.com/topkd/topkd/fsm/sketch"
	"io"
	"math"
	"os"
	"runtime"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/topkd/topkd/ring"
)

var (
	accBudgetsKB = []int{10, 20, 32, 64, 128, 256, 512}
	accZipfS     = []float64{0.8, 1.0, 1.2, 1.5}
	accKs        = [2]int{100, 1000}
)

const zipfSeed = 20240601

var (
	zipfItems  = 1_000_000
	zipfEvents = 10_000_000
)

// ACCURACY_QUICK=1 shrinks the run for development: Zipf streams of 1M events
// over 100K items and three budgets.
func init() {
	if os.Getenv("ACCURACY_QUICK") != "" {
		zipfItems, zipfEvents = 100_000, 1_000_000
		accBudgetsKB = []int{10, 32, 256}
	}
}

func partOf(item string) int { return ring.Partition(accBoard, item, accPartitions) }

// variant is how a mode is deployed: one structure, or one per partition
// merged with MergeDisjoint.
type variant int

const (
	single  variant = iota
	sameCap         // 16 partitions, each with the single structure's parameters
	sameMem         // 16 partitions sharing the single structure's budget
)

var variantNames = [...]string{"single", "16p-same-cap", "16p-same-mem"}

// eval is the accuracy of one built structure against the truth.
type eval struct {
	prec     [2]float64 // |reported top-k ∩ true top-k| / k, ties at the k-th count correct
	relErr   [2]float64 // mean |Count-true|/true over the reported top-k
	reported [2]int
	viol     int      // bound violations over both answers
	violEx   []string // the first few
	guar     bool     // Result(100).Guaranteed(100)
	// cms: reported items (of the top-1000 answer) whose estimate exceeds
	// true + epsilon*N, and the same over every item of the stream (the
	// sketch's estimate, candidate or not).
	exceed, checked       int
	exceedAll, checkedAll int
}

func evaluate(st *stream, b *built) eval {
	var ev eval
	for i, k := range accKs {
		r := b.result(k)
		kth := st.kth(k)
		listed := make(map[string]bool, len(r.Items))
		var correct int
		var rel float64
		for _, c := range r.Items {
			tr := st.trueCount(c.Item)
			listed[c.Item] = true
			if tr > 0 && tr >= kth {
				correct++
			}
			rel += math.Abs(float64(c.Count)-float64(tr)) / float64(max(tr, 1))
			if tr < c.Lower() || tr > c.Count {
				ev.violate(fmt.Sprintf("top-%d: %q true %d outside [Lower %d, Count %d]", k, c.Item, tr, c.Lower(), c.Count))
			}
			if i == 1 && b.md == modeCMS {
				n := st.total
				if b.split {
					n = st.parts[partOf(c.Item)].total
				}
				ev.checked++
				if float64(c.Count) > float64(tr)+b.p.epsilon()*float64(n) {
					ev.exceed++
				}
			}
		}
		// The best unlisted item must be bounded by Rest.
		for _, id := range st.order {
			if name := st.names[id]; !listed[name] {
				if tr := st.truth[id]; tr > r.Rest {
					ev.violate(fmt.Sprintf("top-%d: Rest %d < true count %d of unlisted %q", k, r.Rest, tr, name))
				}
				break
			}
		}
		ev.prec[i] = float64(correct) / float64(min(k, st.distinct()))
		ev.reported[i] = len(r.Items)
		if len(r.Items) > 0 {
			ev.relErr[i] = rel / float64(len(r.Items))
		}
		if k == 100 {
			ev.guar = r.Guaranteed(100)
		}
	}
	if b.md == modeCMS {
		eps := b.p.epsilon()
		for _, id := range st.order {
			item, n, p := st.names[id], st.total, 0
			if b.split {
				p = partOf(item)
				n = st.parts[p].total
			}
			est := b.parts[p].(*sketch.CMSTopK).Sketch().Estimate(item)
			ev.checkedAll++
			if float64(est) > float64(st.truth[id])+eps*float64(n) {
				ev.exceedAll++
			}
		}
	}
	return ev
}

func (ev *eval) violate(msg string) {
	ev.viol++
	if len(ev.violEx) < 5 {
		ev.violEx = append(ev.violEx, msg)
	}
}

// exceedLimit is the largest number of estimates above true + epsilon*N
// among n that is consistent with a failure probability delta: the binomial
// mean plus four standard deviations, plus one.
func exceedLimit(n int, delta float64) float64 {
	d := min(delta, 1)
	return float64(n)*d + 4*math.Sqrt(float64(n)*d*(1-d)) + 1
}

// row is one line of a stream's table.
type row struct {
	budgetKB int
	md       mode
	v        variant
	b        *built // nil: nothing fits the budget
	ev       eval
}

// accRun holds every row of the run, for the target checks.
type accRun struct {
	rows    map[string][]row // by stream
	skipped map[string]string
}

func (ar *accRun) find(streamName string, budgetKB int, md mode, v variant) *row {
	for i, r := range ar.rows[streamName] {
		if r.budgetKB == budgetKB && r.md == md && r.v == v {
			return &ar.rows[streamName][i]
		}
	}
	return nil
}

// streamGen produces one stream on demand: only one is held at a time.
type streamGen struct {
	name string
	gen  func() (*stream, error)
}

func accStreams() []streamGen {
	var names []string
	var index map[string]uint32
	zipfTable := func() {
		if names == nil {
			names = zipfNames(zipfItems, zipfSeed)
			index = make(map[string]uint32, len(names))
			for i, n := range names {
				index[n] = uint32(i)
			}
		}
	}
	var gens []streamGen
	for i, s := range accZipfS {
		gens = append(gens, streamGen{fmt.Sprintf("zipf-%.1f", s), func() (*stream, error) {
			zipfTable()
			return zipfStream(names, index, s, zipfEvents, zipfSeed+uint64(i)+1), nil
		}})
	}
	gens = append(gens, streamGen{"flights", flightsStream}, streamGen{"retail", retailStream})
	return gens
}

func TestAccuracy(t *testing.T) {
	start := time.Now()
	out := io.Writer(os.Stdout)
	clone := [2]bool{retainsCallerStrings(modeSS), retainsCallerStrings(modeCMS)}
	printHeader(out, clone)
	ar := &accRun{rows: map[string][]row{}, skipped: map[string]string{}}
	for _, g := range accStreams() {
		t0 := time.Now()
		st, err := g.gen()
		if errors.Is(err, errNoData) {
			t.Logf("stream %s skipped: %v", g.name, err)
			ar.skipped[g.name] = err.Error()
			fmt.Fprintf(out, "\n=== stream %s: SKIPPED (%v)\n", g.name, err)
			continue
		}
		if err != nil {
			t.Fatalf("stream %s: %v", g.name, err)
		}
		gen := time.Since(t0)
		runStream(t, out, ar, st, gen)
		st = nil
		runtime.GC()
	}
	printTargets(out, ar)
	fmt.Fprintf(out, "\ntotal run time %v\n", time.Since(start).Round(time.Second))
}

func runStream(t *testing.T, out io.Writer, ar *accRun, st *stream, gen time.Duration) {
	t0 := time.Now()
	fmt.Fprintf(out, "\n=== stream %s: %s\n", st.name, st.desc)
	if st.note != "" {
		fmt.Fprintf(out, "    %s\n", st.note)
	}
	fmt.Fprintf(out, "    N=%d, distinct=%d; true counts: #1=%d, #100=%d, #1000=%d (generated/loaded with truth and partitions in %v)\n",
		st.total, st.distinct(), st.kth(1), st.kth(100), st.kth(1000), gen.Round(time.Millisecond))
	bd := &builder{st: st, debug: os.Getenv("ACCURACY_DEBUG") != ""}
	ssM := bd.ssModel()
	cmsC := bd.cmsModel()
	fmt.Fprintf(out, "    measured on this stream: spacesaving %.1f B/counter + %.0f B; cms %.1f B/candidate + %.0f B + 8 B/cell\n",
		ssM.slope, ssM.base, cmsC.perCand, cmsC.base)

	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "budget\tmode\tvariant\tparams\tepsilon\tKB\tp@100\tp@1000\trelerr@100\trelerr@1000\tns/event\tviolations\tguaranteed@100\texceed:reported\texceed:all\t")
	for bi, kb := range accBudgetsKB {
		if bi > 0 {
			fmt.Fprintln(tw, strings.Repeat("\t", 15))
		}
		budget := int64(kb) << 10
		for _, md := range []mode{modeSS, modeCMS} {
			var one *built
			for v := single; v <= sameMem; v++ {
				var b *built
				switch {
				case v == single && md == modeSS:
					b = bd.ssCalibrate(budget, false, ssM)
				case v == single:
					b = bd.cmsCalibrate(budget, false, cmsC)
				case v == sameCap && one != nil:
					b = bd.build(md, one.p, true, true, st.events())
				case v == sameMem && md == modeSS:
					b = bd.ssCalibrate(budget, true, ssM)
				case v == sameMem:
					b = bd.cmsCalibrate(budget, true, cmsC)
				}
				if v == single {
					one = b
				}
				r := row{budgetKB: kb, md: md, v: v, b: b}
				if b != nil {
					r.ev = evaluate(st, b)
					checkRow(t, st, &r)
				}
				printRow(tw, &r)
				if b != nil && b != one {
					b.parts = nil // only the numbers are kept
				}
				ar.rows[st.name] = append(ar.rows[st.name], r)
			}
			if one != nil {
				one.parts = nil
			}
		}
	}
	tw.Flush()
	fmt.Fprintf(out, "    stream %s: %d structures built from the whole stream, %d from the calibration prefix, in %v\n",
		st.name, bd.full, bd.partial, time.Since(t0).Round(time.Second))
}

// checkRow fails the test on a violated bound, and for cms on more estimates
// above true + epsilon*N than delta allows.
func checkRow(t *testing.T, st *stream, r *row) {
	t.Helper()
	where := fmt.Sprintf("%s %d KB %s %s %s", st.name, r.budgetKB, r.md, variantNames[r.v], r.b.p.String(r.md))
	if r.ev.viol > 0 {
		t.Errorf("%s: %d bound violations, e.g. %s", where, r.ev.viol, strings.Join(r.ev.violEx, "; "))
	}
	if r.md == modeCMS {
		if lim := exceedLimit(r.ev.checkedAll, r.b.p.delta()); float64(r.ev.exceedAll) > lim {
			t.Errorf("%s: %d of %d items' estimates exceed true + epsilon*N (epsilon %.5f), more than delta %.4f allows (limit %.1f)",
				where, r.ev.exceedAll, r.ev.checkedAll, r.b.p.epsilon(), r.b.p.delta(), lim)
		}
	}
}

func printRow(w io.Writer, r *row) {
	fmt.Fprintf(w, "%d KB\t%s\t%s\t", r.budgetKB, r.md, variantNames[r.v])
	if r.b == nil {
		fmt.Fprintf(w, "does not fit\t\t\t\t\t\t\t\t\t\t\t\t\n")
		return
	}
	b, ev := r.b, r.ev
	ps := b.p.String(r.md)
	eps := "-"
	exc, excAll := "-", "-"
	if r.md == modeCMS {
		eps = fmt.Sprintf("%.5f", b.p.epsilon())
		exc = fmt.Sprintf("%.4f (%d/%d)", float64(ev.exceed)/float64(max(ev.checked, 1)), ev.exceed, ev.checked)
		excAll = fmt.Sprintf("%.5f (delta %.3g)", float64(ev.exceedAll)/float64(max(ev.checkedAll, 1)), b.p.delta())
	}
	pk := func(i int) string {
		s := fmt.Sprintf("%.3f", ev.prec[i])
		if ev.reported[i] < accKs[i] {
			s += fmt.Sprintf(" (%d rep)", ev.reported[i])
		}
		return s
	}
	fmt.Fprintf(w, "%s\t%s\t%.1f\t%s\t%s\t%.4f\t%.4f\t%.1f\t%d\t%v\t%s\t%s\t\n",
		ps, eps, b.kb(), pk(0), pk(1), ev.relErr[0], ev.relErr[1], b.nsEv, ev.viol, ev.guar, exc, excAll)
}

func printHeader(w io.Writer, clone [2]bool) {
	keys := func(md mode) string {
		if clone[md] {
			return "keeps the item strings it is given"
		}
		return "copies the item strings it keeps"
	}
	fmt.Fprintf(w, `Accuracy of the approximate counting modes (fsm/sketch), %d cores, %s.
Budgets: %v KB of MEASURED live heap: runtime.GC + runtime.MemStats.HeapAlloc before and after building
  the structure from the whole stream, while it is referenced; everything it holds counts (keys, maps,
  heaps, sketch cells). Summary %s, CMSTopK %s: measured builds are fed
  strings from a fresh copy of the item table (allocated after the first measurement, dropped before the
  second), so the item strings a structure keeps are counted either way, and nothing else of the stream.
Calibration: the largest parameter whose measured footprint on this stream fits the budget. A footprint
  model measured on the stream gives the first guess; a search on the stream's first %d events steps
  down by the measured excess (up by the room left) and bisects once bracketed, to 1%% resolution; the
  result is then built from the whole stream and measured: if it does not fit, the search goes on
  down with whole-stream builds; if it fits with more than 5%% of the budget left and the next larger
  value the prefix rejected fits the whole stream, it goes on up. KB below is the whole-stream
  measurement. Measurements of identical builds can differ (Go's map layout depends on a random
  hash seed; about one collection in thirty still holds a transient ~5.5 KB object of the runtime or
  test harness, so every heap reading is the smaller of two collections), so a build that misses the
  budget by at most 25%% is repeated once and the parameter fits if either build does.
  spacesaving: capacity m with sketch.FilterCellsPerCounter filter cells per counter (sketch.NewSpaceSaving; m never above the number of distinct items).
  cms: K = clamp(budget/2 / bytes-per-candidate, %d, %d), but candidates take at most 3/4 of the budget
    (so K < %d at the smallest budgets); the sketch gets the rest: depth %d = ceil(ln(1/%.2g)) while each row
    has >= %d cells, else fewer rows; width = cells/depth; epsilon = e/width; the cells are calibrated
    (if not even one cell fits, K shrinks).
Variants: single = one structure; 16p-same-cap = the stream split over %d partitions by
  ring.Partition(%q, item, %d), each with the single structure's parameters (about 16x the memory);
  16p-same-mem = 16 partitions sharing the budget, calibrated and measured together: spacesaving m per
  partition; cms: each partition gets budget/16 with K_p = ceil(2*K/16) candidates (K: the single
  structure's K; 2x slack for uneven partitions; at most half of budget/16), its sketch the rest.
  The partitions' Result(k) are merged with sketch.MergeDisjoint.
Columns: KB = measured; p@k = |reported top-k ∩ true top-k| / k, where a reported item whose true count
  equals the true k-th count counts as correct ("(n rep)": fewer than k items reported); relerr@k = mean
  |Count-true|/true over the reported top-k; ns/event = wall time of the Add loops / events, one goroutine,
  item strings pre-materialized; violations = reported items with true outside [Lower, Count] plus answers
  whose Rest is below the true count of an unlisted item (top-100 and top-1000; must be 0: the test fails);
  guaranteed@100 = Result(100).Guaranteed(100).
  cms only: exceed = fraction of estimates above true + epsilon*N (N of the item's partition when split).
  The bound holds with probability >= 1-delta for any FIXED item: exceed:all is over every item of the
  stream (the sketch's estimate), and the test fails when that count exceeds delta*n + 4 sd + 1.
  exceed:reported is over the reported top-1000 (count/reported); it is printed, not checked: those
  items were selected BECAUSE their estimates are high, so collisions are over-represented among them.
`, runtime.NumCPU(), runtime.Version(), accBudgetsKB, keys(modeSS), keys(modeCMS), calibPrefix,
		cmsKMin, cmsKMax, cmsKMin, 5, cmsDelta, cmsMinWidth, accPartitions, accBoard, accPartitions)
}

// ---- target checks (spacesaving) ----

// firstBudget names the smallest budget at which a single summary reaches
// the precision, for context on a target line.
func firstBudget(ar *accRun, s string, i int, want float64) string {
	for _, kb := range accBudgetsKB {
		if r := ar.find(s, kb, modeSS, single); r != nil && r.b != nil && r.ev.prec[i] >= want {
			return fmt.Sprintf("; first reached at %d KB (m=%d, %.3f)", kb, r.b.p.m, r.ev.prec[i])
		}
	}
	return fmt.Sprintf("; not reached at any budget up to %d KB", accBudgetsKB[len(accBudgetsKB)-1])
}

func printTargets(w io.Writer, ar *accRun) {
	fmt.Fprintf(w, "\n=== target check (spacesaving; MISS is reported, not failed)\n")
	status := func(ok bool) string {
		if ok {
			return "PASS"
		}
		return "MISS"
	}
	get := func(s string, kb int, v variant) *row {
		if r := ar.find(s, kb, modeSS, v); r != nil && r.b != nil {
			return r
		}
		return nil
	}
	for _, s := range []string{"zipf-1.0", "zipf-1.2", "zipf-1.5", "flights"} {
		if why, ok := ar.skipped[s]; ok {
			fmt.Fprintf(w, "SKIP top-100 precision >= 0.99 within 32 KB on %s: %s\n", s, why)
			continue
		}
		r := get(s, 32, single)
		if r == nil {
			fmt.Fprintf(w, "MISS top-100 precision >= 0.99 within 32 KB on %s: nothing fits\n", s)
			continue
		}
		fmt.Fprintf(w, "%s top-100 precision >= 0.99 within 32 KB on %s: %.3f (m=%d, %.1f KB)%s\n",
			status(r.ev.prec[0] >= 0.99), s, r.ev.prec[0], r.b.p.m, r.b.kb(), firstBudget(ar, s, 0, 0.99))
	}
	if r := get("zipf-1.0", 256, single); r != nil {
		fmt.Fprintf(w, "%s top-1000 precision >= 0.95 within 256 KB on zipf-1.0: %.3f (m=%d, %.1f KB)%s\n",
			status(r.ev.prec[1] >= 0.95), r.ev.prec[1], r.b.p.m, r.b.kb(), firstBudget(ar, "zipf-1.0", 1, 0.95))
	} else {
		fmt.Fprintf(w, "MISS top-1000 precision >= 0.95 within 256 KB on zipf-1.0: no result\n")
	}
	var worstNs float64
	var worstAt string
	for _, g := range accStreams() {
		s := g.name
		if _, ok := ar.skipped[s]; ok {
			fmt.Fprintf(w, "SKIP merged precision (16p-same-cap) within 1 point of single on %s: stream absent\n", s)
			continue
		}
		worst, best := math.Inf(1), math.Inf(-1)
		var worstWhere string
		for _, kb := range accBudgetsKB {
			one, m := get(s, kb, single), get(s, kb, sameCap)
			if one == nil || m == nil {
				continue
			}
			for i, k := range accKs {
				d := m.ev.prec[i] - one.ev.prec[i]
				if d < worst {
					worst, worstWhere = d, fmt.Sprintf("top-%d at %d KB: %.3f vs %.3f", k, kb, m.ev.prec[i], one.ev.prec[i])
				}
				best = max(best, d)
			}
			if one.b.nsEv > worstNs {
				worstNs, worstAt = one.b.nsEv, fmt.Sprintf("%s at %d KB, m=%d", s, kb, one.b.p.m)
			}
		}
		if math.IsInf(worst, 1) {
			fmt.Fprintf(w, "MISS merged precision (16p-same-cap) within 1 point of single on %s: no results\n", s)
			continue
		}
		fmt.Fprintf(w, "%s merged precision (16p-same-cap) within 1 point of single on %s: worst merged-single %+.3f (%s); best %+.3f\n",
			status(worst >= -0.01), s, worst, worstWhere, best)
	}
	fmt.Fprintf(w, "%s update cost <= 100 ns/event (single summary, every stream and budget): worst %.1f ns/event (%s)\n",
		status(worstNs <= 100), worstNs, worstAt)
	var perStream []string
	for _, g := range accStreams() {
		var mx float64
		for _, kb := range accBudgetsKB {
			if r := get(g.name, kb, single); r != nil {
				mx = max(mx, r.b.nsEv)
			}
		}
		if mx > 0 {
			perStream = append(perStream, fmt.Sprintf("%s %.1f", g.name, mx))
		}
	}
	fmt.Fprintf(w, "     worst ns/event per stream: %s\n", strings.Join(perStream, ", "))
}
