package datapath

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"

	"golang.org/x/sys/unix"
)

func netipAddr(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip.To4())
	return a, ok && ip.To4() != nil
}

// CheckBPFFS makes sure root lies on a bpf filesystem, so pins survive
// the daemon.
func CheckBPFFS(root string) error {
	if root == "" {
		return fmt.Errorf("--bpffs must not be empty")
	}
	dir := root
	for {
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err == nil {
			if st.Type != unix.BPF_FS_MAGIC {
				return fmt.Errorf("--bpffs %s is not on a bpf filesystem (mount one with `mount -t bpf bpf /sys/fs/bpf`)", root)
			}
			return nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return fmt.Errorf("--bpffs %s: no existing parent directory", root)
		}
		dir = parent
	}
}
