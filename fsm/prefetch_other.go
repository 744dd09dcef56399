//go:build !amd64 && !arm64

package fsm

import "unsafe"

func prefetch(p unsafe.Pointer) {}
