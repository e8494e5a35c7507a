package main

import (
	"context"
	"errors"
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
// IPv6; --cleanup turns IPv6 forwarding off again.
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
	d.MustCLI("endpoint", "create", "--network", network.DefaultNetworkName, "--netns", c1.Path, "--name", "c1")
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
