package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The file systems the datapath needs, and where bpfnetd mounts them when
// the host has none, as Cilium's agent does: a bpf filesystem for the pins
// and a cgroup v2 hierarchy for the socket programs.
const (
	// BPFFSMount is the conventional bpffs mount point; a --bpffs root
	// below it gets a bpffs mounted here when there is none.
	BPFFSMount = "/sys/fs/bpf"
	// DefaultRoot is where bpfnetd pins its maps and links unless told.
	DefaultRoot = BPFFSMount + "/bpfnet"
	// Cgroup2Mount is where bpfnetd mounts cgroup2 when the host has no
	// cgroup v2 hierarchy at its usual place: in a directory of its own
	// below it, named by its pid (cgroup2MountPoint).
	Cgroup2Mount = "/run/bpfnet/cgroupv2"
)

// Mount is a file system the datapath uses, and how it came to be there.
type Mount struct {
	Path string
	// Mounted is true when bpfnetd mounted it (it was not there).
	Mounted bool
	// Private is true when bpfnetd mounted it in a mount namespace other
	// than the host's (ip netns exec, a container without the host's
	// mounts): the mount, and every pin in it, ends with the daemon.
	Private bool
}

// CheckBPFFS reports whether root lies on a bpf filesystem; when it does
// not, wouldMount says whether EnsureBPFFS would mount one for it.
func CheckBPFFS(root string) (onBPFFS, wouldMount bool, err error) {
	if root == "" {
		return false, false, errors.New("the bpffs root is empty")
	}
	// root itself may not exist yet: its nearest existing ancestor tells.
	dir := filepath.Clean(root)
	for fsType(dir) == 0 && filepath.Dir(dir) != dir {
		dir = filepath.Dir(dir)
	}
	if fsType(dir) == unix.BPF_FS_MAGIC {
		return true, false, nil
	}
	if !under(root, BPFFSMount) {
		return false, false, fmt.Errorf("%s is not on a bpf filesystem (bpfnetd mounts one only at %s; mount one with `mount -t bpf bpf DIR`)", root, BPFFSMount)
	}
	if fsType(BPFFSMount) == unix.BPF_FS_MAGIC {
		// A bpffs is there, yet root is not on it: something else is
		// mounted between them.
		return false, false, fmt.Errorf("%s is not on the bpf filesystem mounted at %s", root, BPFFSMount)
	}
	return false, true, nil
}

// EnsureBPFFS makes sure root lies on a bpf filesystem, mounting one at
// BPFFSMount when root is below it and nothing is mounted there.
func EnsureBPFFS(root string) (Mount, error) {
	on, mount, err := CheckBPFFS(root)
	switch {
	case err != nil:
		return Mount{}, err
	case on:
		return Mount{Path: root}, nil
	case !mount:
		return Mount{}, fmt.Errorf("%s is not on a bpf filesystem", root)
	}
	if err := os.MkdirAll(BPFFSMount, 0o755); err != nil {
		return Mount{}, fmt.Errorf("mount bpffs at %s: %w", BPFFSMount, err)
	}
	if err := unix.Mount("bpf", BPFFSMount, "bpf", 0, "mode=0700"); err != nil {
		return Mount{}, fmt.Errorf("mount bpffs at %s: %w", BPFFSMount, err)
	}
	return Mount{Path: BPFFSMount, Mounted: true, Private: PrivateMountNS()}, nil
}

// FindCgroup2 returns the host's cgroup v2 hierarchy at its usual place:
// /sys/fs/cgroup on unified hosts, /sys/fs/cgroup/unified on hybrid ones,
// or one bpfnetd mounted below Cgroup2Mount (visible when it was not in a
// mount namespace of its own). It deliberately does not take any cgroup2
// entry of the mount table, which may be another program's scratch mount
// of a sub-hierarchy.
func FindCgroup2() (string, bool) {
	candidates := []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"}
	if dirs, err := os.ReadDir(Cgroup2Mount); err == nil {
		for _, d := range dirs {
			candidates = append(candidates, filepath.Join(Cgroup2Mount, d.Name()))
		}
	}
	for _, p := range candidates {
		if fsType(p) == unix.CGROUP2_SUPER_MAGIC {
			return p, true
		}
	}
	return "", false
}

// cgroup2MountPoint is where this daemon mounts cgroup2: a directory of
// its own, so that daemons in mount namespaces of their own (ip netns
// exec, private systemd units) never share a mount point on the host's
// /run. Removing a directory detaches the mounts on it in every
// namespace, so a shared one would take the others' hierarchy away when
// the first daemon stopped.
func cgroup2MountPoint() string { return filepath.Join(Cgroup2Mount, strconv.Itoa(os.Getpid())) }

// EnsureCgroup2 returns the host's cgroup v2 hierarchy (FindCgroup2),
// mounting one below Cgroup2Mount when there is none.
func EnsureCgroup2() (Mount, error) {
	if p, ok := FindCgroup2(); ok {
		return Mount{Path: p}, nil
	}
	at := cgroup2MountPoint()
	if err := os.MkdirAll(at, 0o700); err != nil {
		return Mount{}, fmt.Errorf("mount cgroup2 at %s: %w", at, err)
	}
	if err := unix.Mount("cgroup2", at, "cgroup2", 0, ""); err != nil {
		removeMountPoint(at)
		return Mount{}, fmt.Errorf("mount cgroup2 at %s: %w", at, err)
	}
	return Mount{Path: at, Mounted: true, Private: PrivateMountNS()}, nil
}

// removeMountPoint removes a cgroup2 mount point bpfnetd made, and the
// directories above it up to /run/bpfnet once empty (another daemon's
// keep them).
func removeMountPoint(at string) {
	os.Remove(at)
	os.Remove(Cgroup2Mount)
	os.Remove(filepath.Dir(Cgroup2Mount))
}

// Release undoes a private mount bpfnetd made (nothing else can see it,
// and it would end with the daemon anyway) and removes its mount point
// when bpfnetd created it outside the private namespace's own /sys. Host
// mounts stay, so pins and attachments outlive the daemon.
func (m Mount) Release() error {
	if !m.Mounted || !m.Private {
		return nil
	}
	if err := unix.Unmount(m.Path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("unmount %s: %w", m.Path, err)
	}
	if filepath.Dir(m.Path) == Cgroup2Mount {
		removeMountPoint(m.Path) // on the host's /run: leave nothing there
	}
	return nil
}

// fsType is the file system magic of path, 0 if it cannot be read.
func fsType(path string) int64 {
	var st unix.Statfs_t
	if unix.Statfs(path, &st) != nil {
		return 0
	}
	return int64(st.Type)
}

// under reports whether path is dir or below it.
func under(path, dir string) bool {
	path = filepath.Clean(path)
	return path == dir || strings.HasPrefix(path, dir+"/")
}

// PrivateMountNS reports whether no other process shares this process's
// mount namespace: mounts made here then vanish when the daemon exits.
// That is the case under `ip netns exec` (each command gets a mount
// namespace of its own), in a systemd unit with private mounts, and in a
// container started without the host's /sys/fs/bpf.
func PrivateMountNS() bool {
	var self unix.Stat_t
	if unix.Stat("/proc/self/ns/mnt", &self) != nil {
		return false
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return false
	}
	me := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == me {
			continue
		}
		var st unix.Stat_t
		if unix.Stat("/proc/"+e.Name()+"/ns/mnt", &st) == nil && st.Ino == self.Ino && st.Dev == self.Dev {
			return false
		}
	}
	return true
}
