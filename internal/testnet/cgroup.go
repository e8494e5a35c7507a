package testnet

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

var cgCount int

// NewCgroup creates a cgroup (v2) for the test and moves the test process
// into it, so that the daemon's socket programs (--cgroup) see the test's
// own connections and no other process's. The hierarchy is mounted again
// under the test's temporary directory, because `ip netns exec` (which
// runs the daemon) remounts /sys and hides /sys/fs/cgroup. When the test
// ends the process moves back, and the cgroup and the mount are removed.
func NewCgroup(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	orig, found := "", false
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "0::"); ok {
			orig, found = rest, true
		}
	}
	if !found {
		t.Fatalf("the test process is in no cgroup v2:\n%s", b)
	}
	root := filepath.Join(t.TempDir(), "cgroup2")
	if err := os.Mkdir(root, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("cgroup2", root, "cgroup2", 0, ""); err != nil {
		t.Fatalf("mount cgroup2 at %s: %v", root, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(root, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", root, err)
		}
	})
	cgCount++
	dir := filepath.Join(root, fmt.Sprintf("bpfnet-test-%s-%d", runID, cgCount))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("create cgroup: %v", err)
	}
	move := func(to string) error {
		return os.WriteFile(filepath.Join(to, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0o644)
	}
	t.Cleanup(func() {
		if err := move(filepath.Join(root, orig)); err != nil {
			t.Errorf("move the test process back to %s: %v", orig, err)
		}
		if err := os.Remove(dir); err != nil {
			t.Errorf("remove cgroup %s: %v", dir, err)
		}
	})
	if err := move(dir); err != nil {
		t.Fatalf("move the test process into %s: %v", dir, err)
	}
	return dir
}
