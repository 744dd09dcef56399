package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sync"
)

// ErrDamaged: a group's log or snapshots are not what this node recorded
// having. The node refuses to start rather than serve what is left.
var ErrDamaged = errors.New("damaged storage")

// manifestFile records, outside every log store, how far each group had
// applied: losing a store (or its file being replaced) cannot erase the
// record, so a group whose log and snapshots end below it is refused.
const manifestFile = "manifest.json"

// manifest holds each group's applied-index floor. It is raised
// periodically and at a clean shutdown, and reset before a replica's data
// is dropped on purpose. Applied entries are committed and synced in this
// node's log (or covered by a snapshot), and a committed entry is never
// truncated, so a sound store always reaches its floor.
type manifest struct {
	path   string
	mu     sync.Mutex
	floors map[string]uint64 // by group name: "meta", "p3"
}

type manifestJSON struct {
	Floors map[string]uint64 `json:"applied_index_floors"`
}

func loadManifest(dir string) (*manifest, error) {
	m := &manifest{path: filepath.Join(dir, manifestFile), floors: map[string]uint64{}}
	b, err := os.ReadFile(m.path)
	if errors.Is(err, os.ErrNotExist) {
		return m, nil
	}
	if err != nil {
		return nil, err
	}
	var j manifestJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("%w: %s does not parse (%v): restore it from a backup, or remove it to start without its checks", ErrDamaged, m.path, err)
	}
	maps.Copy(m.floors, j.Floors)
	return m, nil
}

func (m *manifest) floor(group string) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.floors[group]
}

// raise records applied indexes that passed their groups' floors.
func (m *manifest) raise(applied map[string]uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	changed := false
	for g, idx := range applied {
		if idx > m.floors[g] {
			m.floors[g], changed = idx, true
		}
	}
	if !changed {
		return nil
	}
	return m.saveLocked()
}

// set replaces every floor: after --accept-data-loss, what is left.
func (m *manifest) set(applied map[string]uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.floors = maps.Clone(applied)
	return m.saveLocked()
}

// reset forgets a group's floor, durably, before its data is dropped.
func (m *manifest) reset(group string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.floors[group]; !ok {
		return nil
	}
	delete(m.floors, group)
	return m.saveLocked()
}

func (m *manifest) saveLocked() error {
	b, err := json.MarshalIndent(manifestJSON{Floors: m.floors}, "", "  ")
	if err != nil {
		return err
	}
	return WriteFileDurable(m.path, append(b, '\n'))
}
