package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
	"pgregory.net/rapid"

	pb "github.com/topkd/topkd/proto/topkd/raftcmd/v1"
)

// This file checks the FSM against a naive reference model (see the
// "Semantics" notes of the fsm package): the model keeps every accepted delta
// with its timestamp and recomputes every answer by brute force.
// Two readings the notes leave implicit: the window clock is re-derived
// (monotonically) after every ingest, tick and checksum entry and after a
// config create/update (so lowering allowed_lateness moves an event clock at
// once); and Outcome.Late has one LateCount per (deltas block, window) with late events.
// Besides answers, every batch checks the heap/class invariants of each window.
//
// Run more cases with: go test ./fsm -run Model -rapid.checks=2000

// ---------------------------------------------------------------------------
// reference model

// mdEvent is one accepted delta.
type mdEvent struct {
	item  string
	delta int64
	t     int64  // event time, ms
	in    []bool // per sliding window: landed in a bucket (was not late)
}

type mdBoard struct {
	cfg      *pb.LeaderboardConfig // normalized
	events   []mdEvent
	maxEv    int64
	hasMaxEv bool
	clock    int64
	hasClock bool // false: event clock "none"
	late     []uint64
	accepted uint64
	rejMI    uint64
}

type mdProducer struct {
	epoch    uint64
	high     uint64
	any      bool
	outcomes map[uint64]*pb.Outcome // applied sequences within 255 of high
	lastSeen int64
}

type mdModel struct {
	index  uint64
	logMs  int64
	ttlMs  int64
	boards map[string]*mdBoard
	tombs  map[string]uint64
	prods  map[string]*mdProducer

	rejectedStale, duplicates, tooOld, staleEpoch, ignored, configRejected uint64
}

func newMdModel(ttlMs int64) *mdModel {
	return &mdModel{ttlMs: ttlMs, boards: map[string]*mdBoard{}, tombs: map[string]uint64{}, prods: map[string]*mdProducer{}}
}

func mdFloorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

func (b *mdBoard) advance(logMs int64) {
	c := logMs
	if b.cfg.Clock == pb.Clock_CLOCK_EVENT {
		if !b.hasMaxEv {
			return
		}
		c = b.maxEv - b.cfg.AllowedLatenessMs
	}
	if !b.hasClock || c > b.clock {
		b.clock, b.hasClock = c, true
	}
}

// start is the first bucket index inside sliding window wi; ok is false while
// the clock is "none" (every bucket is inside).
func (b *mdBoard) start(wi int) (int64, bool) {
	if !b.hasClock {
		return 0, false
	}
	w := b.cfg.Windows[wi]
	return mdFloorDiv(b.clock, w.BucketMs) - w.DurationMs/w.BucketMs + 1, true
}

// holds reports whether e sits in a not-yet-expired bucket of sliding window wi.
func (b *mdBoard) holds(e *mdEvent, wi int) bool {
	if !e.in[wi] {
		return false
	}
	s, ok := b.start(wi)
	return !ok || mdFloorDiv(e.t, b.cfg.Windows[wi].BucketMs) >= s
}

// counts recomputes every item's count in window wi (-1: all).
func (b *mdBoard) counts(wi int) map[string]int64 {
	out := map[string]int64{}
	for i := range b.events {
		e := &b.events[i]
		if wi < 0 || b.holds(e, wi) {
			out[e.item] += e.delta
		}
	}
	return out
}

// liveState returns the all-time counts and the items with a bucket entry in
// a not-yet-expired bucket of some sliding window.
func (b *mdBoard) liveState() (all map[string]int64, entry map[string]bool) {
	all, entry = map[string]int64{}, map[string]bool{}
	for i := range b.events {
		e := &b.events[i]
		all[e.item] += e.delta
		for wi := range b.cfg.Windows {
			if b.holds(e, wi) {
				entry[e.item] = true
			}
		}
	}
	return all, entry
}

func (b *mdBoard) liveCount() int {
	all, entry := b.liveState()
	n := 0
	for it, c := range all {
		if c != 0 || entry[it] {
			n++
		}
	}
	return n
}

func mdRank(counts map[string]int64) []Item {
	var items []Item
	for it, c := range counts {
		if c > 0 {
			items = append(items, ex(it, c))
		}
	}
	slices.SortFunc(items, func(x, y Item) int {
		if x.Count != y.Count {
			if x.Count > y.Count {
				return -1
			}
			return 1
		}
		return strings.Compare(x.Item, y.Item)
	})
	return items
}

func (b *mdBoard) bounds(wi int) (start, end int64) {
	if !b.hasClock {
		return 0, 0
	}
	if wi >= 0 {
		s, _ := b.start(wi)
		start = s * b.cfg.Windows[wi].BucketMs
	}
	return start, b.clock
}

func (m *mdModel) setLogTime(ms int64) {
	prev := m.logMs
	if ms > m.logMs {
		m.logMs = ms
	}
	if m.logMs/60_000 != prev/60_000 {
		for id, p := range m.prods {
			if m.logMs-p.lastSeen > m.ttlMs {
				delete(m.prods, id)
			}
		}
	}
}

func (m *mdModel) advanceAll() {
	for _, b := range m.boards {
		b.advance(m.logMs)
	}
}

func mdEventsAt(d *pb.LeaderboardDeltas, i int) uint64 {
	if len(d.Events) > 0 && d.Events[i] > 0 {
		return uint64(d.Events[i])
	}
	return 1
}

func (m *mdModel) ingest(e *pb.IngestEntry) []*pb.Outcome {
	m.setLogTime(e.LeaderTimeMs)
	outs := make([]*pb.Outcome, len(e.Parts))
	for i, part := range e.Parts {
		seq := part.Sequence
		var p *mdProducer
		if part.ProducerId != "" {
			p = m.prods[part.ProducerId]
			if p == nil {
				p = &mdProducer{epoch: part.Epoch, outcomes: map[uint64]*pb.Outcome{}}
				m.prods[part.ProducerId] = p
			}
			p.lastSeen = m.logMs
			if part.Epoch < p.epoch {
				m.staleEpoch++
				outs[i] = &pb.Outcome{Sequence: seq, Status: pb.PartStatus_PART_STATUS_STALE_EPOCH}
				continue
			}
			if part.Epoch > p.epoch {
				*p = mdProducer{epoch: part.Epoch, outcomes: map[uint64]*pb.Outcome{}, lastSeen: m.logMs}
			}
			if p.any && seq <= p.high {
				if p.high-seq >= 256 {
					m.tooOld++
					outs[i] = &pb.Outcome{Sequence: seq, Status: pb.PartStatus_PART_STATUS_SEQUENCE_TOO_OLD}
					continue
				}
				if o, ok := p.outcomes[seq]; ok {
					m.duplicates++
					outs[i] = &pb.Outcome{Sequence: seq, Status: pb.PartStatus_PART_STATUS_DUPLICATE,
						Accepted: o.Accepted, Rejected: o.Rejected, Late: o.Late}
					continue
				}
			}
		}
		out := &pb.Outcome{Sequence: seq, Status: pb.PartStatus_PART_STATUS_APPLIED}
		for _, d := range part.Boards {
			m.applyDeltas(d, out)
		}
		if p != nil {
			if !p.any || seq > p.high {
				p.high, p.any = seq, true
				for s := range p.outcomes {
					if p.high-s >= 256 {
						delete(p.outcomes, s)
					}
				}
			}
			p.outcomes[seq] = out
		}
		outs[i] = out
	}
	m.advanceAll()
	return outs
}

func (m *mdModel) applyDeltas(d *pb.LeaderboardDeltas, out *pb.Outcome) {
	b := m.boards[d.Leaderboard]
	if b == nil || b.cfg.Incarnation != d.Incarnation {
		var n uint64
		for i := range d.Items {
			n += mdEventsAt(d, i)
		}
		m.rejectedStale += n
		out.Rejected += n
		return
	}
	nw := len(b.cfg.Windows)
	// The clock does not move inside an entry, so the live set is tracked
	// incrementally from one brute-force computation.
	var all map[string]int64
	var entry map[string]bool
	live := 0
	isLive := func(it string) bool { return all[it] != 0 || entry[it] }
	if b.cfg.MaxItems > 0 {
		all, entry = b.liveState()
		live = b.liveCount()
	}
	lateHere := make([]uint64, nw)
	for i, item := range d.Items {
		ev := mdEventsAt(d, i)
		t := m.logMs
		if s := d.EventTimesS[i]; s != 0 {
			t = s * 1000
		}
		wasLive := false
		if b.cfg.MaxItems > 0 {
			wasLive = isLive(item)
			if !wasLive && uint64(live) >= b.cfg.MaxItems {
				b.rejMI += ev
				out.Rejected += ev
				continue
			}
		}
		e := mdEvent{item: item, delta: d.Deltas[i], t: t, in: make([]bool, nw)}
		for wi := range nw {
			if s, ok := b.start(wi); ok && mdFloorDiv(t, b.cfg.Windows[wi].BucketMs) < s {
				lateHere[wi] += ev
			} else {
				e.in[wi] = true
			}
		}
		b.events = append(b.events, e)
		b.accepted += ev
		out.Accepted += ev
		if !b.hasMaxEv || t > b.maxEv {
			b.maxEv, b.hasMaxEv = t, true
		}
		if b.cfg.MaxItems > 0 {
			all[item] += e.delta
			if slices.Contains(e.in, true) {
				entry[item] = true
			}
			switch now := isLive(item); {
			case now && !wasLive:
				live++
			case !now && wasLive:
				live--
			}
		}
	}
	for wi, n := range lateHere {
		if n > 0 {
			b.late[wi] += n
			out.Late = append(out.Late, &pb.LateCount{Leaderboard: b.cfg.Name, Window: uint32(wi), Events: n})
		}
	}
}

func (m *mdModel) tick(t *pb.Tick) {
	m.setLogTime(t.LeaderTimeMs)
	for _, w := range t.Watermarks {
		if b := m.boards[w.Leaderboard]; b != nil && b.cfg.Incarnation == w.Incarnation && (!b.hasMaxEv || w.MaxEventTimeMs > b.maxEv) {
			b.maxEv, b.hasMaxEv = w.MaxEventTimeMs, true
		}
	}
	m.advanceAll()
}

// mdDefaultBucket: the widest nice bucket dividing d into at least 24 buckets (1 s if none).
func mdDefaultBucket(d int64) int64 {
	best := int64(1000)
	for _, s := range []int64{1, 5, 10, 15, 30, 60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400} {
		if b := s * 1000; d%b == 0 && d/b >= 24 {
			best = b
		}
	}
	return best
}

func mdNormalize(c *pb.LeaderboardConfig) error {
	if c.Name == "" || c.Incarnation == 0 {
		return errors.New("model: bad name or incarnation")
	}
	switch c.Mode {
	case pb.Mode_MODE_UNSPECIFIED:
		c.Mode = pb.Mode_MODE_EXACT
	case pb.Mode_MODE_EXACT:
	default:
		return errors.New("model: mode")
	}
	switch c.Clock {
	case pb.Clock_CLOCK_UNSPECIFIED:
		c.Clock = pb.Clock_CLOCK_WALL
	case pb.Clock_CLOCK_WALL, pb.Clock_CLOCK_EVENT:
	default:
		return errors.New("model: clock")
	}
	if c.KMax == 0 {
		c.KMax = 1000
	}
	if c.KMax > 100_000 || c.AllowedLatenessMs < 0 {
		return errors.New("model: k_max or lateness")
	}
	seen := map[int64]bool{}
	for _, w := range c.Windows {
		d := w.DurationMs
		if d <= 0 || d%1000 != 0 || seen[d] {
			return errors.New("model: window")
		}
		seen[d] = true
		if w.BucketMs == 0 {
			w.BucketMs = mdDefaultBucket(d)
		}
		if w.BucketMs <= 0 || w.BucketMs%1000 != 0 || d%w.BucketMs != 0 || d/w.BucketMs > 10_000 {
			return errors.New("model: bucket")
		}
	}
	return nil
}

func (m *mdModel) config(in *pb.LeaderboardConfig) error {
	err := m.applyConfig(proto.Clone(in).(*pb.LeaderboardConfig))
	if err != nil {
		m.configRejected++
	}
	return err
}

func (m *mdModel) applyConfig(c *pb.LeaderboardConfig) error {
	if err := mdNormalize(c); err != nil {
		return err
	}
	if tomb, ok := m.tombs[c.Name]; ok && c.Incarnation <= tomb {
		return errors.New("model: dropped incarnation")
	}
	b := m.boards[c.Name]
	switch {
	case b == nil || c.Incarnation > b.cfg.Incarnation:
		nb := &mdBoard{cfg: c, late: make([]uint64, len(c.Windows))}
		nb.advance(m.logMs)
		m.boards[c.Name] = nb
	case c.Incarnation < b.cfg.Incarnation:
		return errors.New("model: older incarnation")
	case c.Version <= b.cfg.Version:
		return nil
	default:
		if c.Mode != b.cfg.Mode || c.Clock != b.cfg.Clock || len(c.Windows) != len(b.cfg.Windows) {
			return errors.New("model: immutable fields changed")
		}
		for i, w := range c.Windows {
			if w.DurationMs != b.cfg.Windows[i].DurationMs || w.BucketMs != b.cfg.Windows[i].BucketMs {
				return errors.New("model: windows changed")
			}
		}
		b.cfg = c
		b.advance(m.logMs)
	}
	return nil
}

func (m *mdModel) drop(d *pb.DropLeaderboard) {
	if b := m.boards[d.Name]; b != nil && d.Incarnation >= b.cfg.Incarnation {
		delete(m.boards, d.Name)
	}
	if d.Incarnation > m.tombs[d.Name] {
		m.tombs[d.Name] = d.Incarnation
	}
}

func (m *mdModel) sortedBoards() []string {
	var out []string
	for n := range m.boards {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// ---------------------------------------------------------------------------
// generator

const mdBaseMs = int64(1_700_000_000_000)

type mdBoardGen struct {
	name  string
	large bool
	heavy bool // deltas mostly 5..30: many items above 16 outside the heap
	items []string
}

// mdEntry is one generated log entry with the model's expected result.
type mdEntry struct {
	log  *raft.Log
	want any // []*pb.Outcome, error (config), ChecksumRecord without digest, or nil
	what string
}

type mdGen struct {
	rt     *rapid.T
	m      *mdModel
	boards []*mdBoardGen
	ghost  *mdBoardGen
	now    int64 // the proposing leader's clock
	ckID   uint64
	maxInc map[string]uint64
	seen   map[string]map[string]bool // board name -> items ever sent
}

var mdItemPrefixes = []string{"", "a", "B", "é", "a/b", "zz", "Z"}

func mdItemName(i int) string {
	return mdItemPrefixes[i%len(mdItemPrefixes)] + strconv.Itoa(i/len(mdItemPrefixes))
}

func (g *mdGen) draw(lo, hi int, label string) int {
	return rapid.IntRange(lo, hi).Draw(g.rt, label)
}

// pct draws a nearly uniform number in [0, 100) for weighted choices; rapid's
// integer ranges lean towards small values, which would starve the last branches.
func (g *mdGen) pct(label string) int {
	v := 0
	for _, b := range rapid.SliceOfN(rapid.Bool(), 7, 7).Draw(g.rt, label) {
		v <<= 1
		if b {
			v |= 1
		}
	}
	return v * 100 / 128
}

func (g *mdGen) leaderTime() int64 {
	switch k := g.pct("timeStep"); {
	case k < 55:
		g.now += int64(g.draw(0, 1500, "ms"))
	case k < 75:
		g.now += int64(g.draw(1500, 15_000, "ms"))
	case k < 85:
		g.now += int64(g.draw(15_000, 120_000, "ms"))
	case k < 91:
		g.now += rapid.SampledFrom([]int64{5 * 60_000, 3_600_000, 25 * 3_600_000, 8 * 24 * 3_600_000}).Draw(g.rt, "jump") +
			int64(g.draw(0, 999, "ms"))
	default: // a leader with a slower clock: entries carry older times until it catches up
		g.now -= int64(g.draw(1, 90_000, "back"))
	}
	return g.now
}

// eventTimeS draws an event time in seconds; 0 means untimed.
func (g *mdGen) eventTimeS() int64 {
	base := g.now / 1000
	switch k := g.pct("evTime"); {
	case k < 45:
		return 0
	case k < 80:
		return base - int64(g.draw(0, 15, "s"))
	case k < 90:
		return base - int64(g.draw(15, 90, "s"))
	case k < 95:
		return base - int64(g.draw(90, 200_000, "s"))
	default:
		return base + int64(g.draw(1, 4000, "s"))
	}
}

func (g *mdGen) delta(gb *mdBoardGen) int64 {
	k := g.pct("delta")
	if gb.heavy && k < 70 {
		return int64(g.draw(5, 30, "d"))
	}
	switch {
	case k < 45:
		return 1
	case k < 62:
		return int64(g.draw(2, 6, "d"))
	case k < 70:
		return int64(g.draw(10, 40, "d"))
	case k < 74:
		return int64(g.draw(100, 5000, "d"))
	case k < 91:
		return -int64(g.draw(1, 5, "d"))
	case k < 95:
		return -int64(g.draw(10, 200, "d"))
	default:
		return 0
	}
}

var mdWindowSets = [][]*pb.WindowSpec{
	{{DurationMs: 10_000, BucketMs: 1000}, {DurationMs: 60_000, BucketMs: 5000}},
	{{DurationMs: 10_000, BucketMs: 1000}},
	nil, // default windows with default buckets, filled in below
	{},  // only "all"
	{{DurationMs: 60_000, BucketMs: 5000}, {DurationMs: 3_600_000}},
	{{DurationMs: 30_000}, {DurationMs: 10_000, BucketMs: 2000}},
}

func (g *mdGen) drawWindows() []*pb.WindowSpec {
	i := g.draw(0, len(mdWindowSets)-1, "windows")
	if mdWindowSets[i] == nil {
		var ws []*pb.WindowSpec
		for _, d := range DefaultWindows {
			ws = append(ws, &pb.WindowSpec{DurationMs: d.Milliseconds()})
		}
		return ws
	}
	var ws []*pb.WindowSpec
	for _, w := range mdWindowSets[i] {
		ws = append(ws, proto.Clone(w).(*pb.WindowSpec))
	}
	return ws
}

func (g *mdGen) drawKMax(gb *mdBoardGen) uint32 {
	if gb.large {
		return uint32(g.draw(3, 10, "kmax"))
	}
	return rapid.SampledFrom([]uint32{1, 2, 3, 5, 8, 0}).Draw(g.rt, "kmax")
}

func (g *mdGen) drawMaxItems(gb *mdBoardGen) uint64 {
	if g.pct("maxItemsOn")/10 < 7 {
		return 0
	}
	if gb.large {
		return uint64(g.draw(30, 150, "maxItems"))
	}
	return uint64(g.draw(2, 20, "maxItems"))
}

func (g *mdGen) drawLateness() int64 {
	return rapid.SampledFrom([]int64{0, 0, 1000, 5000, 30_000}).Draw(g.rt, "lateness")
}

func (g *mdGen) drawConfig(gb *mdBoardGen, inc uint64) *pb.LeaderboardConfig {
	c := &pb.LeaderboardConfig{Name: gb.name, Incarnation: inc, Version: 1, Windows: g.drawWindows(),
		KMax: g.drawKMax(gb), MaxItems: g.drawMaxItems(gb), AllowedLatenessMs: g.drawLateness()}
	switch g.pct("clock") / 10 {
	case 0, 1, 2, 3:
		c.Clock = pb.Clock_CLOCK_WALL
	case 4, 5, 6, 7, 8:
		c.Clock = pb.Clock_CLOCK_EVENT
	default: // unspecified: wall
	}
	if g.pct("mode") < 20 {
		c.Mode = pb.Mode_MODE_EXACT
	}
	return c
}

func (g *mdGen) noteInc(name string, inc uint64) {
	if inc > g.maxInc[name] {
		g.maxInc[name] = inc
	}
}

// curInc is the incarnation producers would use: the live one, else the last one created.
func (g *mdGen) curInc(name string) uint64 {
	if b := g.m.boards[name]; b != nil {
		return b.cfg.Incarnation
	}
	return g.maxInc[name]
}

func (g *mdGen) pickBoard() *mdBoardGen {
	return g.boards[g.draw(0, len(g.boards)-1, "board")]
}

func (g *mdGen) boardDeltas() *pb.LeaderboardDeltas {
	k := g.pct("target")
	gb := g.pickBoard()
	inc := g.curInc(gb.name)
	switch {
	case k >= 95:
		gb, inc = g.ghost, 1
	case k >= 90:
		inc++
	case k >= 86 && inc > 0:
		inc--
	}
	d := &pb.LeaderboardDeltas{Leaderboard: gb.name, Incarnation: inc}
	n := 1 + g.pct("n")*8/100
	if gb.large {
		n = 1 + g.pct("n")*30/100
	}
	if g.pct("empty") < 3 {
		n = 0
	}
	g.fill(d, gb, n, false)
	return d
}

// bulkDeltas is a large block for a large leaderboard: hundreds of positive
// items push most of them out of the heap into the count classes.
func (g *mdGen) bulkDeltas(gb *mdBoardGen) *pb.LeaderboardDeltas {
	d := &pb.LeaderboardDeltas{Leaderboard: gb.name, Incarnation: g.curInc(gb.name)}
	g.fill(d, gb, 40+g.pct("bulkN")*110/100, true)
	return d
}

// fill appends n deltas for gb; spread picks items uniformly most of the time.
func (g *mdGen) fill(d *pb.LeaderboardDeltas, gb *mdBoardGen, n int, spread bool) {
	withEvents := g.pct("withEvents") < 20
	hot, warm := min(len(gb.items), 4), min(len(gb.items), 40)
	for range n {
		var item string
		k := g.pct("pick")
		if spread && k >= 20 {
			k = 90
		} else if gb.heavy && k >= 50 {
			k = 30 // heavy boards keep hitting the warm items: counts above 16 outside the heap
		}
		switch k / 10 {
		case 0, 1:
			item = gb.items[g.draw(0, hot-1, "hotItem")]
		case 2, 3, 4:
			item = gb.items[g.draw(0, warm-1, "warmItem")] // many items above 16 in large boards
		default:
			item = gb.items[g.draw(0, len(gb.items)-1, "item")]
		}
		g.seen[gb.name][item] = true
		d.Items = append(d.Items, item)
		d.Deltas = append(d.Deltas, g.delta(gb))
		d.EventTimesS = append(d.EventTimesS, g.eventTimeS())
		if withEvents {
			d.Events = append(d.Events, uint32(g.draw(0, 3, "events")))
		}
	}
}

func (g *mdGen) part() *pb.ProducerPart {
	p := &pb.ProducerPart{}
	if g.pct("anon")/10 < 2 {
		p.Sequence = uint64(g.draw(0, 5, "seq"))
	} else {
		p.ProducerId = "p" + strconv.Itoa(g.draw(1, 3, "producer"))
		epoch, high, any := uint64(1), uint64(0), false
		if row := g.m.prods[p.ProducerId]; row != nil {
			epoch, high, any = row.epoch, row.high, row.any
		}
		switch g.pct("epoch") / 5 {
		case 0:
			epoch++
		case 1:
			if epoch > 0 {
				epoch--
			}
		}
		p.Epoch = epoch
		if !any {
			p.Sequence = uint64(g.draw(0, 3, "seq"))
		} else {
			switch k := g.pct("seqKind"); {
			case k < 45:
				p.Sequence = high + 1
			case k < 58:
				p.Sequence = high - uint64(g.draw(0, int(min(high, 6)), "dup"))
			case k < 66:
				p.Sequence = high + uint64(g.draw(2, 30, "gap"))
			case k < 78 || high < 256:
				p.Sequence = high + uint64(g.draw(250, 400, "jump"))
			case k < 86:
				p.Sequence = high - uint64(g.draw(0, 255, "inWindow"))
			case k < 90:
				p.Sequence = high - 255 // the oldest sequence still remembered
			case k < 95:
				p.Sequence = high - 256 // the first one forgotten
			default:
				p.Sequence = high - uint64(g.draw(256, int(min(high, 600)), "tooOld"))
			}
		}
	}
	nb := 1
	if k := g.pct("nBoards") / 10; k == 0 {
		nb = 0
	} else if k >= 8 {
		nb = 2
	}
	for range nb {
		p.Boards = append(p.Boards, g.boardDeltas())
	}
	return p
}

func (g *mdGen) ingestEntry() *pb.IngestEntry {
	e := &pb.IngestEntry{LeaderTimeMs: g.leaderTime()}
	var large []*mdBoardGen
	for _, gb := range g.boards {
		if gb.large {
			large = append(large, gb)
		}
	}
	if len(large) > 0 && g.pct("bulk") < 20 {
		p := g.part()
		p.Boards = []*pb.LeaderboardDeltas{g.bulkDeltas(large[g.draw(0, len(large)-1, "bulkBoard")])}
		e.Parts = append(e.Parts, p)
		return e
	}
	n := 1
	if g.pct("multiPart") < 25 {
		n = g.draw(0, 4, "parts")
	}
	for range n {
		e.Parts = append(e.Parts, g.part())
	}
	return e
}

func (g *mdGen) tickEntry() *pb.Tick {
	t := &pb.Tick{LeaderTimeMs: g.leaderTime()}
	for range g.draw(0, 2, "watermarks") {
		gb := g.pickBoard()
		inc := g.curInc(gb.name)
		if g.pct("wmInc")/10 == 0 {
			inc++
		}
		ms := g.now + int64(g.draw(-40_000, 3000, "wm"))
		if g.pct("wmFuture")/5 == 0 {
			ms = g.now + int64(g.draw(60_000, 10_000_000, "wm"))
		}
		t.Watermarks = append(t.Watermarks, &pb.Watermark{Leaderboard: gb.name, Incarnation: inc, MaxEventTimeMs: ms})
	}
	return t
}

func (g *mdGen) configEntry() *pb.LeaderboardConfig {
	gb := g.pickBoard()
	live := g.m.boards[gb.name]
	top := max(g.maxInc[gb.name], g.m.tombs[gb.name])
	k := g.pct("configKind")
	switch {
	case live != nil && k < 45: // update of the limits
		c := proto.Clone(live.cfg).(*pb.LeaderboardConfig)
		c.Version += uint64(g.draw(1, 2, "version"))
		switch g.pct("change") / 25 {
		case 0:
			c.KMax = g.drawKMax(gb)
		case 1:
			c.MaxItems = g.drawMaxItems(gb)
		case 2:
			c.AllowedLatenessMs = g.drawLateness()
		default:
			c.KMax, c.MaxItems, c.AllowedLatenessMs = g.drawKMax(gb), g.drawMaxItems(gb), g.drawLateness()
		}
		return c
	case live != nil && k < 52: // replayed or older version: no effect
		c := proto.Clone(live.cfg).(*pb.LeaderboardConfig)
		c.Version -= uint64(g.draw(0, int(min(c.Version, 2)), "older"))
		c.KMax = g.drawKMax(gb)
		return c
	case live != nil && k < 58: // an update that tries to change clock or windows
		c := proto.Clone(live.cfg).(*pb.LeaderboardConfig)
		c.Version++
		if g.draw(0, 1, "what") == 0 {
			if c.Clock == pb.Clock_CLOCK_WALL {
				c.Clock = pb.Clock_CLOCK_EVENT
			} else {
				c.Clock = pb.Clock_CLOCK_WALL
			}
		} else if len(c.Windows) > 0 && g.draw(0, 1, "bucket") == 0 {
			c.Windows[0].BucketMs = c.Windows[0].DurationMs
		} else {
			c.Windows = append(c.Windows, &pb.WindowSpec{DurationMs: 120_000})
		}
		return c
	case top > 1 && k < 66: // an older or dropped incarnation
		return g.drawConfig(gb, uint64(g.draw(1, int(top-1), "oldInc")))
	case top > 0 && k < 68: // the live or last dropped incarnation again, version 1
		return g.drawConfig(gb, top)
	case k < 74: // invalid
		c := g.drawConfig(gb, top+1)
		switch g.draw(0, 5, "invalid") {
		case 0:
			c.Windows = append(c.Windows, &pb.WindowSpec{DurationMs: 1500})
		case 1:
			c.KMax = MaxKMax + 1
		case 2:
			c.Windows = append(c.Windows, &pb.WindowSpec{DurationMs: 20_000, BucketMs: 3000})
		case 3:
			c.AllowedLatenessMs = -1
		case 4:
			c.Windows = []*pb.WindowSpec{{DurationMs: 10_000}, {DurationMs: 10_000, BucketMs: 1000}}
		default:
			c.Incarnation = 0
		}
		return c
	default: // a fresh incarnation
		return g.drawConfig(gb, top+1)
	}
}

func (g *mdGen) dropEntry() *pb.DropLeaderboard {
	gb := g.pickBoard()
	top := max(g.maxInc[gb.name], g.m.tombs[gb.name])
	inc := top
	if live := g.m.boards[gb.name]; live != nil {
		inc = live.cfg.Incarnation
	}
	switch g.pct("dropInc") / 10 {
	case 0:
		inc++
	case 1:
		if inc > 0 {
			inc--
		}
	}
	return &pb.DropLeaderboard{Name: gb.name, Incarnation: inc}
}

// entry generates one log entry and applies it to the model.
func (g *mdGen) entry() mdEntry {
	m := g.m
	m.index++
	l := &raft.Log{Index: m.index, Term: 1, Type: raft.LogCommand}
	var e mdEntry
	switch k := g.pct("entryKind"); {
	case k < 55:
		in := g.ingestEntry()
		l.Data = mustEncode(EncodeIngest(in))
		e = mdEntry{want: m.ingest(in), what: "ingest " + in.String()}
	case k < 70:
		t := g.tickEntry()
		l.Data = mustEncode(EncodeTick(t))
		m.tick(t)
		e = mdEntry{what: "tick " + t.String()}
	case k < 81:
		c := g.configEntry()
		g.noteInc(c.Name, c.Incarnation)
		l.Data = mustEncode(EncodeConfig(c))
		e = mdEntry{want: m.config(c), what: "config " + c.String()}
	case k < 84:
		d := g.dropEntry()
		g.noteInc(d.Name, d.Incarnation)
		l.Data = mustEncode(EncodeDrop(d))
		m.drop(d)
		e = mdEntry{what: "drop " + d.String()}
	case k < 90:
		g.ckID++
		c := &pb.Checksum{Id: g.ckID, LeaderTimeMs: g.leaderTime()}
		l.Data = mustEncode(EncodeChecksum(c))
		m.setLogTime(c.LeaderTimeMs)
		m.advanceAll()
		e = mdEntry{want: ChecksumRecord{ID: c.Id, Index: l.Index}, what: "checksum " + c.String()}
	case k < 94:
		l.Type = raft.LogConfiguration
		l.Data = []byte{0, 1, 2, 3}
		e = mdEntry{what: "raft configuration"}
	case k < 96:
		l.Type = raft.LogNoop
		e = mdEntry{what: "raft noop"}
	default:
		l.Data = EncodeRaw(CommandType(200), true, []byte("from the future"))
		m.ignored++
		e = mdEntry{what: "ignorable unknown command"}
	}
	e.log = l
	return e
}

// ---------------------------------------------------------------------------
// comparing the FSM with the model

type mdSink struct{ bytes.Buffer }

func (s *mdSink) ID() string    { return "mem" }
func (s *mdSink) Cancel() error { return nil }
func (s *mdSink) Close() error  { return nil }

func mdPersist(s raft.FSMSnapshot) ([]byte, error) {
	var sink mdSink
	err := s.Persist(&sink)
	s.Release()
	return sink.Bytes(), err
}

func mdSnapshot(f *FSM) ([]byte, error) {
	s, err := f.Snapshot()
	if err != nil {
		return nil, err
	}
	return mdPersist(s)
}

func mdRestore(opts Options, snap []byte) (*FSM, error) {
	f := New(opts)
	return f, f.Restore(io.NopCloser(bytes.NewReader(snap)))
}

// mdCompareWant checks one Apply result against the model's expectation.
func mdCompareWant(got any, e mdEntry) error {
	switch want := e.want.(type) {
	case []*pb.Outcome:
		res, ok := got.(*IngestResult)
		if !ok {
			return fmt.Errorf("result %T %v, want *IngestResult", got, got)
		}
		if len(res.Outcomes) != len(want) {
			return fmt.Errorf("%d outcomes, want %d", len(res.Outcomes), len(want))
		}
		for i := range want {
			if !proto.Equal(res.Outcomes[i], want[i]) {
				return fmt.Errorf("outcome %d: got %v, want %v", i, res.Outcomes[i], want[i])
			}
		}
	case error:
		if err, ok := got.(error); !ok || err == nil {
			return fmt.Errorf("config result %v, want an error (model: %v)", got, want)
		}
	case ChecksumRecord:
		rec, ok := got.(ChecksumRecord)
		if !ok || rec.ID != want.ID || rec.Index != want.Index {
			return fmt.Errorf("checksum result %v, want id %d index %d", got, want.ID, want.Index)
		}
	case nil:
		if got != nil {
			return fmt.Errorf("result %T %v, want nil", got, got)
		}
	}
	return nil
}

// mdSameResult checks that two replicas returned the same result for one entry.
func mdSameResult(a, b any) bool {
	switch x := a.(type) {
	case *IngestResult:
		y, ok := b.(*IngestResult)
		if !ok || len(x.Outcomes) != len(y.Outcomes) {
			return false
		}
		for i := range x.Outcomes {
			if !proto.Equal(x.Outcomes[i], y.Outcomes[i]) {
				return false
			}
		}
		return true
	case error:
		y, ok := b.(error)
		return ok && x.Error() == y.Error()
	default:
		return a == b
	}
}

func mdDurations(b *mdBoard) []time.Duration {
	ds := []time.Duration{0}
	for _, w := range b.cfg.Windows {
		ds = append(ds, time.Duration(w.DurationMs)*time.Millisecond)
	}
	return ds
}

// mdCheck compares every answer of f with the model.
func mdCheck(rt *rapid.T, f *FSM, g *mdGen, who string) {
	rt.Helper()
	m := g.m
	boardNames := m.sortedBoards()

	cfgs := f.Leaderboards()
	if len(cfgs) != len(boardNames) {
		rt.Fatalf("%s: %d leaderboards, want %v", who, len(cfgs), boardNames)
	}
	for i, c := range cfgs {
		if want := m.boards[boardNames[i]].cfg; !proto.Equal(c, want) {
			rt.Fatalf("%s: leaderboard config\ngot  %v\nwant %v", who, c, want)
		}
	}

	st := f.Stats()
	type ctr struct {
		name      string
		got, want uint64
	}
	for _, c := range []ctr{
		{"AppliedIndex", st.AppliedIndex, m.index},
		{"LogTimeMs", uint64(st.LogTimeMs), uint64(m.logMs)},
		{"Producers", uint64(st.Producers), uint64(len(m.prods))},
		{"Duplicates", st.Duplicates, m.duplicates},
		{"TooOld", st.TooOld, m.tooOld},
		{"StaleEpoch", st.StaleEpoch, m.staleEpoch},
		{"RejectedStale", st.RejectedStale, m.rejectedStale},
		{"IgnoredCommands", st.IgnoredCommands, m.ignored},
		{"ConfigRejected", st.ConfigRejected, m.configRejected},
		{"AppliedIndex()", f.AppliedIndex(), m.index},
	} {
		if c.got != c.want {
			rt.Fatalf("%s: Stats %s = %d, want %d", who, c.name, c.got, c.want)
		}
	}
	if len(st.Leaderboards) != len(boardNames) {
		rt.Fatalf("%s: Stats has %d leaderboards, want %d", who, len(st.Leaderboards), len(boardNames))
	}

	all := append(slices.Clone(g.boards), g.ghost)
	for _, gb := range all {
		b := m.boards[gb.name]
		if b == nil {
			if _, err := f.TopK(gb.name, 0, 1); !errors.Is(err, ErrUnknownLeaderboard) {
				rt.Fatalf("%s: TopK(%q) of a missing leaderboard: err %v, want ErrUnknownLeaderboard", who, gb.name, err)
			}
			if _, err := f.Count(gb.name, "x", 0); !errors.Is(err, ErrUnknownLeaderboard) {
				rt.Fatalf("%s: Count(%q) of a missing leaderboard: err %v, want ErrUnknownLeaderboard", who, gb.name, err)
			}
			continue
		}
		mdCheckBoard(rt, f, g, b, gb, who)
		i, _ := slices.BinarySearch(boardNames, gb.name)
		mdCheckBoardStats(rt, st.Leaderboards[i], b, who)
	}
}

func mdCheckBoard(rt *rapid.T, f *FSM, g *mdGen, b *mdBoard, gb *mdBoardGen, who string) {
	rt.Helper()
	name := gb.name
	kmax := int(b.cfg.KMax)
	items := []string{"never-seen"}
	for it := range g.seen[name] {
		items = append(items, it)
	}
	for wi, d := range mdDurations(b) {
		wi-- // -1: all
		ranked := mdRank(b.counts(wi))
		wantStart, wantEnd := b.bounds(wi)
		ks := []int{1, 2, 3, kmax / 2, kmax - 1, kmax, len(ranked), len(ranked) + 1}
		for _, k := range ks {
			if k < 1 || k > kmax {
				continue
			}
			res, err := f.TopK(name, d, k)
			if err != nil {
				rt.Fatalf("%s: TopK(%q, %v, %d): %v", who, name, d, k, err)
			}
			want := ranked[:min(k, len(ranked))]
			if !slices.Equal(res.Items, want) {
				rt.Fatalf("%s: TopK(%q, %v, %d) (k_max %d)\ngot  %v\nwant %v", who, name, d, k, kmax, res.Items, want)
			}
			if res.Leaderboard != name || res.Incarnation != b.cfg.Incarnation || res.Window != d || res.AppliedIndex != g.m.index {
				rt.Fatalf("%s: TopK(%q, %v, %d) header %+v, want incarnation %d applied %d", who, name, d, k, res, b.cfg.Incarnation, g.m.index)
			}
			if res.WindowStartMs != wantStart || res.WindowEndMs != wantEnd {
				rt.Fatalf("%s: TopK(%q, %v) window [%d, %d], want [%d, %d]", who, name, d, res.WindowStartMs, res.WindowEndMs, wantStart, wantEnd)
			}
			if wi >= 0 && b.hasClock {
				bk := b.cfg.Windows[wi].BucketMs
				if res.WindowStartMs%bk != 0 || res.WindowStartMs > res.WindowEndMs || res.WindowEndMs-res.WindowStartMs >= d.Milliseconds() {
					rt.Fatalf("%s: TopK(%q, %v) window [%d, %d] is not a bucket-aligned span shorter than the window",
						who, name, d, res.WindowStartMs, res.WindowEndMs)
				}
			}
		}
		for _, k := range []int{0, -1, kmax + 1} {
			if _, err := f.TopK(name, d, k); !errors.Is(err, ErrInvalidK) {
				rt.Fatalf("%s: TopK(%q, %v, %d) with k_max %d: err %v, want ErrInvalidK", who, name, d, k, kmax, err)
			}
		}
		counts := b.counts(wi)
		for _, it := range items {
			res, err := f.Count(name, it, d)
			if err != nil {
				rt.Fatalf("%s: Count(%q, %q, %v): %v", who, name, it, d, err)
			}
			if res.Count != counts[it] || res.WindowStartMs != wantStart || res.WindowEndMs != wantEnd || res.AppliedIndex != g.m.index {
				rt.Fatalf("%s: Count(%q, %q, %v) = %+v, want count %d window [%d, %d] applied %d",
					who, name, it, d, res, counts[it], wantStart, wantEnd, g.m.index)
			}
		}
	}
	if _, err := f.TopK(name, 7*time.Second, 1); !errors.Is(err, ErrUnknownWindow) {
		rt.Fatalf("%s: TopK(%q, 7s): err %v, want ErrUnknownWindow", who, name, err)
	}
	if _, err := f.Count(name, "x", 7*time.Second); !errors.Is(err, ErrUnknownWindow) {
		rt.Fatalf("%s: Count(%q, 7s): err %v, want ErrUnknownWindow", who, name, err)
	}
}

func mdCheckBoardStats(rt *rapid.T, ls LeaderboardStats, b *mdBoard, who string) {
	rt.Helper()
	_, end := b.bounds(-1)
	if ls.Name != b.cfg.Name || ls.Incarnation != b.cfg.Incarnation || ls.Accepted != b.accepted ||
		ls.RejectedMaxItems != b.rejMI || ls.DistinctItems != b.liveCount() || ls.WindowEndMs != end {
		rt.Fatalf("%s: Stats of %q: name %q inc %d accepted %d rejectedMaxItems %d distinct %d end %d; "+
			"want inc %d accepted %d rejectedMaxItems %d distinct %d end %d", who, b.cfg.Name,
			ls.Name, ls.Incarnation, ls.Accepted, ls.RejectedMaxItems, ls.DistinctItems, ls.WindowEndMs,
			b.cfg.Incarnation, b.accepted, b.rejMI, b.liveCount(), end)
	}
	if len(ls.Windows) != len(b.cfg.Windows)+1 {
		rt.Fatalf("%s: Stats of %q: %d windows, want %d", who, b.cfg.Name, len(ls.Windows), len(b.cfg.Windows)+1)
	}
	for i, ws := range ls.Windows {
		wi := i - 1
		pos := len(mdRank(b.counts(wi)))
		var late uint64
		var dur, bucket time.Duration
		if wi >= 0 {
			late = b.late[wi]
			dur = time.Duration(b.cfg.Windows[wi].DurationMs) * time.Millisecond
			bucket = time.Duration(b.cfg.Windows[wi].BucketMs) * time.Millisecond
		}
		if ws.PositiveItems != pos || ws.LateDropped != late || ws.Window != dur || ws.Bucket != bucket {
			rt.Fatalf("%s: Stats of %q window %v: positive %d late %d (window %v bucket %v), want positive %d late %d",
				who, b.cfg.Name, dur, ws.PositiveItems, ws.LateDropped, ws.Window, ws.Bucket, pos, late)
		}
	}
}

// mdCheckStructure checks the internal invariants of every window of f.
func mdCheckStructure(rt *rapid.T, f *FSM, who string) {
	rt.Helper()
	f.mu.RLock()
	defer f.mu.RUnlock()
	if err := f.st.check(); err != nil {
		rt.Fatalf("%s: %v", who, err)
	}
	for _, name := range f.st.sortedBoards() {
		lb, ok := f.st.boards[name].counts.(*exactBoard)
		if !ok {
			continue
		}
		for wi, w := range append([]*window{lb.all}, lb.wins...) {
			if err := mdCertainAtLeast(w); err != nil {
				rt.Fatalf("%s: leaderboard %q window %d: %v", who, name, wi-1, err)
			}
		}
	}
}

// mdCertainAtLeast checks settle's subtree walk against the full scan at
// every target from 0 to one past the heap, so both of its early exits are
// exercised.
func mdCertainAtLeast(w *window) error {
	n := w.certainCount()
	for t := 0; t <= len(w.heap)+1; t++ {
		if got, want := w.certainAtLeast(t), n >= t; got != want {
			return fmt.Errorf("certainAtLeast(%d) = %v with %d of %d heap members certain", t, got, n, len(w.heap))
		}
	}
	return nil
}

// ---------------------------------------------------------------------------
// the property

type mdHeld struct {
	snap raft.FSMSnapshot
	want []byte
}

func TestModelFSM(t *testing.T) {
	rapid.Check(t, mdRunCase)
}

func mdRunCase(rt *rapid.T) {
	tune := defaultTuning
	tune.trackedMin = rapid.SampledFrom([]int{-1, 0, 1, 2, 5, 20}).Draw(rt, "trackedMin")
	tune.foldMin = rapid.SampledFrom([]int{0, 2, 7, 1 << 40}).Draw(rt, "foldMin")
	ttl := rapid.SampledFrom([]time.Duration{2 * time.Minute, 10 * time.Minute, DefaultDedupeTTL}).Draw(rt, "ttl")
	opts := Options{DedupeTTL: ttl, tune: &tune}
	m := newMdModel(ttl.Milliseconds())
	g := &mdGen{rt: rt, m: m, now: mdBaseMs, maxInc: map[string]uint64{}, seen: map[string]map[string]bool{}}
	nb := rapid.IntRange(1, 4).Draw(rt, "boards")
	for i := range nb {
		gb := &mdBoardGen{name: "lb" + strconv.Itoa(i), large: rapid.IntRange(0, 3).Draw(rt, "large") == 0}
		n := rapid.IntRange(3, 40).Draw(rt, "alphabet")
		if gb.large {
			n = rapid.IntRange(100, 400).Draw(rt, "alphabet")
			gb.heavy = rapid.Bool().Draw(rt, "heavy")
		}
		for j := range n {
			gb.items = append(gb.items, mdItemName(j))
		}
		g.boards = append(g.boards, gb)
		g.seen[gb.name] = map[string]bool{}
	}
	g.ghost = &mdBoardGen{name: "ghost", items: []string{"g1", "g2"}}
	g.seen["ghost"] = map[string]bool{}

	primary, shadow := New(opts), New(opts) // shadow applies one entry per call
	var mirror *FSM                         // restored from a snapshot, then fed the same log
	var held *mdHeld

	apply := func(entries []mdEntry) {
		logs := make([]*raft.Log, len(entries))
		for i, e := range entries {
			logs[i] = e.log
		}
		// primary: random batch boundaries
		var got []any
		for start := 0; start < len(logs); {
			end := start + 1
			for end < len(logs) && rapid.Bool().Draw(rt, "sameBatch") {
				end++
			}
			got = append(got, primary.ApplyBatch(logs[start:end])...)
			start = end
		}
		for i, e := range entries {
			if err := mdCompareWant(got[i], e); err != nil {
				rt.Fatalf("entry %d (%s): %v", e.log.Index, e.what, err)
			}
			if r := shadow.Apply(e.log); !mdSameResult(got[i], r) {
				rt.Fatalf("entry %d (%s): shadow result %v, primary %v", e.log.Index, e.what, r, got[i])
			}
		}
		if mirror != nil {
			for i, r := range mirror.ApplyBatch(logs) {
				if !mdSameResult(got[i], r) {
					rt.Fatalf("entry %d (%s): restored replica result %v, primary %v", entries[i].log.Index, entries[i].what, r, got[i])
				}
			}
		}
	}

	sameSnapshots := func(when string) {
		want, err := mdSnapshot(primary)
		if err != nil {
			rt.Fatalf("%s: snapshot primary: %v", when, err)
		}
		for _, o := range []struct {
			name string
			f    *FSM
		}{{"shadow (one entry per batch)", shadow}, {"restored replica", mirror}} {
			if o.f == nil {
				continue
			}
			got, err := mdSnapshot(o.f)
			if err != nil {
				rt.Fatalf("%s: snapshot %s: %v", when, o.name, err)
			}
			if !bytes.Equal(got, want) {
				rt.Fatalf("%s: snapshot of %s (%d bytes) differs from the primary's (%d bytes)", when, o.name, len(got), len(want))
			}
		}
	}

	// Persist a held snapshot while the FSM keeps applying: copy-on-write must
	// keep it identical to the bytes taken when it was captured.
	persistHeld := func(during func()) {
		if held == nil {
			during()
			return
		}
		type result struct {
			b   []byte
			err error
		}
		done := make(chan result, 1)
		h := held
		held = nil
		go func() {
			b, err := mdPersist(h.snap)
			done <- result{b, err}
		}()
		during()
		r := <-done
		if r.err != nil {
			rt.Fatalf("persist held snapshot: %v", r.err)
		}
		if !bytes.Equal(r.b, h.want) {
			rt.Fatalf("held snapshot persisted after more applies (%d bytes) differs from the state it captured (%d bytes)", len(r.b), len(h.want))
		}
	}

	// setup: maybe a first tick, then every leaderboard
	var setup []mdEntry
	if rapid.Bool().Draw(rt, "firstTick") {
		m.index++
		tk := &pb.Tick{LeaderTimeMs: g.now}
		m.tick(tk)
		setup = append(setup, mdEntry{log: &raft.Log{Index: m.index, Term: 1, Type: raft.LogCommand, Data: mustEncode(EncodeTick(tk))}, what: "first tick"})
	}
	for _, gb := range g.boards {
		c := g.drawConfig(gb, 1)
		g.noteInc(c.Name, 1)
		m.index++
		setup = append(setup, mdEntry{log: &raft.Log{Index: m.index, Term: 1, Type: raft.LogCommand, Data: mustEncode(EncodeConfig(c))},
			want: m.config(c), what: "config " + c.String()})
	}
	apply(setup)
	mdCheck(rt, primary, g, "primary after setup")

	steps := 5 + g.pct("steps")*35/100
	for step := range steps {
		if g.pct("snapshotStep") < 7 {
			persistHeld(func() {})
			s, err := primary.Snapshot()
			if err != nil {
				rt.Fatalf("snapshot: %v", err)
			}
			want, err := mdSnapshot(shadow)
			if err != nil {
				rt.Fatalf("snapshot shadow: %v", err)
			}
			held = &mdHeld{snap: s, want: want}
			r, err := mdRestore(opts, want)
			if err != nil {
				rt.Fatalf("restore: %v", err)
			}
			got, err := mdSnapshot(r)
			if err != nil {
				rt.Fatalf("snapshot of restored: %v", err)
			}
			if !bytes.Equal(got, want) {
				rt.Fatalf("step %d: snapshot of the restored FSM (%d bytes) differs from the one it was restored from (%d bytes)", step, len(got), len(want))
			}
			mdCheck(rt, r, g, "restored")
			mdCheckStructure(rt, r, "restored")
			mirror = r
			continue
		}
		n := 1
		if g.pct("multi") < 25 {
			n = rapid.IntRange(2, 6).Draw(rt, "entries")
		}
		entries := make([]mdEntry, n)
		for i := range entries {
			entries[i] = g.entry()
		}
		persistHeld(func() { apply(entries) })
		mdCheck(rt, primary, g, fmt.Sprintf("primary after step %d", step))
		mdCheckStructure(rt, primary, "primary")
		if step%4 == 3 {
			sameSnapshots(fmt.Sprintf("step %d", step))
		}
		if mirror != nil && step%5 == 4 {
			mdCheck(rt, mirror, g, fmt.Sprintf("restored replica after step %d", step))
		}
	}
	persistHeld(func() {})
	sameSnapshots("end")
	mdCheck(rt, shadow, g, "shadow at the end")
	if mirror != nil {
		mdCheck(rt, mirror, g, "restored replica at the end")
		mdCheckStructure(rt, mirror, "restored replica at the end")
	}
}

// ---------------------------------------------------------------------------
// focused tests of the window structure's tricky paths

// mdWinHarness drives one "all"-style window directly.
type mdWinHarness struct {
	t     *testing.T
	items cowArray[string]
	w     *window
	ids   map[string]uint32
}

func newMdWinHarness(t *testing.T, kmax int) *mdWinHarness {
	h := &mdWinHarness{t: t, ids: map[string]uint32{}}
	h.w = newWindow(span{}, kmax, &h.items, newRecStore(0), 0, defaultTuning.trackedMin)
	return h
}

func (h *mdWinHarness) add(name string, delta int64) {
	id, ok := h.ids[name]
	if !ok {
		id = uint32(h.items.append(name))
		h.w.rec.grow()
		h.ids[name] = id
	}
	h.w.add(id, delta)
}

// addAll adds delta to every named item, in order.
func (h *mdWinHarness) addAll(items []string, delta int64) {
	for _, n := range items {
		h.add(n, delta)
	}
}

// top answers like FSM.TopK does.
func (h *mdWinHarness) top(k int) []Item {
	w := h.w
	nodes := w.topNodes(k)
	slices.SortFunc(nodes, func(a, b hnode) int {
		if w.nodeAbove(a, b) {
			return -1
		}
		return 1
	})
	out := make([]Item, len(nodes))
	for i, nd := range nodes {
		out[i] = ex(w.items.get(int(nd.id)), nd.count)
	}
	return out
}

// check verifies the invariants and every top-k, k in [1, K_max], against brute force.
func (h *mdWinHarness) check(when string) {
	h.t.Helper()
	w := h.w
	if err := w.check(); err != nil {
		h.t.Fatalf("%s: %v", when, err)
	}
	if got, want := w.certainCount(), min(w.kmax, w.positive); got < want {
		h.t.Fatalf("%s: %d certain heap members, want >= %d", when, got, want)
	}
	if err := mdCertainAtLeast(w); err != nil {
		h.t.Fatalf("%s: %v", when, err)
	}
	counts := map[string]int64{}
	for name, id := range h.ids {
		counts[name] = w.cnt(id)
	}
	ranked := mdRank(counts)
	for k := 1; k <= w.kmax; k++ {
		if got, want := h.top(k), ranked[:min(k, len(ranked))]; !slices.Equal(got, want) {
			h.t.Fatalf("%s: top %d\ngot  %v\nwant %v", when, k, got, want)
		}
	}
}

func (h *mdWinHarness) settle(when string) {
	h.t.Helper()
	h.w.settle()
	h.check(when)
}

// raisedFloor fills a full heap of h items at 100, "o" at 50 and ten b
// items at 8, with trackedMin 1: settle raises the floor to o's class, so
// the b items are untracked.
func (h *mdWinHarness) raisedFloor() (hs, bs []string) {
	h.t.Helper()
	h.w.trackedMin = 1
	hs, bs = mdNames("h", h.w.capacity), mdNames("b", 10)
	h.addAll(hs, 100)
	h.add("o", 50)
	h.addAll(bs, 8)
	h.settle("filled")
	if h.w.floor != classOf(50) || h.w.tracked != 1 {
		h.t.Fatalf("floor %d with %d kept, want %d with 1", h.w.floor, h.w.tracked, classOf(50))
	}
	return hs, bs
}

func mdNames(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%03d", prefix, i)
	}
	return out
}

func TestWindowTrickyPaths(t *testing.T) {
	tests := []struct {
		name string
		kmax int
		run  func(h *mdWinHarness)
	}{
		{
			// capacity 19: the heap is full of "h" items, "o" waits outside;
			// heap members shrink one by one below it until only one is left above.
			name: "heap members shrink one at a time below an outsider",
			kmax: 2,
			run: func(h *mdWinHarness) {
				hs := mdNames("h", h.w.capacity)
				h.addAll(hs, 100)
				h.add("o", 50)
				h.settle("filled")
				if h.w.posOf(h.ids["o"]) < 0 {
					h.t.Fatalf("outsider o is in the heap, want it in a class (capacity %d)", h.w.capacity)
				}
				for i, n := range hs[:len(hs)-1] {
					h.add(n, -90)
					h.settle(fmt.Sprintf("after shrinking %d heap members", i+1))
				}
			},
		},
		{
			name: "most heap members shrink below an outsider in one batch",
			kmax: 2,
			run: func(h *mdWinHarness) {
				hs := mdNames("h", h.w.capacity)
				h.addAll(hs, 100)
				h.add("o", 50)
				h.add("p", 49)
				h.settle("filled")
				h.addAll(hs[1:], -95) // to 5, below o and p
				h.settle("after the batch")
				h.add("o", -46) // o (4) now below the shrunk members
				h.settle("outsider fell")
			},
		},
		{
			name: "heap member shrinks to the outsider's count and loses the name tie",
			kmax: 3,
			run: func(h *mdWinHarness) {
				hs := mdNames("m", h.w.capacity) // "m..." sorts after "a"
				h.addAll(hs, 20)
				h.add("a", 10)
				h.settle("filled")
				h.addAll(hs[2:], -19)
				h.add(hs[0], -10) // m000 = 10 ties with a; "a" ranks first
				h.settle("tie")
			},
		},
		{
			name: "heap members drop to zero and below",
			kmax: 4,
			run: func(h *mdWinHarness) {
				hs := mdNames("h", h.w.capacity)
				h.addAll(hs, 7)
				h.addAll(mdNames("o", 10), 3)
				h.settle("filled")
				h.addAll(hs[:10], -7)
				h.addAll(hs[10:], -9)
				h.settle("heap emptied")
				h.addAll(hs[:5], 9)
				h.settle("some come back")
			},
		},
		{
			// capacity 22; 30 items share class 16 (counts 16..19), so a refill
			// takes the best 22 and leaves 8 behind with a tightened bound.
			name: "refill from a partially taken class",
			kmax: 4,
			run: func(h *mdWinHarness) {
				hs := mdNames("h", h.w.capacity)
				h.addAll(hs, 1000)
				cs := mdNames("c", 30)
				for i, n := range cs {
					h.add(n, 16+int64(i%4))
				}
				h.settle("filled")
				h.addAll(hs, -1000)
				h.settle("refilled from class 16")
				left := len(h.w.cls()[classOf(16)].ids)
				if left == 0 || left == len(cs) {
					h.t.Fatalf("class 16 keeps %d of %d members after refill, want a partial take", left, len(cs))
				}
				h.add("c000", 3) // 16 -> 19, stays in the class, outranks everything
				h.settle("a left-behind member rises")
				h.add("c003", -3)  // a taken member shrinks (19 -> 16)
				h.add("c007", -19) // and one leaves
				h.settle("taken members shrink")
				h.addAll(cs, -2)
				h.settle("everyone shrinks")
			},
		},
		{
			name: "refill from a partially taken class with k reaching into it",
			kmax: 30,
			run: func(h *mdWinHarness) {
				hs := mdNames("h", h.w.capacity) // 61
				h.addAll(hs, 1000)
				cs := mdNames("c", 80)
				for i, n := range cs {
					h.add(n, 16+int64((i*7)%4))
				}
				h.settle("filled")
				h.addAll(hs, -1000)
				h.settle("refilled")
				for i, n := range cs {
					if i%3 == 0 {
						h.add(n, 3)
					}
				}
				h.settle("left-behind members rise")
				h.addAll(cs[:50], -17)
				h.settle("many shrink out of the class")
			},
		},
		{
			name: "K_max resize up, down and while uncertain",
			kmax: 2,
			run: func(h *mdWinHarness) {
				ns := mdNames("i", 60)
				for i, n := range ns {
					h.add(n, int64(1+(i*37)%25))
				}
				h.settle("filled")
				h.w.resize(10)
				h.check("resized to 10")
				h.w.resize(1)
				h.check("resized to 1")
				h.w.resize(40)
				h.check("resized to 40")
				h.addAll(ns[:30], -10) // heap members shrink, no settle before the resize
				h.w.resize(3)
				h.check("resized to 3 while uncertain")
				h.settle("settled after resize")
				h.w.resize(100)
				h.check("resized beyond the item count")
			},
		},
		{
			// A restored window with no positive item keeps every class, so
			// an outsider that arrives later is in one when heap members
			// shrink below it.
			name: "rebuild of an empty window",
			kmax: 2,
			run: func(h *mdWinHarness) {
				h.w.rebuild()
				if h.w.floor != 0 {
					h.t.Fatalf("floor %d after rebuilding an empty window, want 0", h.w.floor)
				}
				hs := mdNames("h", h.w.capacity)
				h.addAll(hs, 100)
				h.add("o", 50)
				h.settle("filled after the rebuild")
				h.addAll(hs, -90)
				h.settle("heap members shrink below the outsider")
			},
		},
		{
			// The floor rises above the b items; with no kept class left, a
			// heap member at the count just below the floor's ties with an
			// untracked item that ranks above it by name.
			name: "untracked item ties a heap member just below the floor",
			kmax: 2,
			run: func(h *mdWinHarness) {
				hs, _ := h.raisedFloor()
				low := classLow(h.w.floor)
				h.add("b000", low-1-8) // stays below the floor
				h.add("o", -50)        // the last kept class empties
				h.addAll(hs, low-1-100)
				h.settle("heap members tie an untracked item")
			},
		},
		{
			// Everything sits in the heap above a raised floor; the heap sinks
			// below it; then an item arrives untracked, and only it makes the
			// outside bound exist.
			name: "first untracked item with no kept class",
			kmax: 2,
			run: func(h *mdWinHarness) {
				hs, bs := h.raisedFloor()
				h.addAll(bs, -8)
				h.add("o", -50)
				h.addAll(hs, -60)
				h.settle("heap alone, below the floor")
				if h.w.floor == 0 || h.w.untracked() != 0 || h.w.tracked != 0 {
					h.t.Fatalf("floor %d, %d untracked, %d kept: want a floor and no outsiders", h.w.floor, h.w.untracked(), h.w.tracked)
				}
				h.add("z", 1)
				h.settle("an untracked item arrives")
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newMdWinHarness(t, tt.kmax)
			tt.run(h)
		})
	}
}

// TestWindowClassBoundAfterIDReuse: a class bound mdNames the best item ever
// placed in the class. When that item leaves, is freed, and its id is reused
// by an item with a larger name, the bound must still bound the class.
func TestWindowClassBoundAfterIDReuse(t *testing.T) {
	lf := newFeeder(t)
	// k_max 2: heap capacity 19; no sliding windows, so ids are freed at count 0.
	if err := lf.config(&pb.LeaderboardConfig{Name: "r", Incarnation: 1, Version: 1, KMax: 2}); err != nil {
		t.Fatal(err)
	}
	ps := mdNames("p", 19)
	at := mdBaseMs
	step := func(evs ...ev) {
		t.Helper()
		at += 1000
		res := lf.ingest(&pb.IngestEntry{LeaderTimeMs: at, Parts: []*pb.ProducerPart{part("", 0, 0, deltas("r", 1, evs...))}})
		if got := res.Outcomes[0].Accepted; got != uint64(len(evs)) {
			t.Fatalf("accepted %d, want %d", got, len(evs))
		}
	}
	var evs []ev
	for _, p := range ps {
		evs = append(evs, ev{p, 6, 0})
	}
	step(evs...)         // the heap is full of p's at 6
	step(ev{"m", 5, 0})  // outside, class 5, bound (5, m)
	step(ev{"n", 5, 0})  // outside, class 5
	step(ev{"m", -5, 0}) // m leaves the class and its id is freed
	step(ev{"z", 1, 0})  // z takes m's id
	for i := range evs { // p's shrink to 5: they rank below n
		evs[i].delta = -1
	}
	step(evs...)
	want := []Item{ex("n", 5), ex("p000", 5)}
	r, err := lf.f.TopK("r", 0, 2)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(r.Items, want) {
		t.Fatalf("TopK(r, all, 2) = %v, want %v", r.Items, want)
	}
	lf.f.mu.RLock()
	err = lf.f.st.boards["r"].counts.(*exactBoard).all.check()
	lf.f.mu.RUnlock()
	if err != nil {
		t.Fatal(err)
	}
}

// TestClassLow checks classLow against classOf at every class boundary.
func TestClassLow(t *testing.T) {
	for c := int64(1); c < 1<<20; c++ {
		ci := classOf(c)
		if ci == classOf(c-1) {
			continue
		}
		if got := classLow(ci); got != c {
			t.Fatalf("classLow(%d) = %d, want %d", ci, got, c)
		}
	}
	for _, c := range []int64{MaxCount, 1 << 40, 1<<40 + 1<<38} {
		if ci := classOf(c); classLow(ci) > c || classOf(classLow(ci)) != ci || classOf(classLow(ci)-1) == ci {
			t.Fatalf("classLow(%d) = %d for count %d", ci, classLow(ci), c)
		}
	}
	if classLow(0) != 1 || classLow(1) != 1 {
		t.Fatalf("classLow(0), classLow(1) = %d, %d, want 1", classLow(0), classLow(1))
	}
}
