package ring

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/buraksezer/consistent"
	"github.com/cespare/xxhash/v2"
)

// DefaultReplicas is the number of replicas in each partition's Raft group.
const DefaultReplicas = 3

// Ring parameters. Changing either changes every placement, so the golden
// test pins them.
const (
	virtualNodes = 64   // points per member on the ring (consistent's ReplicationFactor)
	ringLoad     = 1.25 // consistent gives no member more than ceil(P/N*ringLoad) partitions
)

// Placement says which nodes hold each partition. Replicas[p] lists the
// distinct node ids of partition p's Raft group; the first is its preferred
// leader.
type Placement struct {
	Replicas [][]string
}

// Place computes where p partitions of r replicas each live on members,
// starting from current (empty, or a placement of p partitions) and moving as
// little as possible. It is a pure function of its arguments, so every node
// computes the same placement from the same committed input; the order of
// members does not matter.
//
// With n members and R = min(r, n) replicas per partition, the result is
// balanced exactly: every node holds floor(p*R/n) or ceil(p*R/n) replicas and
// is preferred leader of floor(p/n) or ceil(p/n) partitions. Within that
// balance it moves as little as it can:
//
//  1. Keep: each partition keeps its current replicas that are still
//     members, deduplicated, the first R in current order. The p*R mod n
//     nodes keeping the most (ties by id) may keep ceil(p*R/n), the others
//     floor(p*R/n); a node above its limit gives up the excess (see drop).
//  2. Fill: partitions in order take their ring owner if it is absent and
//     has room, else the least-loaded absent node with room (ties by a hash
//     of (partition, node), then id). A node has room below floor(p*R/n), or
//     below ceil(p*R/n) while fewer than p*R mod n nodes hold that many.
//     When no absent node has room, replicas added in this call move along
//     a chain to make some; only when no such chain exists does one kept
//     replica move (see reassign): the one case where Place copies more
//     replicas than step 1 dropped.
//  3. Lead: the current leader stays if it is still a replica and leads
//     fewer than ceil(p/n), first where it is also the ring owner; then the
//     ring owner (consistent's GetPartitionOwner) if it is a replica; then
//     the replica leading fewest, shifting leaders along a chain if all of
//     them lead ceil(p/n) (see augment). Last, each node leading fewer than
//     floor(p/n) takes partitions over along a chain from a node leading
//     more (see raise).
//
// A placement Place returned is a fixed point: Place(members, p, r, pl)
// returns pl again.
func Place(members []string, p, r int, current Placement) (Placement, error) {
	switch {
	case p <= 0:
		return Placement{}, fmt.Errorf("place: %d partitions, want at least 1", p)
	case r <= 0:
		return Placement{}, fmt.Errorf("place: %d replicas, want at least 1", r)
	case len(members) == 0:
		return Placement{}, errors.New("place: no members")
	case len(current.Replicas) != 0 && len(current.Replicas) != p:
		return Placement{}, fmt.Errorf("place: current placement has %d partitions, want %d", len(current.Replicas), p)
	}
	ms := slices.Clone(members)
	slices.Sort(ms)
	for i, id := range ms {
		if id == "" {
			return Placement{}, errors.New("place: empty member id")
		}
		if i > 0 && id == ms[i-1] {
			return Placement{}, fmt.Errorf("place: duplicate member %q", id)
		}
	}
	owner, err := ringOwners(ms, p)
	if err != nil {
		return Placement{}, fmt.Errorf("place: %w", err)
	}
	n := len(ms)
	pl := &planner{
		members:  ms,
		owner:    owner,
		curLead:  make([]string, p),
		r:        min(r, n),
		minLeads: p / n,
		maxLeads: ceilDiv(p, n),
		sets:     make([][]string, p),
		load:     make(map[string]int, n),
	}
	for q, set := range current.Replicas {
		if len(set) > 0 {
			pl.curLead[q] = set[0]
		}
	}
	pl.keep(current)
	if err := pl.fill(); err != nil {
		return Placement{}, fmt.Errorf("place: %w", err)
	}
	leader, err := pl.lead()
	if err != nil {
		return Placement{}, fmt.Errorf("place: %w", err)
	}
	out := Placement{Replicas: make([][]string, p)}
	for q, set := range pl.sets {
		out.Replicas[q] = append([]string{leader[q]}, slices.DeleteFunc(set, func(id string) bool { return id == leader[q] })...)
	}
	return out, nil
}

// planner holds the state of one Place call.
type planner struct {
	members  []string // sorted
	owner    []string // ring owner of each partition
	curLead  []string // current leader of each partition, "" if none
	r        int      // replicas per partition
	minLeads int      // floor(p/n)
	maxLeads int      // ceil(p/n)
	sets     [][]string
	kept     [][]string     // sets after keep: replicas that cost nothing
	load     map[string]int // replicas per node in sets
	floor    int            // floor(p*R/n)
	ceil     int            // ceil(p*R/n)
	spare    int            // nodes that may still grow to ceil
}

func (pl *planner) keep(current Placement) {
	isMember := make(map[string]bool, len(pl.members))
	for _, id := range pl.members {
		isMember[id] = true
	}
	for q, cur := range current.Replicas {
		for _, id := range cur {
			if len(pl.sets[q]) < pl.r && isMember[id] && !slices.Contains(pl.sets[q], id) {
				pl.sets[q] = append(pl.sets[q], id)
				pl.load[id]++
			}
		}
	}

	total, n := len(pl.sets)*pl.r, len(pl.members)
	pl.floor, pl.ceil, pl.spare = total/n, ceilDiv(total, n), total%n
	byLoad := slices.Clone(pl.members)
	slices.SortStableFunc(byLoad, func(a, b string) int { return cmp.Compare(pl.load[b], pl.load[a]) })
	for i, id := range byLoad {
		limit := pl.floor
		if i < total%n {
			limit = pl.ceil
			if pl.load[id] >= limit {
				pl.spare--
			}
		}
		if excess := pl.load[id] - limit; excess > 0 {
			pl.drop(id, excess)
		}
	}
}

// drop removes node id from k partitions: first the fullest (a partition
// short of two replicas may find no node for the second), then those id
// does not lead, then those whose ring owner is absent (so it can come in),
// then by rank.
func (pl *planner) drop(id string, k int) {
	var held []int
	for q, set := range pl.sets {
		if slices.Contains(set, id) {
			held = append(held, q)
		}
	}
	slices.SortFunc(held, func(a, b int) int {
		return cmp.Or(
			cmp.Compare(len(pl.sets[b]), len(pl.sets[a])),
			cmp.Compare(bit(pl.curLead[a] == id), bit(pl.curLead[b] == id)),
			cmp.Compare(bit(slices.Contains(pl.sets[a], pl.owner[a])), bit(slices.Contains(pl.sets[b], pl.owner[b]))),
			cmp.Compare(rank(a, id), rank(b, id)),
			cmp.Compare(a, b),
		)
	})
	for _, q := range held[:k] {
		pl.sets[q] = slices.DeleteFunc(pl.sets[q], func(s string) bool { return s == id })
		pl.load[id]--
	}
}

// room reports whether node id may take one more replica: below floor, or
// at floor while fewer than p*R mod n nodes hold ceil.
func (pl *planner) room(id string) bool {
	return pl.load[id] < pl.floor || pl.load[id] < pl.ceil && pl.spare > 0
}

func (pl *planner) grow(id string) {
	pl.load[id]++
	if pl.load[id] == pl.ceil && pl.ceil > pl.floor {
		pl.spare--
	}
}

func (pl *planner) fill() error {
	pl.kept = make([][]string, len(pl.sets))
	for q, set := range pl.sets {
		pl.kept[q] = slices.Clone(set)
	}
	for q := range pl.sets {
		for len(pl.sets[q]) < pl.r {
			if id := pl.pick(q); id != "" {
				pl.sets[q] = append(pl.sets[q], id)
				pl.grow(id)
			} else if !pl.reassign(q, true) && !pl.reassign(q, false) {
				return fmt.Errorf("no room for a replica of partition %d", q) // ruled out in reassign
			}
		}
	}
	return nil
}

// pick returns the node partition q should add, or "" if no absent node
// has room.
func (pl *planner) pick(q int) string {
	if o := pl.owner[q]; !slices.Contains(pl.sets[q], o) && pl.room(o) {
		return o
	}
	best := ""
	for _, id := range pl.members {
		if slices.Contains(pl.sets[q], id) || !pl.room(id) {
			continue
		}
		if best == "" || cmp.Or(cmp.Compare(pl.load[id], pl.load[best]), cmp.Compare(rank(q, id), rank(q, best))) < 0 {
			best = id
		}
	}
	return best
}

// reassign adds a replica to partition q when no absent node has room, along
// a chain: x0 joins q and leaves s1, x1 joins s1 and leaves s2, ..., until a
// node with room joins. With free set, chains only move replicas added in
// this call, which costs nothing; otherwise the breadth-first search finds a
// chain of one step, which moves one kept replica. That chain exists: loads
// sum to less than p*R, so if every absent node x is full, some replica y of
// q has room with load(y) <= load(x)-1 (y is below floor, or every x is at
// ceil); x shares at most load(y)-1 partitions with y, so x leaves one
// without y, which y joins.
func (pl *planner) reassign(q int, free bool) bool {
	type hop struct {
		prev string // node that leaves part, "" for q
		part int    // partition this node joins
	}
	seen := make(map[string]hop, len(pl.members))
	var queue []string
	for _, id := range pl.members {
		if !slices.Contains(pl.sets[q], id) {
			seen[id] = hop{part: q}
			queue = append(queue, id)
		}
	}
	for len(queue) > 0 {
		x := queue[0]
		queue = queue[1:]
		for s, set := range pl.sets {
			if !slices.Contains(set, x) || free && slices.Contains(pl.kept[s], x) {
				continue
			}
			for _, w := range pl.members {
				if _, ok := seen[w]; ok || slices.Contains(set, w) {
					continue
				}
				seen[w] = hop{prev: x, part: s}
				if !pl.room(w) {
					queue = append(queue, w)
					continue
				}
				pl.grow(w)
				for id := w; id != ""; id = seen[id].prev {
					h := seen[id]
					if h.prev != "" {
						pl.sets[h.part] = slices.DeleteFunc(pl.sets[h.part], func(s string) bool { return s == h.prev })
					}
					pl.sets[h.part] = append(pl.sets[h.part], id)
				}
				return true
			}
		}
	}
	return false
}

// lead returns the preferred leader of each partition.
func (pl *planner) lead() ([]string, error) {
	leader := make([]string, len(pl.sets))
	leads := make(map[string]int, len(pl.members))
	try := func(q int, id string) {
		if leader[q] == "" && id != "" && leads[id] < pl.maxLeads && slices.Contains(pl.sets[q], id) {
			leader[q] = id
			leads[id]++
		}
	}
	for q, id := range pl.curLead {
		if id == pl.owner[q] {
			try(q, id)
		}
	}
	for q, id := range pl.curLead {
		try(q, id)
	}
	for q, id := range pl.owner {
		try(q, id)
	}
	for q := range leader {
		if leader[q] == "" {
			if err := pl.augment(q, leader, leads); err != nil {
				return nil, err
			}
		}
	}
	for _, id := range pl.members {
		for leads[id] < pl.minLeads {
			if err := pl.raise(id, leader, leads); err != nil {
				return nil, err
			}
		}
	}
	return leader, nil
}

// augment gives partition q a leader: a breadth-first search over chains
// "replica z of q leads s, another replica w of s takes s over" to a node
// leading fewer than ceil(p/n), then leadership shifts along the chain. The
// chain exists by Hall's condition: a node holds at most ceil(p*R/n)
// replicas, so k partitions span at least k*R/ceil(p*R/n) nodes, which may
// lead k*R*ceil(p/n)/ceil(p*R/n) >= k partitions.
func (pl *planner) augment(q int, leader []string, leads map[string]int) error {
	type hop struct {
		from string // node that gives part up, "" for q itself
		part int
	}
	start := slices.Clone(pl.sets[q])
	slices.SortFunc(start, func(a, b string) int {
		return cmp.Or(cmp.Compare(leads[a], leads[b]), cmp.Compare(rank(q, a), rank(q, b)), cmp.Compare(a, b))
	})
	prev := make(map[string]hop, len(pl.members))
	var queue []string
	for _, id := range start {
		prev[id] = hop{part: q}
		queue = append(queue, id)
	}
	for len(queue) > 0 {
		z := queue[0]
		queue = queue[1:]
		if leads[z] < pl.maxLeads {
			leads[z]++
			for id := z; id != ""; id = prev[id].from {
				leader[prev[id].part] = id
			}
			return nil
		}
		for s, l := range leader {
			if l != z {
				continue
			}
			for _, w := range pl.sets[s] {
				if _, seen := prev[w]; !seen {
					prev[w] = hop{from: z, part: s}
					queue = append(queue, w)
				}
			}
		}
	}
	return fmt.Errorf("no leader for partition %d", q) // ruled out by Hall's condition
}

// raise gives node u, leading fewer than floor(p/n), one more partition: a
// breadth-first search over chains "u holds s1, led by w1; w1 holds s2, led
// by w2; ..." to a node leading more than floor(p/n), then each node on the
// chain takes over the next one's partition. The chain exists: if no node
// reachable from u led more, the reachable nodes would lead every partition
// they hold, at least floor(p*R/n)/R >= floor(p/n) per node, while leading
// fewer than floor(p/n) per node.
func (pl *planner) raise(u string, leader []string, leads map[string]int) error {
	type hop struct {
		to   string // node that takes part over
		part int
	}
	prev := map[string]hop{u: {}}
	queue := []string{u}
	for len(queue) > 0 {
		z := queue[0]
		queue = queue[1:]
		for s, w := range leader {
			if _, seen := prev[w]; seen || !slices.Contains(pl.sets[s], z) {
				continue
			}
			prev[w] = hop{to: z, part: s}
			if leads[w] > pl.minLeads {
				leads[w]--
				leads[u]++
				for id := w; id != u; id = prev[id].to {
					leader[prev[id].part] = prev[id].to
				}
				return nil
			}
			queue = append(queue, w)
		}
	}
	return fmt.Errorf("no partition for %s to lead", u) // ruled out above
}

// ringOwners returns consistent's owner of each of p partitions: the
// library's partition ids are ours, 0..p-1. members must be sorted: the ring
// keeps the last member added when two virtual nodes collide.
func ringOwners(members []string, p int) (owners []string, err error) {
	defer func() {
		// consistent panics when a partition finds no room. Its load bound
		// rules that out unless virtual nodes collide; report it, never crash.
		if v := recover(); v != nil {
			err = fmt.Errorf("consistent ring: %v", v)
		}
	}()
	ms := make([]consistent.Member, len(members))
	for i, id := range members {
		ms[i] = ringMember(id)
	}
	c := consistent.New(ms, consistent.Config{
		Hasher:            ringHasher{},
		PartitionCount:    p,
		ReplicationFactor: virtualNodes,
		Load:              ringLoad,
	})
	owners = make([]string, p)
	for q := range owners {
		owners[q] = c.GetPartitionOwner(q).String()
	}
	return owners, nil
}

type ringMember string

func (m ringMember) String() string { return string(m) }

type ringHasher struct{}

func (ringHasher) Sum64(b []byte) uint64 { return xxhash.Sum64(b) }

// rank orders nodes for partition q: xxhash64(q as 8 bytes little-endian,
// id). Tie-breaks by rank spread partitions over nodes instead of favouring
// the smallest id.
func rank(q int, id string) uint64 {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(q))
	h := xxhash.New()
	_, _ = h.Write(b[:])
	_, _ = h.WriteString(id)
	return h.Sum64()
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

func bit(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Move is the change partition Partition needs between two placements.
type Move struct {
	Partition int
	Add       []string // replicas to create, in the new placement's order
	Remove    []string // replicas to delete, in the old placement's order
	Leader    string   // new preferred leader, "" when unchanged or none
}

// Diff lists the moves from one placement to another by ascending partition,
// leaving out partitions that keep their replicas and leader. Either
// placement may be empty (bootstrap, teardown); a shorter one has no replicas
// in the missing partitions.
func Diff(from, to Placement) []Move {
	var moves []Move
	for q := range max(len(from.Replicas), len(to.Replicas)) {
		var a, b []string
		if q < len(from.Replicas) {
			a = from.Replicas[q]
		}
		if q < len(to.Replicas) {
			b = to.Replicas[q]
		}
		m := Move{Partition: q, Add: missing(b, a), Remove: missing(a, b)}
		if len(b) > 0 && (len(a) == 0 || a[0] != b[0]) {
			m.Leader = b[0]
		}
		if len(m.Add) > 0 || len(m.Remove) > 0 || m.Leader != "" {
			moves = append(moves, m)
		}
	}
	return moves
}

// missing returns the ids of a that are not in b, in a's order.
func missing(a, b []string) []string {
	var out []string
	for _, id := range a {
		if !slices.Contains(b, id) {
			out = append(out, id)
		}
	}
	return out
}
