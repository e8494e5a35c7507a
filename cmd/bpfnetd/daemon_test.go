package main

import (
	"context"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bpfnet/bpfnet/api"
	"github.com/bpfnet/bpfnet/internal/testnet"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testnet.RemoveBinaries()
	os.Exit(code)
}

// A stop and start keeps networks, endpoints and rules, with no
// duplicates; what went missing while stopped comes back; --cleanup then
// leaves the namespace as it was before the daemon first ran.
func TestRestartAndCleanup(t *testing.T) {
	topo := testnet.NewTopology(t)
	pristine := testnet.HostState(t, topo.Host)
	pristineForward := topo.Host.MustRun(t, "sysctl", "-n", "net.ipv4.ip_forward")

	d := testnet.NewDaemon(t, topo.Host, "--datapath=iptables")
	d.Start()
	c1, c2 := testnet.NewNS(t, "c1"), testnet.NewNS(t, "c2")
	d.MustCLI("network", "create", "--subnet", "198.18.1.0/24", "web")
	d.MustCLI("network", "create", "--subnet", "198.18.2.0/24", "-o", "com.docker.network.bridge.enable_icc=false", "quiet")
	d.MustCLI("network", "create", "--subnet", "198.18.3.0/24", "--internal", "back")
	d.MustCLI("endpoint", "create", "--network", "web", "--netns", c1.Path, "--name", "c1")
	d.MustCLI("endpoint", "create", "--network", "web", "--netns", c2.Path, "--name", "c2")
	d.MustCLI("endpoint", "create", "--network", "back", "--netns", c2.Path, "--name", "c2-back", "--ifname", "eth1")
	c2.Serve(t)
	c2addr := mustAddr(t, d, "c2")
	if _, err := c1.TCP(c2addr, 3*time.Second); err != nil {
		t.Fatalf("c1 → c2 before restart: %v", err)
	}
	running := testnet.HostState(t, topo.Host)
	// In iptables mode, `compat render` is exactly what is installed.
	installed := strings.Join(testnet.IptablesRules(t, topo.Host), "\n")
	for _, l := range strings.Split(d.MustCLI("compat", "render"), "\n") {
		if strings.HasPrefix(l, "-A ") && !strings.Contains(installed, l) {
			t.Errorf("compat render shows %q, which is not installed", l)
		}
	}
	if n := strings.Count(d.MustCLI("compat", "render"), "\n-A "); n != strings.Count(installed, " -A ") {
		t.Errorf("compat render has %d rules, %d are installed", n, strings.Count(installed, " -A "))
	}
	inspect := d.MustCLI("network", "inspect", "web", "quiet", "back", "bridge")

	d.Stop()
	if got := testnet.HostState(t, topo.Host); got != running {
		t.Fatalf("SIGTERM changed the host:\n%s", testnet.DiffLines(running, got))
	}
	if _, err := c1.TCP(c2addr, 3*time.Second); err != nil {
		t.Fatalf("c1 → c2 with the daemon stopped: %v", err)
	}

	d.Start()
	if got := testnet.HostState(t, topo.Host); got != running {
		t.Fatalf("restart changed the host (duplicates or losses):\n%s", testnet.DiffLines(running, got))
	}
	if got := d.MustCLI("network", "inspect", "web", "quiet", "back", "bridge"); got != inspect {
		t.Errorf("inspect differs after restart:\n%s", testnet.DiffLines(inspect, got))
	}

	// Damage while stopped: a veth deleted, a rule deleted, a stray
	// interface of ours left by a crash. Start repairs all three.
	host := mustEndpoint(t, d, "c1").HostIf
	// locate resolves c1's eth0 to the veth the daemon made for it; the
	// ifindex of that name is read independently from the host namespace.
	if got := d.MustCLI("locate", "--netns", c1.Path); got != host {
		t.Errorf("locate c1 eth0 = %q, want %q", got, host)
	}
	c2eth1 := strings.TrimSpace(c2.MustRun(t, "cat", "/sys/class/net/eth1/iflink"))
	if got := d.MustCLI("locate", "--netns", c2.Path, "--ifname", "eth1", "--format", "json"); !strings.Contains(got, `"HostIfIndex": `+c2eth1) {
		t.Errorf("locate c2 eth1 = %s, want host_ifindex %s (its iflink)", got, c2eth1)
	}
	d.Stop()
	topo.Host.MustRun(t, "ip", "link", "del", host)
	topo.Host.MustRun(t, "iptables", "-D", "BPFNET-ISOLATION-STAGE-1", "-j", "RETURN")
	topo.Host.MustRun(t, "ip", "link", "add", "br-stray", "type", "bridge")
	topo.Host.MustRun(t, "ip", "link", "set", "br-stray", "alias", "bpfnet/net/0123456789abcdef")
	d.Start()
	if got := testnet.HostState(t, topo.Host); got != running {
		t.Fatalf("start did not repair the host:\n%s", testnet.DiffLines(running, got))
	}
	if _, err := c1.TCP(c2addr, 3*time.Second); err != nil {
		t.Fatalf("c1 → c2 after its veth was recreated: %v", err)
	}

	d.Stop()
	if out, err := d.RunOnce("--cleanup"); err != nil {
		t.Fatalf("--cleanup: %v\n%s", err, out)
	}
	if got := testnet.HostState(t, topo.Host); got != pristine {
		t.Errorf("--cleanup left the host changed:\n%s", testnet.DiffLines(pristine, got))
	}
	if got := topo.Host.MustRun(t, "sysctl", "-n", "net.ipv4.ip_forward"); got != pristineForward {
		t.Errorf("ip_forward = %s after cleanup, was %s", got, pristineForward)
	}
	for _, ns := range []*testnet.NS{c1, c2} {
		if out := ns.MustRun(t, "ip", "-o", "link", "show"); strings.Contains(out, "eth") {
			t.Errorf("container interfaces left in %s:\n%s", ns.Name, out)
		}
	}
	if files := testnet.StateFiles(t, d.StateDir); files != "" {
		t.Errorf("state still there after cleanup:\n%s", files)
	}
}

func TestFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"--datapath=nft"}, "invalid --datapath"},
		{[]string{"--tc-attach=xdp"}, "invalid --tc-attach"},
		{[]string{"--bpffs=relative/dir"}, "invalid --bpffs"},
		{[]string{"--nat-ports=0-10"}, "invalid --nat-ports"},
		{[]string{"--nat-ports=2000-1000"}, "invalid --nat-ports"},
		{[]string{"--nat-ports=1000"}, "invalid --nat-ports"},
		{[]string{"--nat-ports=1-70000"}, "invalid --nat-ports"},
		{[]string{"--log-format=xml"}, "invalid --log-format"},
		{[]string{"--spare-veths=-1"}, "invalid --spare-veths"},
		{[]string{"--spare-veths=65"}, "invalid --spare-veths"},
		{[]string{"--check", "--cleanup"}, "exclude each other"},
		{[]string{"stray"}, "unexpected argument"},
	} {
		var sb strings.Builder
		_, err := parseFlags(tc.args, &sb)
		if err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("parseFlags(%q) = %v, want error containing %q", tc.args, err, tc.msg)
		}
	}
}

func mustEndpoint(t *testing.T, d *testnet.Daemon, name string) api.Endpoint {
	t.Helper()
	ep, err := d.Client.Endpoint(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return ep
}

func mustAddr(t *testing.T, d *testnet.Daemon, name string) netip.Addr {
	return mustEndpoint(t, d, name).IP
}

// The API socket is 0660 root:root, so an unprivileged user cannot use
// the CLI; with --group (the flag under test) its group's members can,
// as dockerd's -G allows. The user is Debian's nobody, whose group is
// nogroup (65534).
func TestSocketGroup(t *testing.T) {
	testnet.RequirePrivileges(t)
	// nobody must reach the CLI binary and the sockets' directories.
	bin := filepath.Join(t.TempDir(), "bpfnet")
	b, err := os.ReadFile(filepath.Join(testnet.Binaries(t), "bpfnet"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	searchable := func(path string) {
		for _, d := range []string{filepath.Dir(path), filepath.Dir(filepath.Dir(path))} {
			if err := os.Chmod(d, 0o711); err != nil {
				t.Fatal(err)
			}
		}
	}
	searchable(bin)
	asNobody := func(d *testnet.Daemon) (string, error) {
		cmd := exec.Command(bin, "-H", "unix://"+d.Socket, "status", "--format", "{{.Datapath}}")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	for _, tc := range []struct {
		args    []string
		gid     uint32
		allowed bool
	}{{nil, 0, false}, {[]string{"--group", "nogroup"}, 65534, true}} {
		d := testnet.NewDaemon(t, testnet.NewTopology(t).Host, tc.args...)
		searchable(d.Socket)
		d.Start()
		var st syscall.Stat_t
		if err := syscall.Stat(d.Socket, &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode&0o777 != 0o660 || st.Gid != tc.gid || st.Uid != 0 {
			t.Errorf("%v: socket mode %o owner %d:%d, want 0660 0:%d", tc.args, st.Mode&0o777, st.Uid, st.Gid, tc.gid)
		}
		out, err := asNobody(d)
		switch {
		case tc.allowed && (err != nil || out != "ebpf"):
			t.Errorf("%v: nobody's bpfnet status: %v: %s", tc.args, err, out)
		case !tc.allowed && (err == nil || !strings.Contains(out, "permission denied")):
			t.Errorf("%v: nobody's bpfnet status: %v: %s; want permission denied", tc.args, err, out)
		}
		d.Stop()
	}
	if _, err := parseFlags([]string{"--group", "no-such-group-here"}, io.Discard); err == nil || !strings.Contains(err.Error(), "invalid --group") {
		t.Errorf("--group of an unknown group: %v", err)
	}
}

// Daemons under ip netns exec each mount cgroup2 in a mount namespace of
// their own, on a mount point of their own below /run/bpfnet/cgroupv2:
// one that stops and removes its mount point leaves the other's mount in
// place. (With one shared mount point, the first daemon's removal of the
// directory detached the other's mount, whose next attach failed.)
func TestCgroupMountsApart(t *testing.T) {
	testnet.RequirePrivileges(t)
	a := testnet.NewDaemon(t, testnet.NewTopology(t).Host)
	b := testnet.NewDaemon(t, testnet.NewTopology(t).Host)
	a.Start()
	b.Start()
	mounted := func(pid int) string {
		out, _ := exec.Command("nsenter", "-t", strconv.Itoa(pid), "-m", "stat", "-f", "-c", "%T", "/run/bpfnet/cgroupv2/"+strconv.Itoa(pid)).CombinedOutput()
		return strings.TrimSpace(string(out))
	}
	pid := b.Pid()
	if fs := mounted(pid); fs != "cgroup2fs" {
		t.Fatalf("the daemon's cgroup2 mount point holds %q, want cgroup2fs", fs)
	}
	a.Stop()
	if fs := mounted(pid); fs != "cgroup2fs" {
		t.Errorf("after another daemon stopped, the mount point holds %q, want cgroup2fs", fs)
	}
}
