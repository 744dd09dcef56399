package failpoint

import "errors"

// ErrInjected is the error an "error" point returns.
var ErrInjected = errors.New("failpoint: injected error")
