package history

import (
	"fmt"
	"math"
	"time"

	"github.com/anishathalye/porcupine"
)

// counterOp is one operation on an item's counter: a write adding n (maybe:
// its outcome is unknown, so it may have added nothing), or a read.
type counterOp struct {
	item  string
	n     int64
	read  bool
	maybe bool
}

// counterModel is a counter per item: reads return the sum of the writes
// linearized before them.
var counterModel = porcupine.NondeterministicModel{
	Partition: func(ops []porcupine.Operation) [][]porcupine.Operation {
		byItem := map[string][]porcupine.Operation{}
		var order []string
		for _, op := range ops {
			item := op.Input.(counterOp).item
			if _, ok := byItem[item]; !ok {
				order = append(order, item)
			}
			byItem[item] = append(byItem[item], op)
		}
		out := make([][]porcupine.Operation, 0, len(order))
		for _, item := range order {
			out = append(out, byItem[item])
		}
		return out
	},
	Init: func() []any { return []any{int64(0)} },
	Step: func(state, input, output any) []any {
		s, in := state.(int64), input.(counterOp)
		switch {
		case in.read:
			if output.(int64) == s {
				return []any{s}
			}
			return nil
		case in.maybe:
			return []any{s, s + in.n}
		default:
			return []any{s + in.n}
		}
	},
	DescribeOperation: func(input, output any) string {
		in := input.(counterOp)
		if in.read {
			return fmt.Sprintf("read %s -> %d", in.item, output)
		}
		return fmt.Sprintf("add %s %d (maybe %v)", in.item, in.n, in.maybe)
	},
}

// CheckLinearizable checks the writes and the reads at consistency level
// with porcupine (checker 3): per item, some order of the operations that
// respects real time explains every read. A write whose outcome is not
// known may take effect at any time after it began, or never; failed
// writes never take effect. The result is porcupine's: Ok, Illegal, or
// Unknown when timeout passed first.
func CheckLinearizable(writes []Write, reads []Read, level string, timeout time.Duration) (porcupine.CheckResult, int) {
	var base time.Time
	for _, w := range writes {
		if base.IsZero() || w.Start.Before(base) {
			base = w.Start
		}
	}
	at := func(t time.Time) int64 { return int64(t.Sub(base)) }
	var ops []porcupine.Operation
	for _, w := range writes {
		if w.Outcome == Failed {
			continue
		}
		ret := int64(math.MaxInt64)
		if w.Outcome == OK {
			ret = at(w.End)
		}
		for item, n := range w.Adds {
			ops = append(ops, porcupine.Operation{Input: counterOp{item: item, n: n, maybe: w.Outcome != OK},
				Call: at(w.Start), Return: ret})
		}
	}
	for _, r := range reads {
		if r.Consistency == level {
			ops = append(ops, porcupine.Operation{Input: counterOp{item: r.Item, read: true}, Output: r.Value,
				Call: at(r.Start), Return: at(r.End)})
		}
	}
	return porcupine.CheckOperationsTimeout(counterModel.ToModel(), ops, timeout), len(ops)
}
