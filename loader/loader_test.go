package loader

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfnet/bpfnet/bpf"
	"github.com/bpfnet/bpfnet/internal/testnet"
)

// A program the verifier rejects is reported with the verifier's log, not
// just "permission denied".
func TestVerifierLogReported(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("needs root (bpf) and CI is set")
		}
		t.Skip("needs root")
	}
	// Reads R2 before anything wrote it: the verifier refuses.
	_, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL", Instructions: asm.Instructions{
		asm.Mov.Reg(asm.R0, asm.R2),
		asm.Return(),
	}})
	if err == nil {
		t.Fatal("the kernel accepted a program reading an uninitialised register")
	}
	msg := loadError(err, "/sys/fs/bpf/x").Error()
	if !strings.Contains(msg, "verifier rejected") || !strings.Contains(msg, "R2 !read_ok") {
		t.Errorf("error lacks the verifier log: %s", msg)
	}
}

// A map pinned by an earlier version with another layout is replaced, not
// a reason to refuse to start; a compatible one is kept with its entries.
func TestIncompatiblePinReplaced(t *testing.T) {
	testnet.RequirePrivileges(t)
	root := testnet.MountBPFFS(t, t.TempDir())
	maps := filepath.Join(root, "maps")
	if err := os.MkdirAll(maps, 0o700); err != nil {
		t.Fatal(err)
	}
	// ep_by_ip as an older version had it: 8-byte values.
	old, err := ebpf.NewMap(&ebpf.MapSpec{Name: "ep_by_ip", Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if err := old.Pin(filepath.Join(maps, "ep_by_ip")); err != nil {
		t.Fatal(err)
	}
	c, err := Load(Options{Root: root})
	if err != nil {
		t.Fatalf("load over an incompatible pin: %v", err)
	}
	if len(c.Replaced) != 1 || !strings.HasPrefix(c.Replaced[0], "ep_by_ip (") || !strings.Contains(c.Replaced[0], "ValueSize: 8 changed") {
		t.Errorf("replaced = %q, want ep_by_ip with its value size", c.Replaced)
	}
	// The replacement is what is pinned now, and it is kept next time
	// with its entries.
	if err := c.Uplinks.Put(uint32(7), bpf.BpfnetUplinkInfo{Addr: 1}); err != nil {
		t.Fatal(err)
	}
	c.Close()
	c, err = Load(Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if len(c.Replaced) != 0 {
		t.Errorf("second load replaced %q", c.Replaced)
	}
	var u bpf.BpfnetUplinkInfo
	if err := c.Uplinks.Lookup(uint32(7), &u); err != nil || u.Addr != 1 {
		t.Errorf("uplinks entry after reload: %+v, %v", u, err)
	}
}
