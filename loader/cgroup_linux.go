package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Socket hooks are attached to a cgroup (v2) directory with pinned links
// under Root/cgroup/, one per attach type, updated in place on restart.

func (a *Attacher) cgroupPin(typ ebpf.AttachType) string {
	return filepath.Join(a.Root, "cgroup", typ.String())
}

// AttachCgroup attaches prog to the cgroup at path for typ (e.g.
// ebpf.AttachCGroupInet4Connect), replacing bpfnet's previous program
// there without a gap.
func (a *Attacher) AttachCgroup(path string, typ ebpf.AttachType, prog *ebpf.Program) error {
	pin := a.cgroupPin(typ)
	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		defer l.Close()
		if info, err := l.Info(); err == nil && info.Cgroup() != nil && info.Cgroup().CgroupId == cgroupID(path) {
			return l.Update(prog)
		}
		// Another cgroup than configured now: move.
		if err := l.Unpin(); err != nil {
			return fmt.Errorf("unpin %s: %w", pin, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("open pinned link %s: %w", pin, err)
	}
	l, err := link.AttachCgroup(link.CgroupOptions{Path: path, Attach: typ, Program: prog})
	if err != nil {
		return fmt.Errorf("attach %s to cgroup %s: %w", progName(prog), path, err)
	}
	defer l.Close()
	if err := os.MkdirAll(filepath.Dir(pin), 0o700); err != nil {
		return err
	}
	if err := l.Pin(pin); err != nil {
		return fmt.Errorf("pin link: %w", err)
	}
	return nil
}

// DetachCgroup removes bpfnet's program of type typ from its cgroup.
func (a *Attacher) DetachCgroup(typ ebpf.AttachType) error {
	err := os.Remove(a.cgroupPin(typ))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// QueryCgroup returns the program bpfnet has attached for typ.
func (a *Attacher) QueryCgroup(typ ebpf.AttachType) (ebpf.ProgramID, bool) {
	l, err := link.LoadPinnedLink(a.cgroupPin(typ), nil)
	if err != nil {
		return 0, false
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		return 0, false
	}
	return info.Program, true
}

// cgroupID is the id of the cgroup at path (its inode number), 0 if
// unknown.
func cgroupID(path string) uint64 {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return 0
	}
	return st.Ino
}

// CheckCgroup reports whether path is a cgroup v2 directory.
func CheckCgroup(path string) error {
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil {
		return fmt.Errorf("cgroup %s: %w", path, err)
	}
	if fs.Type != unix.CGROUP2_SUPER_MAGIC {
		return fmt.Errorf("%s is not a cgroup v2 directory", path)
	}
	return nil
}
