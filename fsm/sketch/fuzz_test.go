package sketch

import (
	"encoding/binary"
	"slices"
	"strconv"
	"testing"
)

// fuzzReader turns fuzz bytes into small numbers and short items; it
// returns zeros once the input runs out.
type fuzzReader struct{ b []byte }

func (r *fuzzReader) byte() byte {
	if len(r.b) == 0 {
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *fuzzReader) uint64() uint64 {
	if len(r.b) < 8 {
		return uint64(r.byte())
	}
	v := binary.LittleEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *fuzzReader) small() uint64 { return uint64(r.byte() % 16) }

func (r *fuzzReader) item() string { return strconv.Itoa(int(r.byte() % 12)) }

// FuzzRestore feeds arbitrary snapshot contents to the three restore
// functions: they must return an error or a structure that keeps its
// invariants under further Adds, and never panic.
func FuzzRestore(f *testing.F) {
	f.Add([]byte{3, 20, 2, 3, 1, 9, 0, 2, 5, 1, 4, 7, 7})
	f.Add([]byte{1, 0, 0, 1, 1, 1})
	f.Add([]byte{4, 30, 0, 5, 2, 8, 3, 1, 8, 2, 6, 4, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := &fuzzReader{b: data}
		capacity := int(r.byte()%6) - 1
		total, floor := r.small()*4, r.small()
		n := int(r.byte() % 8)
		cs := make([]Counter, n)
		for i := range cs {
			cs[i] = Counter{Item: r.item(), Count: r.small() * 2, Err: r.small()}
		}
		if s, err := Restore(capacity, total, floor, cs); err == nil {
			if s.Len() != n || s.Total() != total || s.Floor() != floor {
				t.Fatalf("Restore = len %d total %d floor %d, want %d %d %d", s.Len(), s.Total(), s.Floor(), n, total, floor)
			}
			want := slices.Clone(cs)
			slices.SortFunc(want, cmpCounters)
			if got := s.Counters(); !slices.Equal(got, want) {
				t.Fatalf("Counters() = %+v, want %+v", got, want)
			}
			for range 20 {
				s.Add(r.item(), 1+r.small())
			}
			for _, c := range s.Counters() {
				if c.Err > c.Count || c.Count < s.Floor() {
					t.Fatalf("after Adds: counter %+v, floor %d", c, s.Floor())
				}
			}
			if s.Len() > s.Capacity() {
				t.Fatalf("Len() %d > Capacity() %d", s.Len(), s.Capacity())
			}
		}

		width, depth := int(r.byte()%5), int(r.byte()%4)
		cells := make([]uint64, int(r.byte()%13))
		for i := range cells {
			cells[i] = r.small()
		}
		sk, err := RestoreCountMin(width, depth, r.uint64(), r.small()*2, cells)
		if err != nil {
			sk = NewCountMin(3, 2, 1)
		}
		k := int(r.byte()%5) - 1
		cands := make([]Candidate, int(r.byte()%6))
		for i := range cands {
			cands[i] = Candidate{Item: r.item(), Est: r.small(), Lower: r.small()}
		}
		if c, err := RestoreCMSTopK(k, sk, r.small(), cands); err == nil {
			for range 20 {
				c.Add(r.item(), 1+r.small())
			}
			if got := len(c.Candidates()); got > k {
				t.Fatalf("%d candidates > k %d", got, k)
			}
			c.Result(k)
		}
	})
}
