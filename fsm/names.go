package fsm

import "fmt"

// MaxNameBytes bounds a leaderboard name.
const MaxNameBytes = 128

// CheckName applies the leaderboard name grammar to a new leaderboard:
// [A-Za-z0-9][A-Za-z0-9_.-]{0,127}. Names stay safe in URL paths (no "/",
// no leading "."), in metric labels and in logs. Leaderboards created
// before the rule keep their names: readable and droppable.
func CheckName(name string) error {
	if name == "" {
		return fmt.Errorf("leaderboard name is empty")
	}
	if len(name) > MaxNameBytes {
		return fmt.Errorf("leaderboard name of %d bytes: at most %d", len(name), MaxNameBytes)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if i > 0 {
			ok = ok || c == '_' || c == '.' || c == '-'
		}
		if !ok {
			return fmt.Errorf("leaderboard name %+q: want a letter or digit, then letters, digits, '_', '.' or '-' (at most %d)", cut(name), MaxNameBytes)
		}
	}
	return nil
}

// cut shortens a name for an error message.
func cut(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
