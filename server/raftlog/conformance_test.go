package raftlog

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"pgregory.net/rapid"
)

// store is what both implementations answer.
type store interface {
	raft.LogStore
	raft.StableStore
}

// TestConformance runs random operation sequences against raft-boltdb/v2
// (one file per group, what hashicorp/raft was built against) and against
// groups of one shared Store, and compares every answer: indexes, entries,
// missing entries, stable keys, missing keys, across reopen and drop.
func TestConformance(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		dir := t.TempDir()
		const groups = 3
		shared, err := Open(filepath.Join(dir, "shared.db"), Options{})
		if err != nil {
			rt.Fatal(err)
		}
		defer func() { shared.Close() }()
		ref := make([]*raftboltdb.BoltStore, groups)
		gen := make([]int, groups) // reference file generation, bumped by drop
		openRef := func(g int) {
			s, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, fmt.Sprintf("ref-%d-%d.db", g, gen[g]))})
			if err != nil {
				rt.Fatal(err)
			}
			ref[g] = s
		}
		for g := range ref {
			openRef(g)
		}
		defer func() {
			for _, s := range ref {
				s.Close()
			}
		}()
		next := make([]uint64, groups) // next index to append per group
		for g := range next {
			next[g] = 1
		}
		keys := [][]byte{[]byte("CurrentTerm"), []byte("LastVoteTerm"), []byte("LastVoteCand"), []byte("other")}
		pair := func(g int) (store, store) { return ref[g], shared.Group(uint32(g)) }

		steps := rapid.IntRange(1, 60).Draw(rt, "steps")
		for range steps {
			g := rapid.IntRange(0, groups-1).Draw(rt, "group")
			a, b := pair(g)
			switch op := rapid.IntRange(0, 9).Draw(rt, "op"); op {
			case 0, 1, 2: // append, sometimes rewriting a suffix (a follower's conflict)
				start := next[g]
				if start > 1 && rapid.Bool().Draw(rt, "overlap") {
					start = rapid.Uint64Range(1, start).Draw(rt, "from")
				}
				if start > 1 && rapid.IntRange(0, 9).Draw(rt, "gap") == 0 {
					start += rapid.Uint64Range(1, 3).Draw(rt, "gapsize") // raft allows gaps after a restore
				}
				n := rapid.IntRange(1, 8).Draw(rt, "n")
				logs := make([]*raft.Log, n)
				for i := range logs {
					logs[i] = &raft.Log{Index: start + uint64(i), Term: rapid.Uint64Range(1, 5).Draw(rt, "term"),
						Type: raft.LogType(rapid.IntRange(0, 6).Draw(rt, "type")),
						Data: rapid.SliceOfN(rapid.Byte(), 0, 300).Draw(rt, "data")}
					if rapid.Bool().Draw(rt, "ext") {
						logs[i].Extensions = rapid.SliceOfN(rapid.Byte(), 1, 20).Draw(rt, "extdata")
					}
					if rapid.Bool().Draw(rt, "appended") {
						logs[i].AppendedAt = time.Unix(0, rapid.Int64Range(1, 1<<62).Draw(rt, "at"))
					}
				}
				same(rt, "StoreLogs", a.StoreLogs(logs), b.StoreLogs(logs))
				next[g] = max(next[g], start+uint64(n))
			case 3: // delete a range: a compaction prefix, a truncated suffix, or anything
				lo := rapid.Uint64Range(0, next[g]+2).Draw(rt, "min")
				hi := rapid.Uint64Range(lo, next[g]+3).Draw(rt, "max")
				same(rt, "DeleteRange", a.DeleteRange(lo, hi), b.DeleteRange(lo, hi))
			case 4:
				k := keys[rapid.IntRange(0, len(keys)-1).Draw(rt, "key")]
				if rapid.Bool().Draw(rt, "uint") {
					v := rapid.Uint64().Draw(rt, "v")
					same(rt, "SetUint64", a.SetUint64(k, v), b.SetUint64(k, v))
				} else {
					v := rapid.SliceOfN(rapid.Byte(), 0, 16).Draw(rt, "v")
					same(rt, "Set", a.Set(k, v), b.Set(k, v))
				}
			case 5: // reopen the shared store: everything acknowledged survives
				if err := shared.Close(); err != nil {
					rt.Fatal(err)
				}
				if shared, err = Open(filepath.Join(dir, "shared.db"), Options{}); err != nil {
					rt.Fatal(err)
				}
			case 6: // drop the group; the reference starts a new file
				if err := shared.Drop(uint32(g)); err != nil {
					rt.Fatal(err)
				}
				ref[g].Close()
				gen[g]++
				openRef(g)
				next[g] = 1
			default: // reads only
			}
			a, b = pair(g)
			compare(rt, a, b, next[g]+2, keys)
		}
		for g := range groups {
			a, b := pair(g)
			compare(rt, a, b, next[g]+2, keys)
		}
	})
}

func same(t *rapid.T, op string, want, got error) {
	t.Helper()
	if (want == nil) != (got == nil) {
		t.Fatalf("%s: raft-boltdb answered %v, shared store %v", op, want, got)
	}
}

// compare checks every read both stores answer for one group.
func compare(t *rapid.T, a, b store, upto uint64, keys [][]byte) {
	t.Helper()
	for _, f := range []struct {
		name string
		fn   func(store) (uint64, error)
	}{{"FirstIndex", store.FirstIndex}, {"LastIndex", store.LastIndex}} {
		want, werr := f.fn(a)
		got, gerr := f.fn(b)
		if want != got || (werr == nil) != (gerr == nil) {
			t.Fatalf("%s: raft-boltdb %d (%v), shared %d (%v)", f.name, want, werr, got, gerr)
		}
	}
	for i := uint64(0); i <= upto; i++ {
		var want, got raft.Log
		werr, gerr := a.GetLog(i, &want), b.GetLog(i, &got)
		if errors.Is(werr, raft.ErrLogNotFound) != errors.Is(gerr, raft.ErrLogNotFound) || (werr == nil) != (gerr == nil) {
			t.Fatalf("GetLog(%d): raft-boltdb %v, shared %v", i, werr, gerr)
		}
		if werr != nil {
			continue
		}
		if want.Index != got.Index || want.Term != got.Term || want.Type != got.Type ||
			!bytes.Equal(want.Data, got.Data) || !bytes.Equal(want.Extensions, got.Extensions) ||
			!want.AppendedAt.Equal(got.AppendedAt) {
			t.Fatalf("GetLog(%d): raft-boltdb %+v, shared %+v", i, want, got)
		}
	}
	for _, k := range keys {
		want, werr := a.Get(k)
		got, gerr := b.Get(k)
		if (werr == nil) != (gerr == nil) || !bytes.Equal(want, got) {
			t.Fatalf("Get(%s): raft-boltdb %x (%v), shared %x (%v)", k, want, werr, got, gerr)
		}
		if werr != nil && (werr.Error() != "not found" || gerr.Error() != "not found") {
			t.Fatalf("Get(%s) of a missing key: raft-boltdb %q, shared %q; raft matches the text \"not found\"", k, werr, gerr)
		}
		if len(want) == 8 {
			wu, werr := a.GetUint64(k)
			gu, gerr := b.GetUint64(k)
			if wu != gu || (werr == nil) != (gerr == nil) {
				t.Fatalf("GetUint64(%s): raft-boltdb %d (%v), shared %d (%v)", k, wu, werr, gu, gerr)
			}
		}
	}
}
