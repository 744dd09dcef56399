package fsm

import (
	"google.golang.org/protobuf/proto"

	"github.com/topkd/topkd/fsm/sketch"
	pb "github.com/topkd/topkd/proto/topkd/raftcmd/v1"
)

// snapApprox is one window of an approximate board, captured.
type snapApprox struct {
	win     *pb.ApproxWindow
	buckets []*pb.ApproxBucket
}

// approxSnap is an approximate board captured: per window, "all" first.
type approxSnap []snapApprox

// capture copies the approximate state into records. Unlike exact boards it
// is not copy-on-write: the state is bounded by the configured capacity or
// sketch size (DESIGN.md gives the sizes), so Snapshot() copies it whole.
func (a *approxBoard) capture(st *pb.LeaderboardState) boardSnap {
	st.RejectedNegative = a.rejectedNeg
	out := make(approxSnap, 0, 1+len(a.wins))
	h, bs := a.all.capture(0)
	out = append(out, snapApprox{h, bs})
	for i, w := range a.wins {
		h, bs := w.capture(uint32(i + 1))
		out = append(out, snapApprox{h, bs})
	}
	return out
}

func (as approxSnap) write(rw *recWriter) error {
	for _, a := range as {
		if err := rw.record(recApproxWindow, a.win); err != nil {
			return err
		}
		for _, b := range a.buckets {
			if err := rw.record(recApproxBucket, b); err != nil {
				return err
			}
		}
	}
	return nil
}

// approxRestore rebuilds an approximate board window by window, checking
// the invariants the live structures keep.
type approxRestore struct {
	a    *approxBoard
	cfg  *pb.LeaderboardConfig
	name string
	next int // the next window record expected: 0 = all, i+1 = sliding window i
	want int // bucket records still expected for the current window
	got  int
	last int64
	hdr  *pb.ApproxWindow
	ss   *ssWindow
	cms  *cmsWindow
}

func (a *approxBoard) restore(lb *leaderboard, m *pb.LeaderboardState) (boardRestore, error) {
	if m.IdSlots != 0 || len(m.FreeIds) != 0 || m.RejectedMaxItems != 0 {
		return nil, corrupt("leaderboard %q: item table in an approximate board", lb.cfg.Name)
	}
	a.rejectedNeg = m.RejectedNegative
	return &approxRestore{a: a, cfg: lb.cfg, name: lb.cfg.Name}, nil
}

func (r *approxRestore) record(m proto.Message) error {
	switch m := m.(type) {
	case *pb.ApproxWindow:
		return r.window(m)
	case *pb.ApproxBucket:
		return r.bucket(m)
	}
	return corrupt("leaderboard %q: %T in an approximate board", r.name, m)
}

func (r *approxRestore) window(m *pb.ApproxWindow) error {
	if err := r.closeWindow(); err != nil {
		return err
	}
	a := r.a
	if int(m.Window) != r.next || r.next > len(a.wins) {
		return corrupt("leaderboard %q: approximate window %d, expected %d", r.name, m.Window, r.next)
	}
	r.next++
	r.hdr, r.ss, r.cms, r.got, r.want = m, nil, nil, 0, int(m.Buckets)
	cfg := r.cfg
	if m.Window == 0 {
		if m.Buckets != 0 {
			return corrupt("leaderboard %q: buckets in the all window", r.name)
		}
		switch a.mode {
		case pb.Mode_MODE_SPACESAVING:
			s, err := restoreSummary(m.Summary, shapeOf(cfg))
			if err != nil {
				return corrupt("leaderboard %q: all-time summary: %v", r.name, err)
			}
			a.all = &ssAll{s: s}
		case pb.Mode_MODE_CMS:
			sk, err := restoreSketch(m.Sketch, a.width, a.depth, a.seed)
			if err != nil {
				return corrupt("leaderboard %q: all-time sketch: %v", r.name, err)
			}
			cs := m.Candidates
			if cs == nil || len(cs.Ests) != len(cs.Items) || len(cs.Lowers) != len(cs.Items) || len(cs.Seqs) != 0 {
				return corrupt("leaderboard %q: all-time candidates", r.name)
			}
			cands := make([]sketch.Candidate, len(cs.Items))
			for i := range cands {
				cands[i] = sketch.Candidate{Item: cs.Items[i], Est: cs.Ests[i], Lower: cs.Lowers[i]}
			}
			t, err := sketch.RestoreCMSTopK(int(cfg.KMax), sk, m.Bound, cands)
			if err != nil {
				return corrupt("leaderboard %q: all-time candidates: %v", r.name, err)
			}
			a.all = &cmsAll{t: t}
		}
		return nil
	}
	switch a.mode {
	case pb.Mode_MODE_SPACESAVING:
		back, err := restoreSummary(m.Summary, shapeOf(cfg))
		if err != nil {
			return corrupt("leaderboard %q: window %d back summary: %v", r.name, m.Window, err)
		}
		if m.Front > m.Buckets || (m.Buckets > 0 && m.Front == m.Buckets) {
			return corrupt("leaderboard %q: window %d front %d of %d buckets", r.name, m.Window, m.Front, m.Buckets)
		}
		r.ss = &ssWindow{sh: shapeOf(cfg), back: back, front: int(m.Front)}
		a.wins[m.Window-1] = r.ss
	case pb.Mode_MODE_CMS:
		w := newCMSWindow(int(cfg.KMax), a.width, a.depth, a.seed)
		cs := m.Candidates
		if cs == nil || len(cs.Ests) != len(cs.Items) || len(cs.Lowers) != len(cs.Items) || len(cs.Seqs) != len(cs.Items) ||
			len(cs.Items) > w.k || len(m.BoundKeys) != len(m.BoundValues) {
			return corrupt("leaderboard %q: window %d candidates", r.name, m.Window)
		}
		for i, it := range cs.Items {
			if i > 0 && it <= cs.Items[i-1] {
				return corrupt("leaderboard %q: window %d candidates out of order", r.name, m.Window)
			}
			if cs.Seqs[i] == 0 || cs.Seqs[i] > m.NextSeq || cs.Ests[i] == 0 {
				return corrupt("leaderboard %q: window %d candidate %q", r.name, m.Window, it)
			}
			c := &cmsCand{item: it, est: cs.Ests[i], lower: cs.Lowers[i], seq: cs.Seqs[i], hi: len(w.heap)}
			w.cands[it] = c
			w.heap = append(w.heap, c)
		}
		for i, k := range m.BoundKeys {
			if i > 0 && k <= m.BoundKeys[i-1] {
				return corrupt("leaderboard %q: window %d bounds out of order", r.name, m.Window)
			}
			w.bounds = append(w.bounds, epochBound{key: k, v: m.BoundValues[i]})
		}
		w.nextSeq, w.maxIdx = m.NextSeq, m.MaxBucket
		r.cms = w
		a.wins[m.Window-1] = w
	}
	return nil
}

func (r *approxRestore) bucket(m *pb.ApproxBucket) error {
	if r.hdr == nil || m.Window != r.hdr.Window || r.got >= r.want {
		return corrupt("leaderboard %q: unexpected approximate bucket for window %d", r.name, m.Window)
	}
	if r.got > 0 && m.Index <= r.last {
		return corrupt("leaderboard %q: window %d bucket %d out of order", r.name, m.Window, m.Index)
	}
	r.last = m.Index
	r.got++
	switch {
	case r.ss != nil:
		s, err := restoreSummary(m.Summary, r.ss.sh)
		if err != nil {
			return corrupt("leaderboard %q: window %d bucket %d: %v", r.name, m.Window, m.Index, err)
		}
		r.ss.buckets = append(r.ss.buckets, ssBucket{index: m.Index, s: s})
		if len(r.ss.buckets) <= r.ss.front {
			agg, err := restoreSummary(m.Aggregate, r.ss.sh)
			if err != nil {
				return corrupt("leaderboard %q: window %d aggregate %d: %v", r.name, m.Window, m.Index, err)
			}
			r.ss.agg = append(r.ss.agg, agg)
		} else if m.Aggregate != nil {
			return corrupt("leaderboard %q: window %d aggregate behind the front", r.name, m.Window)
		}
	case r.cms != nil:
		w := r.cms
		sk, err := restoreSketch(m.Sketch, w.width, w.depth, w.seed)
		if err != nil {
			return corrupt("leaderboard %q: window %d bucket %d: %v", r.name, m.Window, m.Index, err)
		}
		if m.Index > w.maxIdx {
			return corrupt("leaderboard %q: window %d bucket %d beyond the highest seen", r.name, m.Window, m.Index)
		}
		b := &cmsBucket{index: m.Index, sk: sk, cand: make(map[string]candDelta)}
		cs := m.Candidates
		if cs == nil || len(cs.Seqs) != len(cs.Items) || len(cs.Lowers) != len(cs.Items) || len(cs.Ests) != 0 {
			return corrupt("leaderboard %q: window %d bucket %d candidates", r.name, m.Window, m.Index)
		}
		for i, it := range cs.Items {
			if (i > 0 && it <= cs.Items[i-1]) || cs.Seqs[i] == 0 || cs.Seqs[i] > w.nextSeq || cs.Lowers[i] == 0 {
				return corrupt("leaderboard %q: window %d bucket %d candidate %q", r.name, m.Window, m.Index, it)
			}
			b.cand[it] = candDelta{seq: cs.Seqs[i], w: cs.Lowers[i]}
		}
		if err := w.sk.Merge(sk); err != nil {
			return corrupt("leaderboard %q: window %d bucket %d: %v", r.name, m.Window, m.Index, err)
		}
		w.buckets = append(w.buckets, b)
	default:
		return corrupt("leaderboard %q: buckets in window %d", r.name, m.Window)
	}
	return nil
}

// closeWindow checks the window just read is complete and consistent.
func (r *approxRestore) closeWindow() error {
	if r.hdr == nil {
		return nil
	}
	if r.got != r.want {
		return corrupt("leaderboard %q: window %d has %d of %d buckets", r.name, r.hdr.Window, r.got, r.want)
	}
	if r.cms != nil {
		w := r.cms
		// Each candidate's lower bound is the sum of its candidacy's deltas in live buckets.
		sum := make(map[string]uint64, len(w.cands))
		for _, b := range w.buckets {
			for it, d := range b.cand {
				if c := w.cands[it]; c != nil && c.seq == d.seq {
					sum[it] += d.w
				}
			}
		}
		for it, c := range w.cands {
			if sum[it] != c.lower || c.est < c.lower {
				return corrupt("leaderboard %q: window %d candidate %q does not match its buckets", r.name, r.hdr.Window, it)
			}
		}
		w.reheap()
	}
	r.hdr, r.ss, r.cms = nil, nil, nil
	return nil
}

func (r *approxRestore) finish() error {
	if err := r.closeWindow(); err != nil {
		return err
	}
	if r.next != 1+len(r.a.wins) {
		return corrupt("leaderboard %q: %d of %d approximate windows", r.name, r.next, 1+len(r.a.wins))
	}
	return nil
}
