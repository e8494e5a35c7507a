package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/bpfnet/bpfnet/internal/testnet"
	"github.com/bpfnet/bpfnet/network"
)

// bpfnetd --ipv6 on a host where eBPF runs (the test host): auto selects
// the iptables datapath, the one that enforces IPv6 so far, and says why;
// the default network is dual-stack with the --fixed-cidr-v6 subnet; a
// container on it reaches its gateway and, masqueraded, the outside over
// IPv6; its ports published on 0.0.0.0 are reached over both families,
// one published on the uplink's IPv6 address over IPv6 only; --cleanup
// turns IPv6 forwarding off again.
func TestIPv6DefaultNetwork(t *testing.T) {
	topo := testnet.NewTopology(t)
	if v := strings.TrimSpace(topo.Host.MustRun(t, "sysctl", "-n", "net.ipv6.conf.all.forwarding")); v != "0" {
		t.Fatalf("a fresh namespace has IPv6 forwarding %s", v)
	}
	d := testnet.NewDaemon(t, topo.Host, "--ipv6", "--fixed-cidr-v6", "fd00:d0c::/64")
	d.Start()
	ctx := context.Background()
	st, err := d.Client.Status(ctx)
	if err != nil || st.Datapath != "iptables" || !strings.Contains(st.DatapathReason, "--ipv6") {
		t.Errorf("status: datapath %q (%s), %v; want iptables, naming --ipv6", st.Datapath, st.DatapathReason, err)
	}
	def, err := d.Client.Network(ctx, network.DefaultNetworkName)
	if err != nil || !def.EnableIPv6 || len(def.IPAM.Config) != 2 || def.IPAM.Config[1].Subnet != "fd00:d0c::/64" || def.IPAM.Config[1].Gateway != "fd00:d0c::1" {
		t.Fatalf("default network %+v (%v)", def, err)
	}
	c1 := testnet.NewNS(t, "c1")
	d.MustCLI("endpoint", "create", "--network", network.DefaultNetworkName, "--netns", c1.Path, "--name", "c1",
		"-p", fmt.Sprintf("8080:%d", testnet.ServicePort), "-p", fmt.Sprintf("[%s]:8443:%d", testnet.UplinkAddr6, testnet.ServicePort))
	c1.Serve(t)
	ep := mustEndpoint(t, d, "c1")
	if ep.IP6.String() != "fd00:d0c::2" {
		t.Errorf("c1 has IPv6 address %s, want fd00:d0c::2", ep.IP6)
	}
	if out := c1.MustRun(t, "ip", "-6", "route", "show", "default"); !strings.Contains(out, "via fd00:d0c::1") {
		t.Errorf("c1's IPv6 default route: %q", out)
	}
	if err := c1.Ping(netip.MustParseAddr(def.IPAM.Config[1].Gateway), 3*time.Second); err != nil {
		t.Errorf("c1 → its IPv6 gateway: %v", err)
	}
	topo.Outside.Serve(t)
	src, err := c1.TCPTo(netip.AddrPortFrom(testnet.OutsideAddr6, testnet.ServicePort), 3*time.Second)
	if err != nil || src != testnet.UplinkAddr6 {
		t.Errorf("c1 → the outside over IPv6: source %s (%v), want the uplink's %s", src, err, testnet.UplinkAddr6)
	}
	for _, tc := range []struct {
		to   netip.AddrPort
		want error // nil: answered
	}{
		{netip.AddrPortFrom(testnet.UplinkAddr, 8080), nil},
		{netip.AddrPortFrom(testnet.UplinkAddr6, 8080), nil},
		{netip.AddrPortFrom(testnet.UplinkAddr6, 8443), nil},
		{netip.AddrPortFrom(testnet.UplinkAddr, 8443), testnet.ErrRefused},
	} {
		if _, err := topo.Outside.TCPTo(tc.to, 3*time.Second); !errors.Is(err, tc.want) {
			t.Errorf("outside → %s: %v, want %v", tc.to, err, tc.want)
		}
	}
	// IPv6 host addresses need a dual-stack network, and ::1 cannot be.
	d.MustCLI("network", "create", "--subnet", "198.18.9.0/24", "v4only")
	c2 := testnet.NewNS(t, "c2")
	for spec, msg := range map[string]string{
		"v4only:[" + testnet.UplinkAddr6.String() + "]:9443:80": "has no IPv6",
		"bridge:[::1]:9443:80":            "cannot publish on ::1",
		"bridge:[2001:db8:77::1]:9443:80": "not an address of this host",
	} {
		netName, p, _ := strings.Cut(spec, ":")
		if _, stderr, code := d.CLI("endpoint", "create", "--network", netName, "--netns", c2.Path, "-p", p); code == 0 || !strings.Contains(stderr, msg) {
			t.Errorf("-p %s on %s: exit %d, %s; want %q", p, netName, code, stderr, msg)
		}
	}
	d.Stop()
	if out, err := d.RunOnce("--cleanup"); err != nil {
		t.Fatalf("--cleanup: %v\n%s", err, out)
	}
	if v := strings.TrimSpace(topo.Host.MustRun(t, "sysctl", "-n", "net.ipv6.conf.all.forwarding")); v != "0" {
		t.Errorf("IPv6 forwarding %s after --cleanup, want 0 as before", v)
	}
}

// --datapath=ebpf with --ipv6 cannot be: --check says so, and a start
// fails before it touches the host, naming the way out.
func TestIPv6RefusedOnEBPF(t *testing.T) {
	topo := testnet.NewTopology(t)
	before := testnet.HostState(t, topo.Host)
	d := testnet.NewDaemon(t, topo.Host, "--datapath=ebpf", "--ipv6")
	out, err := d.RunOnce("--check")
	if err == nil || !strings.Contains(out, "FAIL datapath: ebpf: the default network has IPv6") {
		t.Errorf("--check: err=%v, want a failed datapath line:\n%s", err, out)
	}
	err = d.StartOrExit()
	var exited *testnet.ExitedError
	if !errors.As(err, &exited) {
		d.Stop()
		t.Fatalf("bpfnetd --datapath=ebpf --ipv6 started")
	}
	if log := d.Log(); !strings.Contains(log, "does not enforce yet") || !strings.Contains(log, "--datapath=iptables") {
		t.Errorf("the error does not explain or name --datapath=iptables:\n%s", log)
	}
	if got := testnet.HostState(t, topo.Host); got != before {
		t.Errorf("a refused start changed the host:\n%s", testnet.DiffLines(before, got))
	}
}
