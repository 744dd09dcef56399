//go:build !failpoint

package failpoint

// Enabled reports whether points are compiled in.
const Enabled = false

// Hit returns nil: points are compiled in only with the "failpoint" tag.
func Hit(string) error { return nil }

// Arm does nothing: points are compiled in only with the "failpoint" tag.
func Arm(string) {}
