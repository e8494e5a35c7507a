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

// bpfnetd --ipv6, in each datapath: with its defaults (auto, which selects
// eBPF on the test host) and with --datapath=iptables (the other datapath
// enforces IPv6 with ip6tables). The default network is dual-stack with
// the --fixed-cidr-v6 subnet; a container on it reaches its gateway and,
// masqueraded, the outside over IPv6; its ports published on 0.0.0.0 are
// reached over both families, one published on the uplink's IPv6 address
// over IPv6 only; --cleanup turns IPv6 forwarding off again.
func TestIPv6DefaultNetwork(t *testing.T) {
	for _, datapath := range []string{"ebpf", "iptables"} {
		t.Run(datapath, func(t *testing.T) { testIPv6DefaultNetwork(t, datapath) })
	}
}

func testIPv6DefaultNetwork(t *testing.T, datapath string) {
	topo := testnet.NewTopology(t)
	if v := strings.TrimSpace(topo.Host.MustRun(t, "sysctl", "-n", "net.ipv6.conf.all.forwarding")); v != "0" {
		t.Fatalf("a fresh namespace has IPv6 forwarding %s", v)
	}
	args := []string{"--ipv6", "--fixed-cidr-v6", "fd00:d0c::/64"}
	if datapath == "iptables" {
		args = append(args, "--datapath=iptables")
	}
	d := testnet.NewDaemon(t, topo.Host, args...)
	d.Start()
	ctx := context.Background()
	st, err := d.Client.Status(ctx)
	if err != nil || st.Datapath != datapath {
		t.Errorf("status: datapath %q (%s), %v; want %s", st.Datapath, st.DatapathReason, err, datapath)
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
	if datapath == "ebpf" {
		// Forwarding was off: the policy became DROP, as Docker sets it,
		// and the one rule accepts what the programs passed.
		want := "-P FORWARD DROP\n-A FORWARD -m mark --mark 0x200000/0x200000 -m comment --comment \"bpfnet: passed by the eBPF datapath\" -j ACCEPT"
		if got := strings.TrimSpace(topo.Host.MustRun(t, "ip6tables", "-S", "FORWARD")); got != want {
			t.Errorf("ip6tables FORWARD:\n%s\nwant\n%s", got, want)
		}
	}
	d.Stop()
	if out, err := d.RunOnce("--cleanup"); err != nil {
		t.Fatalf("--cleanup: %v\n%s", err, out)
	}
	if v := strings.TrimSpace(topo.Host.MustRun(t, "sysctl", "-n", "net.ipv6.conf.all.forwarding")); v != "0" {
		t.Errorf("IPv6 forwarding %s after --cleanup, want 0 as before", v)
	}
	if got := strings.TrimSpace(topo.Host.MustRun(t, "ip6tables", "-S", "FORWARD")); got != "-P FORWARD ACCEPT" {
		t.Errorf("ip6tables FORWARD after --cleanup:\n%s\nwant the policy ACCEPT and no rule, as before", got)
	}
}
