//go:build amd64 || arm64

package fsm

import "unsafe"

// prefetch hints that the cache line at p will be read soon. Unlike a load,
// it retires at once, so the apply loop keeps running while the line comes
// in from memory; Go has no intrinsic for it.
//
//go:noescape
func prefetch(p unsafe.Pointer)
