package ring

import (
	"fmt"
	"testing"
)

// The partition function is part of the on-disk format: it may never change.
func TestPartitionIsStable(t *testing.T) {
	for _, tt := range []struct {
		lb, item string
		want     int
	}{{"default", "song_a", 790314}, {"default", "song_b", 774538}, {"plays", "LAX-LAS", 89299}} {
		if got := Partition(tt.lb, tt.item, 1<<20); got != tt.want {
			t.Errorf("Partition(%q, %q, 2^20) = %d, want %d", tt.lb, tt.item, got, tt.want)
		}
	}
}

func TestPartitionSpreads(t *testing.T) {
	const p, n = 8, 80_000
	var counts [p]int
	for i := 0; i < n; i++ {
		counts[Partition("default", fmt.Sprintf("song_%d", i), p)]++
	}
	for i, c := range counts {
		if c < n/p*9/10 || c > n/p*11/10 {
			t.Errorf("partition %d holds %d of %d keys, want within 10%% of %d", i, c, n, n/p)
		}
	}
}
