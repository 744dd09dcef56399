package server

import (
	"os"
	"path/filepath"
)

// WriteFileDurable replaces path with data so that after a crash or a power
// loss the file holds either its old content or data, never a torn or empty
// file: a temporary file is written and fsynced, renamed over path, and the
// directory fsynced (cluster-test/lossyfs found a node-id file emptied by a
// power loss when it was written without).
func WriteFileDurable(path string, data []byte) error {
	return writeFileDurable(path, data, 0o644)
}

// writeSecretDurable is WriteFileDurable for a file only the owner reads.
func writeSecretDurable(path string, data []byte) error {
	return writeFileDurable(path, data, 0o600)
}

func writeFileDurable(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}
