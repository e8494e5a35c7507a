package main

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bpfnet/bpfnet/internal/testnet"
)

// What a new user meets: the daemon started as `make run` starts it (no
// flags but the state dir and socket of the test instance), in a namespace
// shaped like a real host (an uplink with a default route), and the first
// commands of the README.

// --check predicts what start does on such a host, and changes nothing.
func TestCheck(t *testing.T) {
	topo := testnet.NewTopology(t)
	d := testnet.NewDaemon(t, topo.Host)
	before := testnet.HostState(t, topo.Host)
	out, err := d.RunOnce("--check")
	if err != nil {
		t.Fatalf("--check: %v\n%s", err, out)
	}
	for _, want := range []string{
		"ok   datapath: auto selects ebpf (attach tcx)",
		// ip netns exec remounts /sys: no bpffs and no cgroup2 there.
		"ok   bpffs: none at /sys/fs/bpf; start mounts one",
		"note this process has its own mount namespace",
		"ok   cgroup v2: none mounted; start mounts one below /run/bpfnet/cgroupv2",
		"ok   uplinks: [" + testnet.UplinkIf + "]",
		"ok   state dir " + d.StateDir + ": none yet",
		// The default route covers every pool but takes none.
		"ok   default network: creates bridge bpfnet0, subnet 172.17.0.0/16, gateway 172.17.0.1",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("--check output lacks %q:\n%s", want, out)
		}
	}
	for _, p := range []string{d.Socket, d.StateDir} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("--check created %s", p)
		}
	}
	if got := testnet.HostState(t, topo.Host); got != before {
		t.Errorf("--check changed the host:\n%s", testnet.DiffLines(before, got))
	}
	bad := testnet.NewDaemon(t, topo.Host, "--uplink=nosuch0")
	if out, err := bad.RunOnce("--check"); err == nil || !strings.Contains(out, "FAIL uplinks") {
		t.Errorf("--check with a missing uplink: err=%v\n%s", err, out)
	}
}

// On a host whose routes cover every default pool, start fails before it
// touches anything, names the flag that fixes it, and the API socket never
// appears (a client must either be served or find no socket); --check
// says the same.
func TestNoFreePool(t *testing.T) {
	topo := testnet.NewTopology(t)
	for _, p := range []string{"172.16.0.0/12", "192.168.0.0/16"} {
		topo.Host.MustRun(t, "ip", "route", "add", "unreachable", p)
	}
	before := testnet.HostState(t, topo.Host)
	d := testnet.NewDaemon(t, topo.Host)
	out, err := d.RunOnce("--check")
	if err == nil || !strings.Contains(out, "FAIL default network: no free subnet") || !strings.Contains(out, "--bip") {
		t.Errorf("--check: err=%v, want a failed default network naming --bip:\n%s", err, out)
	}
	cmd := exec.Command("ip", "netns", "exec", topo.Host.Name, filepath.Join(d.Bin, "bpfnetd"), "--state-dir", d.StateDir, "--socket", d.Socket)
	var log strings.Builder
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	sawSocket := false
	for exited := false; !exited; {
		select {
		case err = <-done:
			exited = true
		case <-time.After(time.Millisecond):
		}
		if _, serr := os.Stat(d.Socket); serr == nil {
			sawSocket = true
		}
	}
	if err == nil {
		t.Fatalf("bpfnetd started with no free pool:\n%s", log.String())
	}
	if sawSocket {
		t.Errorf("the API socket existed while a start bound to fail ran")
	}
	if msg := log.String(); !strings.Contains(msg, "no free subnet in the default address pools") || !strings.Contains(msg, "--bip") {
		t.Errorf("the error does not explain or name --bip:\n%s", msg)
	}
	if got := testnet.HostState(t, topo.Host); got != before {
		t.Errorf("a failed start changed the host:\n%s", testnet.DiffLines(before, got))
	}
	if _, err := os.Stat(d.StateDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed start created the state dir")
	}
}

// The README's quick start, as a newcomer follows it: the daemon with its
// defaults, `bpfnet network create web` picks the next pool after the
// default network's, and a container on web reaches the outside through
// masquerade and the default network's gateway (a host address).
func TestNewcomer(t *testing.T) {
	topo := testnet.NewTopology(t)
	d := testnet.NewDaemon(t, topo.Host)
	d.Start()
	st := d.MustCLI("status")
	for _, want := range []string{"Datapath:               ebpf", "Uplinks:                " + testnet.UplinkIf, "Networks:               1", "WARNING:"} {
		if !strings.Contains(st, want) {
			t.Errorf("status lacks %q:\n%s", want, st)
		}
	}
	if ls := d.MustCLI("network", "ls"); !strings.Contains(ls, "bridge   local   172.17.0.0/16   bpfnet0") {
		t.Errorf("no default network 172.17.0.0/16 on bpfnet0:\n%s", ls)
	}
	d.MustCLI("network", "create", "web")
	web, err := d.Client.Network(context.Background(), "web")
	if err != nil {
		t.Fatal(err)
	}
	if got := web.IPAM.Config[0].Subnet; got != "172.18.0.0/16" {
		t.Errorf("web got subnet %s, want 172.18.0.0/16 (the pool after the default network's)", got)
	}
	c1 := testnet.NewNS(t, "c1")
	d.MustCLI("endpoint", "create", "--network", "web", "--netns", c1.Path, "--name", "c1")
	topo.Outside.Serve(t)
	topo.Host.Serve(t)
	if src, err := c1.TCP(testnet.OutsideAddr, 3*time.Second); err != nil || src != testnet.UplinkAddr {
		t.Errorf("c1 → outside: source seen %v, err %v; want %s (masquerade)", src, err, testnet.UplinkAddr)
	}
	gw := netip.MustParseAddr("172.17.0.1")
	if err := c1.Ping(gw, 3*time.Second); err != nil {
		t.Errorf("c1 → the default network's gateway %s: %v", gw, err)
	}
	if _, err := c1.TCP(gw, 3*time.Second); err != nil {
		t.Errorf("c1 → TCP to the default network's gateway %s: %v", gw, err)
	}
}

// On a host whose default route comes after the daemon (DHCP late at
// boot) or goes (a network left, a VPN's route taken down), the uplink
// programs follow the default routes: once one appears, a container
// reaches the outside masqueraded to the uplink's address (as with
// Docker's MASQUERADE rule, which applies whatever the route), and an
// interface that no longer carries one loses its programs.
func TestUplinkFollowsDefaultRoute(t *testing.T) {
	topo := testnet.NewTopology(t)
	// The host is dual-stack; the uplinks follow the IPv4 default routes.
	topo.Host.MustRun(t, "ip", "route", "del", "default")
	d := testnet.NewDaemon(t, topo.Host)
	d.Start()
	uplinkProgs := func() (uplinks, progs []string) {
		st, err := d.Client.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range st.Attachments {
			if a.Interface == testnet.UplinkIf && a.Mode != "" {
				progs = append(progs, a.Program)
			}
		}
		return st.Uplinks, progs
	}
	waitFor := func(want []string, wantProgs []string) {
		t.Helper()
		var uplinks, progs []string
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if uplinks, progs = uplinkProgs(); slices.Equal(uplinks, want) && slices.Equal(progs, wantProgs) {
				return
			}
		}
		t.Fatalf("uplinks %v with programs %v on %s, want %v with %v", uplinks, progs, testnet.UplinkIf, want, wantProgs)
	}
	waitFor(nil, nil)
	d.MustCLI("network", "create", "web")
	c1 := testnet.NewNS(t, "c1")
	d.MustCLI("endpoint", "create", "--network", "web", "--netns", c1.Path, "--name", "c1")
	topo.Outside.Serve(t)

	topo.Host.MustRun(t, "ip", "route", "add", "default", "via", testnet.OutsideAddr.String())
	waitFor([]string{testnet.UplinkIf}, []string{"from_uplink", "to_uplink"})
	if src, err := c1.TCP(testnet.OutsideAddr, 3*time.Second); err != nil || src != testnet.UplinkAddr {
		t.Errorf("c1 → outside after the default route came: source seen %v, err %v; want %s (masquerade)", src, err, testnet.UplinkAddr)
	}

	topo.Host.MustRun(t, "ip", "route", "del", "default")
	waitFor(nil, nil)
}

// When a container dies (its namespace is deleted, and the kernel deletes
// the veth pair with it), the daemon releases its endpoint: the address,
// the published port and the policy go, counted, as Docker releases a dead
// container's network resources. Both datapaths.
func TestEndpointReleased(t *testing.T) {
	for _, dp := range []string{"ebpf", "iptables"} {
		t.Run(dp, func(t *testing.T) {
			topo := testnet.NewTopology(t)
			d := testnet.NewDaemon(t, topo.Host, "--datapath="+dp)
			d.Start()
			d.MustCLI("network", "create", "--subnet", "198.18.1.0/24", "web")
			c1, c2 := testnet.NewNS(t, "c1"), testnet.NewNS(t, "c2")
			d.MustCLI("endpoint", "create", "--network", "web", "--netns", c1.Path, "--name", "c1", "--ip", "198.18.1.5", "-p", "8080:80")
			rules := topo.Host.MustRun(t, "iptables-save")
			c1.Delete(t)
			deadline := time.Now().Add(10 * time.Second)
			for strings.Contains(d.MustCLI("endpoint", "ls"), "c1") {
				if time.Now().After(deadline) {
					t.Fatalf("endpoint c1 still listed 10 s after its namespace was deleted:\n%s", d.MustCLI("endpoint", "ls"))
				}
				time.Sleep(50 * time.Millisecond)
			}
			if st, _ := d.Client.Status(context.Background()); st.EndpointsReleased != 1 {
				t.Errorf("status: %d endpoints released, want 1", st.EndpointsReleased)
			}
			if !strings.Contains(d.Log(), "endpoint released") {
				t.Errorf("no log line for the release:\n%s", d.Log())
			}
			if files := testnet.StateFiles(t, d.StateDir); strings.Contains(files, "198.18.1.5") {
				t.Errorf("the released endpoint is still in the state:\n%s", files)
			}
			if dp == "iptables" {
				if after := topo.Host.MustRun(t, "iptables-save"); strings.Contains(after, "198.18.1.5") || !strings.Contains(rules, "198.18.1.5") {
					t.Errorf("the published port's rules were not (there, then) removed:\nbefore:\n%s\nafter:\n%s", rules, after)
				}
			}
			// Its address and host port are free again.
			d.MustCLI("endpoint", "create", "--network", "web", "--netns", c2.Path, "--name", "c2", "--ip", "198.18.1.5", "-p", "8080:80")
		})
	}
}

// `make demo`, which the README offers a newcomer, runs to its end: the
// two containers of one network reach each other, the first reaches the
// outside through masquerade (the translation shows in `nat ls`), and
// the tour leaves nothing behind: no namespace, and nothing in the host's
// /run/docker.
func TestDemo(t *testing.T) {
	id := testnet.NSName("demo")
	roles := []string{"host", "out", "c1", "c2"}
	t.Cleanup(func() { // only if the script could not clean up itself
		for _, r := range roles {
			if _, err := os.Stat("/run/netns/" + id + "-" + r); err == nil {
				exec.Command("ip", "netns", "del", id+"-"+r).Run()
			}
		}
	})
	_, err := os.Stat("/run/docker/plugins")
	hadPlugins := err == nil
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "../../scripts/demo.sh")
	cmd.Env = append(os.Environ(), "BPFNET_BIN="+testnet.Binaries(t), "DEMO_ID="+id, "TMPDIR="+t.TempDir())
	// A script killed on timeout takes its daemon with it: one process group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make demo: %v\n%s", err, out)
	}
	// Two pings of two packets each, both answered (iputils' summary).
	if n := strings.Count(string(out), "2 packets transmitted, 2 received, 0% packet loss"); n != 2 {
		t.Errorf("%d of the 2 pings were answered in full:\n%s", n, out)
	}
	if !regexp.MustCompile(`(?m)^masquerade\s+icmp\s+172\.19\.0\.2:\d+\s+198\.19\.0\.1:\d+\s+198\.19\.0\.2:0`).Match(out) {
		t.Errorf("nat ls shows no masquerade of web1's ping (172.19.0.2 as the uplink's 198.19.0.1):\n%s", out)
	}
	for _, r := range roles {
		if _, err := os.Stat("/run/netns/" + id + "-" + r); err == nil {
			t.Errorf("the demo left namespace %s-%s", id, r)
		}
	}
	// The host's Docker plugin directory is not the demo's to make.
	if _, err := os.Stat("/run/docker/plugins"); err == nil && !hadPlugins {
		t.Errorf("the demo made /run/docker/plugins")
	}
}
