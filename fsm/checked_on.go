//go:build fsmcheck && linux && (amd64 || arm64)

package fsm

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"syscall"
)

// The checked build (-tags fsmcheck; make test-fsmcheck): freed off-heap
// memory is never reused and, where whole pages, made inaccessible, so a
// use after free faults at once instead of reading a newer owner's data;
// every applied batch runs a GC (so cleanups, which free, really run) and
// checks the invariants (check.go). Far too slow for production.
const checked = true

// retired counts blocks and slabs retired (the tests wait for it).
var retired atomic.Int64

// retire takes freed memory out of use for good: PROT_NONE when it is
// whole pages, else left mapped, poisoned and never handed out again. It
// reports true: the caller must not free or reuse the memory.
func retire(addr, size uintptr) bool {
	page := uintptr(syscall.Getpagesize())
	poison(addr, size)
	if addr%page == 0 && size%page == 0 {
		if _, _, errno := syscall.Syscall(syscall.SYS_MPROTECT, addr, size, syscall.PROT_NONE); errno != 0 {
			panic(fmt.Sprintf("fsmcheck: mprotect %#x+%d: %v", addr, size, errno))
		}
	}
	retired.Add(1)
	return true
}

func poison(addr, size uintptr) {
	ws := wordsAt(addr, int(size/8))
	for i := range ws {
		ws[i] = 0xdbdbdbdbdbdbdbdb
	}
}

// checkBatch runs after every applied batch, under the FSM's lock.
func checkBatch(st *state) {
	runtime.GC()
	if err := st.check(); err != nil {
		panic("fsmcheck: " + err.Error())
	}
}
