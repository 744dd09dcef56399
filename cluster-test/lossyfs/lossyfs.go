// Package lossyfs is a FUSE file system for power-loss tests: a loopback
// over a backing directory that remembers what was not yet made durable
// and undoes it when the power is "lost". SIGKILL keeps the page cache, so
// only this catches a missing fsync.
//
// The durability model is the strict POSIX one:
//   - file data and size are durable once the file is fsynced (fsync or
//     fdatasync); until then the bytes a write overwrote (and the size the
//     file had) are kept in memory, per inode;
//   - a create, mkdir, unlink, rmdir or rename is durable once every
//     directory it changed is fsynced; until then it is journalled (an
//     unlinked or overwritten entry moves to a trash beside the backing
//     directory).
//
// PowerLoss unmounts and undoes the journal in reverse, then restores every
// inode's old bytes and size. Writes through a writable shared mmap are not
// seen (topkd's stores only read through mmap).
package lossyfs

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// FS is one mount.
type FS struct {
	backing, mountpoint, trash string
	server                     *fuse.Server
	busyWait                   time.Duration // how long unmount retries a busy mount

	mu      sync.Mutex
	files   map[uint64]*fileUndo // by backing inode number
	journal []*nsOp
	trashN  int
}

// fileUndo is what restores a file to its last synced state.
type fileUndo struct {
	fd    int   // a dup of a backing descriptor, so the inode stays reachable
	size  int64 // the size at the last sync
	saved []savedRange
}

type savedRange struct {
	off int64
	old []byte
}

// nsOp is a journalled namespace change; it is durable once every
// directory in dirs was fsynced after it.
type nsOp struct {
	kind      string // "create", "remove" (moved to trash), "rename"
	dirs      []string
	path, to  string // create/remove: path; rename: path -> to
	trashPath string // remove: where the entry went
}

// Mount mounts a lossy loopback of backing at mountpoint.
func Mount(backing, mountpoint string) (*FS, error) {
	f := &FS{backing: filepath.Clean(backing), mountpoint: mountpoint, trash: filepath.Clean(backing) + ".trash",
		files: map[uint64]*fileUndo{}, busyWait: 20 * time.Second}
	if err := os.MkdirAll(f.trash, 0o755); err != nil {
		return nil, err
	}
	inner, err := fs.NewLoopbackRoot(f.backing)
	if err != nil {
		return nil, err
	}
	rootNode := &node{LoopbackNode: inner.(*fs.LoopbackNode), fs: f}
	rootNode.RootData.RootNode = rootNode
	srv, err := fs.Mount(mountpoint, rootNode, &fs.Options{MountOptions: fuse.MountOptions{FsName: "lossyfs", Name: "lossyfs"}})
	if err != nil {
		return nil, fmt.Errorf("mount lossyfs at %s: %w", mountpoint, err)
	}
	f.server = srv
	return f, nil
}

// Unmount unmounts, keeping what was written (a clean shutdown).
func (f *FS) Unmount() error {
	err := f.unmount()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, u := range f.files {
		syscall.Close(u.fd)
	}
	f.files, f.journal = map[uint64]*fileUndo{}, nil
	return err
}

// unmount retries while the mount is busy: the kernel holds a killed
// process's files until this server has answered their release requests,
// which a loaded host may take a while to get to. If the mount stays busy
// and no process holds anything under it (only the kernel does), it is
// detached lazily: nothing can write through it any more. A process still
// holding it is the caller's bug and is named.
func (f *FS) unmount() error {
	deadline := time.Now().Add(f.busyWait)
	for {
		err := f.server.Unmount()
		if err == nil || !strings.Contains(err.Error(), "busy") {
			return err
		}
		if time.Now().After(deadline) {
			if h := holders(f.mountpoint); len(h) > 0 {
				return fmt.Errorf("%w; held by %s", err, strings.Join(h, ", "))
			}
			if out, lerr := exec.Command("fusermount3", "-u", "-z", f.mountpoint).CombinedOutput(); lerr != nil {
				return fmt.Errorf("%w; lazy unmount: %v: %s", err, lerr, bytes.TrimSpace(out))
			}
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// holders names the processes with a file, directory or mapping under dir.
func holders(dir string) []string {
	var found []string
	pids, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range pids {
		links, _ := filepath.Glob(p + "/fd/*")
		links = append(links, p+"/cwd", p+"/root")
		held := false
		for _, l := range links {
			if t, err := os.Readlink(l); err == nil && (t == dir || strings.HasPrefix(t, dir+"/")) {
				held = true
				break
			}
		}
		if maps, err := os.ReadFile(p + "/maps"); err == nil && bytes.Contains(maps, []byte(dir+"/")) {
			held = true
		}
		if held {
			comm, _ := os.ReadFile(p + "/comm")
			found = append(found, fmt.Sprintf("pid %s (%s)", filepath.Base(p), bytes.TrimSpace(comm)))
		}
	}
	return found
}

// PowerLoss unmounts (every process using the mount must be gone) and
// undoes every change not made durable. It returns how many namespace
// changes and files it undid.
func (f *FS) PowerLoss() (ops, files int, err error) {
	if err := f.unmount(); err != nil {
		return 0, 0, fmt.Errorf("unmount %s: %w", f.mountpoint, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, op := range slices.Backward(f.journal) {
		var uerr error
		switch op.kind {
		case "create":
			uerr = os.RemoveAll(op.path)
		case "remove":
			uerr = os.Rename(op.trashPath, op.path)
		case "rename":
			uerr = os.Rename(op.to, op.path)
		}
		if uerr != nil && !os.IsNotExist(uerr) {
			return ops, files, fmt.Errorf("undo %s %s: %w", op.kind, op.path, uerr)
		}
		ops++
	}
	for _, u := range f.files {
		for _, s := range slices.Backward(u.saved) {
			if _, err := syscall.Pwrite(u.fd, s.old, s.off); err != nil {
				return ops, files, fmt.Errorf("undo a write: %w", err)
			}
		}
		if err := syscall.Ftruncate(u.fd, u.size); err != nil {
			return ops, files, fmt.Errorf("undo a size change: %w", err)
		}
		syscall.Close(u.fd)
		files++
	}
	f.files, f.journal = map[uint64]*fileUndo{}, nil
	return ops, files, nil
}

// saveLocked keeps the bytes [off, off+n) of the file open at fd before
// they change, and its size at the first change since the last sync.
func (f *FS) saveLocked(fd int, off, n int64) error {
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return err
	}
	u := f.files[st.Ino]
	if u == nil {
		dup, err := syscall.Dup(fd)
		if err != nil {
			return err
		}
		u = &fileUndo{fd: dup, size: st.Size}
		f.files[st.Ino] = u
	}
	end := min(off+n, st.Size)
	if end <= off {
		return nil
	}
	old := make([]byte, end-off)
	if _, err := syscall.Pread(fd, old, off); err != nil {
		return err
	}
	u.saved = append(u.saved, savedRange{off: off, old: old})
	return nil
}

// synced forgets what restores the file open at fd.
func (f *FS) synced(fd int) {
	var st syscall.Stat_t
	if syscall.Fstat(fd, &st) != nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if u := f.files[st.Ino]; u != nil {
		syscall.Close(u.fd)
		delete(f.files, st.Ino)
	}
}

// dirSynced makes the journalled changes of dir durable where it was
// their last unsynced directory.
func (f *FS) dirSynced(dir string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.journal = slices.DeleteFunc(f.journal, func(op *nsOp) bool {
		op.dirs = slices.DeleteFunc(op.dirs, func(d string) bool { return d == dir })
		return len(op.dirs) == 0
	})
}

func (f *FS) record(op *nsOp) {
	f.mu.Lock()
	f.journal = append(f.journal, op)
	f.mu.Unlock()
}

// toTrashLocked moves path into the trash and journals it.
func (f *FS) toTrash(path string) error {
	f.mu.Lock()
	f.trashN++
	t := filepath.Join(f.trash, fmt.Sprint(f.trashN))
	f.mu.Unlock()
	if err := os.Rename(path, t); err != nil {
		return err
	}
	f.record(&nsOp{kind: "remove", dirs: []string{filepath.Dir(path)}, path: path, trashPath: t})
	return nil
}

// node is a loopback node whose changes are recorded.
type node struct {
	*fs.LoopbackNode
	fs *FS
}

// WrapChild makes every node of the tree a recording one.
func (n *node) WrapChild(ctx context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	return &node{LoopbackNode: ops.(*fs.LoopbackNode), fs: n.fs}
}

func (n *node) backingPath(name string) string {
	return filepath.Join(n.RootData.Path, n.EmbeddedInode().Path(nil), name)
}

func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	p := n.backingPath(name)
	_, statErr := os.Lstat(p)
	ino, fh, fl, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	if errno != 0 {
		return ino, fh, fl, errno
	}
	if os.IsNotExist(statErr) {
		n.fs.record(&nsOp{kind: "create", dirs: []string{filepath.Dir(p)}, path: p})
	}
	return ino, n.wrap(fh), fl, 0
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, fl, errno := n.LoopbackNode.Open(ctx, flags)
	if errno != 0 {
		return fh, fl, errno
	}
	return n.wrap(fh), fl, 0
}

func (n *node) wrap(fh fs.FileHandle) fs.FileHandle {
	lf := fh.(*fs.LoopbackFile)
	fd, _ := lf.PassthroughFd()
	return &file{lf: lf, fd: fd, fs: n.fs}
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	ino, errno := n.LoopbackNode.Mkdir(ctx, name, mode, out)
	if errno == 0 {
		p := n.backingPath(name)
		n.fs.record(&nsOp{kind: "create", dirs: []string{filepath.Dir(p)}, path: p})
	}
	return ino, errno
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	return fs.ToErrno(n.fs.toTrash(n.backingPath(name)))
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	p := n.backingPath(name)
	entries, err := os.ReadDir(p)
	if err != nil {
		return fs.ToErrno(err)
	}
	if len(entries) > 0 {
		return syscall.ENOTEMPTY
	}
	return fs.ToErrno(n.fs.toTrash(p))
}

func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if flags != 0 {
		return syscall.EINVAL // RENAME_EXCHANGE and RENAME_NOREPLACE are not modelled
	}
	from := n.backingPath(name)
	np, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	to := np.backingPath(newName)
	if _, err := os.Lstat(to); err == nil {
		if err := n.fs.toTrash(to); err != nil {
			return fs.ToErrno(err)
		}
	}
	if err := os.Rename(from, to); err != nil {
		return fs.ToErrno(err)
	}
	n.fs.record(&nsOp{kind: "rename", dirs: []string{filepath.Dir(from), filepath.Dir(to)}, path: from, to: to})
	return 0
}

func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if sz, ok := in.GetSize(); ok {
		fd := -1
		if lf, ok := f.(*file); ok {
			fd = lf.fd
		} else {
			h, err := os.OpenFile(n.backingPath(""), os.O_RDWR, 0)
			if err != nil {
				return fs.ToErrno(err)
			}
			defer h.Close()
			fd = int(h.Fd())
		}
		var st syscall.Stat_t
		if err := syscall.Fstat(fd, &st); err != nil {
			return fs.ToErrno(err)
		}
		n.fs.mu.Lock()
		err := n.fs.saveLocked(fd, int64(sz), max(st.Size-int64(sz), 0))
		n.fs.mu.Unlock()
		if err != nil {
			return fs.ToErrno(err)
		}
	}
	if lf, ok := f.(*file); ok {
		f = lf.lf
	}
	return n.LoopbackNode.Setattr(ctx, f, in, out)
}

func (n *node) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if lf, ok := f.(*file); ok {
		f = lf.lf
	}
	return n.LoopbackNode.Getattr(ctx, f, out)
}

// Fsync of a directory (without an open handle of it) makes its entries
// durable; a file's goes to its handle.
func (n *node) Fsync(ctx context.Context, f fs.FileHandle, flags uint32) syscall.Errno {
	if lf, ok := f.(*file); ok {
		return lf.Fsync(ctx, flags)
	}
	n.fs.dirSynced(n.backingPath(""))
	return 0
}

func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, fl, errno := n.LoopbackNode.OpendirHandle(ctx, flags)
	if errno != 0 {
		return fh, fl, errno
	}
	return &dir{FileHandle: fh, path: n.backingPath(""), fs: n.fs}, fl, 0
}

// dir is an open directory whose fsync makes its entries durable.
type dir struct {
	fs.FileHandle
	path string
	fs   *FS
}

func (d *dir) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	return d.FileHandle.(fs.FileReaddirenter).Readdirent(ctx)
}

func (d *dir) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	return d.FileHandle.(fs.FileSeekdirer).Seekdir(ctx, off)
}

func (d *dir) Releasedir(ctx context.Context, flags uint32) {
	d.FileHandle.(fs.FileReleasedirer).Releasedir(ctx, flags)
}

func (d *dir) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	if errno := d.FileHandle.(fs.FileFsyncdirer).Fsyncdir(ctx, flags); errno != 0 {
		return errno
	}
	d.fs.dirSynced(d.path)
	return 0
}

// file is an open file whose writes are recorded. It forwards only the
// calls it can see: no writev, no passthrough to the kernel.
type file struct {
	lf *fs.LoopbackFile
	fd int
	fs *FS
}

func (f *file) Read(ctx context.Context, buf []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return f.lf.Read(ctx, buf, off)
}

func (f *file) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	f.fs.mu.Lock()
	err := f.fs.saveLocked(f.fd, off, int64(len(data)))
	f.fs.mu.Unlock()
	if err != nil {
		return 0, fs.ToErrno(err)
	}
	return f.lf.Write(ctx, data, off)
}

func (f *file) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if errno := f.lf.Fsync(ctx, flags); errno != 0 {
		return errno
	}
	f.fs.synced(f.fd)
	return 0
}

func (f *file) Allocate(ctx context.Context, off, size uint64, mode uint32) syscall.Errno {
	f.fs.mu.Lock()
	err := f.fs.saveLocked(f.fd, int64(off), 0) // the size it had
	f.fs.mu.Unlock()
	if err != nil {
		return fs.ToErrno(err)
	}
	return f.lf.Allocate(ctx, off, size, mode)
}

func (f *file) Release(ctx context.Context) syscall.Errno { return f.lf.Release(ctx) }
func (f *file) Flush(ctx context.Context) syscall.Errno   { return f.lf.Flush(ctx) }
func (f *file) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	return f.lf.Getattr(ctx, out)
}
func (f *file) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	return f.lf.Lseek(ctx, off, whence)
}
func (f *file) Getlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32, out *fuse.FileLock) syscall.Errno {
	return f.lf.Getlk(ctx, owner, lk, flags, out)
}
func (f *file) Setlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return f.lf.Setlk(ctx, owner, lk, flags)
}
func (f *file) Setlkw(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return f.lf.Setlkw(ctx, owner, lk, flags)
}
