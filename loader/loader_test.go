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

// The flow tables refer to each other's entries: an incompatible pinned
// nat_fwd takes nat_rev, conntrack and the charges with it, so no new
// forward half meets an old reply half.
func TestRelatedMapsReplacedTogether(t *testing.T) {
	testnet.RequirePrivileges(t)
	root := testnet.MountBPFFS(t, t.TempDir())
	c, err := Load(Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	var k bpf.BpfnetTuple
	k.Proto = 17
	if err := c.NatRev.Put(k, bpf.BpfnetNatEntry{Addr: 1}); err != nil {
		t.Fatal(err)
	}
	if err := c.Networks.Put(uint32(3), bpf.BpfnetNetworkInfo{Flags: 1}); err != nil {
		t.Fatal(err)
	}
	c.Close()
	// nat_fwd as an older version had it.
	path := filepath.Join(root, "maps", "nat_fwd")
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	old, err := ebpf.NewMap(&ebpf.MapSpec{Name: "nat_fwd", Type: ebpf.LRUHash, KeySize: 16, ValueSize: 32, MaxEntries: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if err := old.Pin(path); err != nil {
		t.Fatal(err)
	}
	c, err = Load(Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := strings.Join(c.Replaced, "\n")
	for _, want := range []string{"nat_fwd (", "nat_rev (replaced with nat_fwd)", "conntrack (replaced with nat_fwd)", "ep_flows (replaced with nat_fwd)"} {
		if !strings.Contains(got, want) {
			t.Errorf("replaced lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "networks") {
		t.Errorf("an unrelated map was replaced:\n%s", got)
	}
	var e bpf.BpfnetNatEntry
	if err := c.NatRev.Lookup(k, &e); err == nil {
		t.Errorf("nat_rev kept an old reply half")
	}
	var n bpf.BpfnetNetworkInfo
	if err := c.Networks.Lookup(uint32(3), &n); err != nil {
		t.Errorf("networks lost its entry: %v", err)
	}
}

// Every program keeps well inside the verifier's budget (1,000,000
// processed instructions): a quarter of it at most, so a change that
// doubles a program's paths still loads.
func TestVerifierHeadroom(t *testing.T) {
	testnet.RequirePrivileges(t)
	c, err := Load(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const limit = 250_000
	for name, p := range map[string]*ebpf.Program{
		"from_container": c.FromContainer, "to_container": c.ToContainer,
		"from_uplink": c.FromUplink, "to_uplink": c.ToUplink, "maintain": c.Maintain,
		"sock_connect4": c.SockConnect4, "sock_sendmsg4": c.SockSendmsg4,
		"sock_connect6": c.SockConnect6, "sock_sendmsg6": c.SockSendmsg6,
	} {
		info, err := p.Info()
		if err != nil {
			t.Fatal(err)
		}
		n, ok := info.VerifiedInstructions()
		if !ok {
			t.Fatalf("%s: the kernel does not report verified instructions", name)
		}
		t.Logf("%-15s %7d instructions processed by the verifier", name, n)
		if n > limit {
			t.Errorf("%s: %d verified instructions, over the %d budget", name, n, limit)
		}
	}
}
