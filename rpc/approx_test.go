package rpc_test

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"

	"github.com/topkd/topkd/fsm/sketch"
)

// TestApproximateModes runs cms and spacesaving leaderboards through REST:
// creation with their parameters, ingest, bounds on every answer that hold
// the true counts, and negative counts refused with the mode named.
func TestApproximateModes(t *testing.T) {
	tn := newTestNode(t)
	boards := map[string]string{
		"ss":  `{"name":"ss","mode":"spacesaving","capacity":40,"k_max":10,"windows":["1h"]}`,
		"cms": `{"name":"cms","mode":"cms","epsilon":0.01,"delta":0.01,"k_max":10,"windows":["1h"]}`,
	}
	// 200 items with Zipf counts (item-i occurs 3000/(i+1) times), as single events in a shuffled order.
	truth := map[string]int64{}
	var evs []string
	for i := range 200 {
		id := fmt.Sprintf("item-%03d", i)
		truth[id] = int64(3000 / (i + 1))
		for range 3000 / (i + 1) {
			evs = append(evs, fmt.Sprintf(`{"item":%q}`, id))
		}
	}
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(evs), func(i, j int) { evs[i], evs[j] = evs[j], evs[i] })
	body := "[" + strings.Join(evs, ",") + "]"
	for name, def := range boards {
		t.Run(name, func(t *testing.T) {
			tn.doJSON(t, http.MethodPost, "/api/leaderboards", def, http.StatusCreated, nil)
			if got := tn.post(t, "?leaderboard="+name, body); got.Accepted != uint64(len(evs)) {
				t.Fatalf("accepted %d, want %d", got.Accepted, len(evs))
			}
			for _, win := range []string{"all", "1h"} {
				var out struct {
					Items []struct {
						ID    string `json:"id"`
						Count int64  `json:"count"`
						Lower int64  `json:"lower_bound"`
						Upper int64  `json:"upper_bound"`
					} `json:"items"`
					Approximate bool  `json:"approximate"`
					Guaranteed  *bool `json:"guaranteed"`
					MaxError    int64 `json:"max_error"`
				}
				tn.doJSON(t, http.MethodGet, "/api/top-items?consistency=linearizable&k=5&time_window="+win+"&leaderboard="+name, "", http.StatusOK, &out)
				if !out.Approximate || out.Guaranteed == nil || len(out.Items) != 5 {
					t.Fatalf("window %s: approximate %v, guaranteed %v, %d items", win, out.Approximate, out.Guaranteed, len(out.Items))
				}
				var maxErr int64
				for _, it := range out.Items {
					if tc := truth[it.ID]; it.Lower > tc || tc > it.Upper || it.Count != it.Upper {
						t.Errorf("window %s: %s true %d outside [%d, %d]", win, it.ID, tc, it.Lower, it.Upper)
					}
					maxErr = max(maxErr, it.Upper-it.Lower)
				}
				if out.MaxError != maxErr {
					t.Errorf("window %s: max_error %d, want %d (widest bound)", win, out.MaxError, maxErr)
				}
				t.Logf("%s window %s: guaranteed %v, max_error %d", name, win, *out.Guaranteed, out.MaxError)
				for i, it := range out.Items {
					if want := fmt.Sprintf("item-%03d", i); it.ID != want {
						t.Errorf("window %s: rank %d is %s, want %s", win, i+1, it.ID, want)
					}
				}
			}
			var c struct {
				Count       int64 `json:"count"`
				Lower       int64 `json:"lower_bound"`
				Upper       int64 `json:"upper_bound"`
				Approximate bool  `json:"approximate"`
			}
			tn.doJSON(t, http.MethodGet, "/api/items/item-000?consistency=linearizable&leaderboard="+name, "", http.StatusOK, &c)
			if tc := truth["item-000"]; !c.Approximate || c.Lower > tc || c.Upper < tc {
				t.Errorf("count of item-000: %+v, want approximate bounds holding the true count", c)
			}
			st, raw := tn.do(t, http.MethodPost, "/api/events?leaderboard="+name, "", []byte(`[{"item":"x","count":-1}]`))
			checkError(t, st, raw, http.StatusBadRequest, "negative", name2mode[name])
		})
	}
}

var name2mode = map[string]string{"ss": "spacesaving", "cms": "cms"}

// TestFilterCellsInConfig: a spacesaving leaderboard shows the filter ratio
// it was created with (the server's default when none is given), a given
// one is kept, and one above the limit is refused naming the field.
func TestFilterCellsInConfig(t *testing.T) {
	tn := newTestNode(t)
	var out struct {
		FilterCells uint32 `json:"filter_cells"`
	}
	tn.doJSON(t, http.MethodPost, "/api/leaderboards", `{"name":"fc-default","mode":"spacesaving","windows":["1h"]}`, http.StatusCreated, &out)
	if out.FilterCells != sketch.FilterCellsPerCounter {
		t.Errorf("default filter_cells %d, want %d", out.FilterCells, sketch.FilterCellsPerCounter)
	}
	tn.doJSON(t, http.MethodPost, "/api/leaderboards", `{"name":"fc-4","mode":"spacesaving","filter_cells":4,"windows":["1h"]}`, http.StatusCreated, &out)
	if out.FilterCells != 4 {
		t.Errorf("filter_cells %d, want 4", out.FilterCells)
	}
	tn.doJSON(t, http.MethodGet, "/api/leaderboards/fc-4", "", http.StatusOK, &out)
	if out.FilterCells != 4 {
		t.Errorf("described filter_cells %d, want 4", out.FilterCells)
	}
	st, raw := tn.do(t, http.MethodPost, "/api/leaderboards", "application/json", []byte(`{"name":"fc-big","mode":"spacesaving","filter_cells":33}`))
	checkError(t, st, raw, http.StatusBadRequest, "filter_cells")
}
