package lossyfs

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func mount(t *testing.T) (*FS, string, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting FUSE needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	base := t.TempDir()
	backing, mnt := filepath.Join(base, "backing"), filepath.Join(base, "mnt")
	for _, d := range []string{backing, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f, err := Mount(backing, mnt)
	if err != nil {
		t.Fatal(err)
	}
	return f, backing, mnt
}

func write(t *testing.T, path string, data []byte, off int64, sync bool) {
	t.Helper()
	h, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if _, err := h.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
	if sync {
		if err := h.Sync(); err != nil {
			t.Fatal(err)
		}
	}
}

func syncDir(t *testing.T, path string) {
	t.Helper()
	d, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
}

// What was fsynced survives; everything else is undone.
func TestPowerLoss(t *testing.T) {
	f, backing, mnt := mount(t)
	// durable: created, written, fsynced, directory fsynced
	write(t, filepath.Join(mnt, "a"), []byte("hello"), 0, true)
	syncDir(t, mnt)
	// a's later writes, not synced: overwrite and extend
	write(t, filepath.Join(mnt, "a"), []byte("HELLO world"), 0, false)
	// sub/c: all durable, then truncated without sync
	if err := os.Mkdir(filepath.Join(mnt, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(mnt, "sub", "c"), []byte("0123456789"), 0, true)
	syncDir(t, filepath.Join(mnt, "sub"))
	syncDir(t, mnt)
	if err := os.Truncate(filepath.Join(mnt, "sub", "c"), 3); err != nil {
		t.Fatal(err)
	}
	// d: durable, then renamed over by e (synced data), directory not synced
	write(t, filepath.Join(mnt, "d"), []byte("old d"), 0, true)
	syncDir(t, mnt)
	// b: data synced but its directory entry never was
	write(t, filepath.Join(mnt, "b"), []byte("b"), 0, true)
	write(t, filepath.Join(mnt, "e"), []byte("new d"), 0, true)
	if err := os.Rename(filepath.Join(mnt, "e"), filepath.Join(mnt, "d")); err != nil {
		t.Fatal(err)
	}
	// sub/c unlinked, not synced
	if err := os.Remove(filepath.Join(mnt, "sub", "c")); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(filepath.Join(mnt, "a"))
	if string(got) != "HELLO world" {
		t.Fatalf("before the power loss a = %q", got)
	}

	ops, files, err := f.PowerLoss()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("undid %d namespace changes and %d files", ops, files)
	for name, want := range map[string]string{"a": "hello", "d": "old d", filepath.Join("sub", "c"): "0123456789"} {
		got, err := os.ReadFile(filepath.Join(backing, name))
		if err != nil || !bytes.Equal(got, []byte(want)) {
			t.Errorf("%s after the power loss: %q, %v; want %q", name, got, err, want)
		}
	}
	for _, gone := range []string{"b", "e"} {
		if _, err := os.Stat(filepath.Join(backing, gone)); !os.IsNotExist(err) {
			t.Errorf("%s survived the power loss (%v): its directory entry was never synced", gone, err)
		}
	}
}

// A clean unmount keeps everything.
func TestUnmountKeeps(t *testing.T) {
	f, backing, mnt := mount(t)
	write(t, filepath.Join(mnt, "x"), []byte("kept"), 0, false)
	if err := f.Unmount(); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(backing, "x")); err != nil || string(got) != "kept" {
		t.Errorf("x = %q, %v", got, err)
	}
}

// A power loss while a live process still holds a file under the mount is
// the caller's bug: it fails and names the holder instead of detaching.
func TestPowerLossNamesHolder(t *testing.T) {
	f, _, mnt := mount(t)
	f.busyWait = 200 * time.Millisecond
	h, err := os.Create(filepath.Join(mnt, "held"))
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = f.PowerLoss()
	want := fmt.Sprintf("pid %d (", os.Getpid())
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("power loss with a file held open: %v; want an error naming %q", err, want)
	}
	h.Close()
	if err := f.Unmount(); err != nil {
		t.Fatal(err)
	}
}
