package compat

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bpfnet/bpfnet/network"
)

// The dual-stack scenario of TestDockerBridgeReferenceIPv6, as Docker 20.10
// had it when ipv6-scenario.v6.rules was captured: bridges normalised to
// br-<network>, the unique local /64s fd42:d0c:0:1x::/64 beside the IPv4
// subnets (the host_ipv4 network IPv4-only), and the containers that
// publish ports, with the IPv6 addresses Docker gave them.
func ipv6Scenario() network.View {
	net6 := func(name, subnet, subnet6 string, mod func(*network.Network)) *network.Network {
		n := refNet(strings.Repeat("0", 52)+name[:min(len(name), 12)], name, subnet, mod)
		n.ID, n.Bridge = name, "br-"+name
		if subnet6 != "" {
			n.Subnet6 = netip.MustParsePrefix(subnet6)
		}
		return n
	}
	def := net6("bridge", "172.17.0.0/16", "fd42:d0c:0:1::/64", func(n *network.Network) { n.Default = true })
	def.Bridge = "docker0"
	netA := net6("net-a", "198.18.1.0/24", "fd42:d0c:0:11::/64", nil)
	netB := net6("net-b", "198.18.2.0/24", "fd42:d0c:0:12::/64", nil)
	noICC := net6("noicc", "198.18.3.0/24", "fd42:d0c:0:13::/64", func(n *network.Network) { n.ICC = false })
	internal := net6("internal", "198.18.4.0/24", "fd42:d0c:0:14::/64", func(n *network.Network) { n.Internal = true })
	noMasq := net6("nomasq", "198.18.5.0/24", "fd42:d0c:0:15::/64", func(n *network.Network) { n.Masquerade = false })
	snat := net6("snat", "198.18.6.0/24", "", func(n *network.Network) { n.HostIPv4 = netip.MustParseAddr("198.51.100.9") })
	hostBind := net6("hostbind", "198.18.7.0/24", "fd42:d0c:0:17::/64", func(n *network.Network) { n.HostBinding = netip.MustParseAddr("127.0.0.1") })
	ep := func(n *network.Network, ip, ip6 string, ports ...network.PortMapping) *network.Endpoint {
		e := refEndpoint(n, ip, ports...)
		e.IP6 = netip.MustParseAddr(ip6)
		return e
	}
	both := func(hostIP string, hostPort uint16) []network.PortMapping {
		return []network.PortMapping{port("tcp", hostIP, hostPort, 7000), port("udp", hostIP, hostPort, 7000)}
	}
	return network.View{
		Networks: []*network.Network{def, netA, netB, noICC, internal, noMasq, snat, hostBind},
		Endpoints: []*network.Endpoint{
			ep(netA, "198.18.1.2", "fd42:d0c:0:11::2", both("0.0.0.0", 8080)...),
			ep(netB, "198.18.2.2", "fd42:d0c:0:12::2", both("127.0.0.1", 9090)...),
			ep(noICC, "198.18.3.2", "fd42:d0c:0:13::2", both("0.0.0.0", 4040)...),
			ep(noMasq, "198.18.5.3", "fd42:d0c:0:15::3", both("0.0.0.0", 6060)...),
			ep(hostBind, "198.18.7.2", "fd42:d0c:0:17::2", both("127.0.0.1", 7070)...),
		},
	}
}

// internal20 and internalFixed are the internal network's ip6tables
// isolation rules: Docker 20.10's (captured), which drop its containers'
// neighbour discovery between each other, and the fixed ones bpfnet
// renders (InternalFix).
var (
	internal20 = []string{
		"-A DOCKER-ISOLATION-STAGE-1 ! -s fd42:d0c:0:14::/64 -o br-internal -j DROP",
		"-A DOCKER-ISOLATION-STAGE-1 ! -d fd42:d0c:0:14::/64 -i br-internal -j DROP",
	}
	internalFixed = []string{
		"-A DOCKER-ISOLATION-STAGE-1 ! -s fd42:d0c:0:14::/64 ! -i br-internal -o br-internal -j DROP",
		"-A DOCKER-ISOLATION-STAGE-1 ! -d fd42:d0c:0:14::/64 -i br-internal ! -o br-internal -j DROP",
	}
)

// ipv6Reference is the captured ip6tables-save of Docker 20.10 with the
// internal network's two rules replaced by the fixed ones.
func ipv6Reference(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "docker-20.10", "ipv6-scenario.v6.rules"))
	if err != nil {
		t.Fatal(err)
	}
	s := normalizeSave(string(b), true, true)
	for i := range internal20 {
		if !strings.Contains(s, internal20[i]+"\n") {
			t.Fatalf("the capture has no %q", internal20[i])
		}
		s = strings.Replace(s, internal20[i]+"\n", internalFixed[i]+"\n", 1)
	}
	return s
}

// withoutRaw is rs without its raw-table rules (the other later fixes,
// which TestIPv6LaterFixes lists).
func withoutRaw(rs Ruleset) Ruleset {
	rs.Rules = slices.DeleteFunc(slices.Clone(rs.Rules), func(r Rule) bool { return r.Table == "raw" })
	return rs
}

// Docker 20.10's ip6tables rules for the scenario, line for line, in
// hairpin mode (--userland-proxy=false, as captured), except for the
// internal network's fix.
func TestRenderIPv6MatchesDocker2010(t *testing.T) {
	rs := Render(ipv6Scenario(), "DOCKER", Hairpin)
	if got, want := Save6(withoutRaw(rs), "DROP"), ipv6Reference(t); got != want {
		t.Errorf("rendered ip6tables rules differ from the Docker 20.10 capture\n%s", lineDiff(want, got))
	}
	var fixed []string
	for _, r := range rs.Rules {
		if r.Addition == InternalFix {
			fixed = append(fixed, r.String())
		}
	}
	if !slices.Equal(fixed, internalFixed) {
		t.Errorf("rules marked %q: %q, want %q", InternalFix, fixed, internalFixed)
	}
	// The IPv4 rules are the same with or without the IPv6 side.
	v4 := ipv6Scenario()
	for _, n := range v4.Networks {
		n.Subnet6 = netip.Prefix{}
	}
	if got, want := Save(rs, "DROP"), Save(Render(v4, "DOCKER", Hairpin), "DROP"); got != want {
		t.Errorf("IPv6 changed the iptables rules\n%s", lineDiff(want, got))
	}
}

// The raw-table fixes over IPv6: the direct-access drop for every
// container of a masquerading network with IPv6 (not for nomasq's, nor
// for the ports published on 127.0.0.1, which IPv6 does not publish).
func TestIPv6LaterFixes(t *testing.T) {
	var got []string
	for _, r := range Render(ipv6Scenario(), "DOCKER", Hairpin).Rules {
		if r.IPv6 && r.Table == "raw" {
			got = append(got, r.String()+"  # "+r.Addition)
		}
	}
	want := []string{
		"-A PREROUTING -d fd42:d0c:0:11::2/128 ! -i br-net-a -j DROP  # " + DirectAccessFix,
		"-A PREROUTING -d fd42:d0c:0:12::2/128 ! -i br-net-b -j DROP  # " + DirectAccessFix,
		"-A PREROUTING -d fd42:d0c:0:13::2/128 ! -i br-noicc -j DROP  # " + DirectAccessFix,
		"-A PREROUTING -d fd42:d0c:0:17::2/128 ! -i br-hostbind -j DROP  # " + DirectAccessFix,
	}
	if !slices.Equal(got, want) {
		t.Errorf("IPv6 raw rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// With no dual-stack network nothing goes to ip6tables.
func TestIPv4OnlyRendersNoIPv6(t *testing.T) {
	if rs := Render(network.View{Networks: refNetworks07}, "DOCKER", Hairpin); rs.HasIPv6() {
		t.Errorf("IPv4-only networks rendered ip6tables rules")
	}
}

// The enforcer applies the IPv6 side to ip6tables (and nothing of it to
// iptables), turns IPv6 forwarding on as Docker does (policy DROP since it
// was off) and bridge netfilter for ip6tables (an icc=false network has
// IPv6), and its cleanup leaves rules and forwarding as they were.
func TestIPv6ApplyAndCleanup(t *testing.T) {
	ipt, ipt6 := newFakeIPT(), newFakeIPT()
	e := newFakeEnforcer(t, ipt, t.TempDir())
	e.ipt6, e.mode = ipt6, Hairpin
	v := ipv6Scenario()
	ctx := context.Background()
	if err := e.Reconcile(ctx, v); err != nil {
		t.Fatal(err)
	}
	rs := Render(v, "DOCKER", Hairpin)
	if got, want := ipt6.save(), Save6(rs, "DROP"); got != want {
		t.Errorf("ip6tables after start:\n%s", lineDiff(want, got))
	}
	if got, want := ipt.save(), Save(rs, "DROP"); got != want {
		t.Errorf("iptables after start:\n%s", lineDiff(want, got))
	}
	if s, _ := e.readSysctl("net/ipv6/conf/all/forwarding"); s != "1" {
		t.Errorf("IPv6 forwarding = %s, want 1", s)
	}
	// noicc has IPv6: its DROP is only met by bridged IPv6 frames with
	// bridge netfilter on for ip6tables.
	if s, _ := e.readSysctl("net/bridge/bridge-nf-call-ip6tables"); s != "1" {
		t.Errorf("bridge-nf-call-ip6tables = %s, want 1", s)
	}
	// A restart changes nothing; removing the last dual-stack network's
	// IPv6 leaves ip6tables with empty chains of ours.
	e2 := newFakeEnforcer(t, ipt, filepath.Dir(e.path))
	e2.ipt6, e2.mode, e2.sysctl = ipt6, Hairpin, e.sysctl
	before := ipt.calls + ipt6.calls
	if err := e2.Reconcile(ctx, v); err != nil {
		t.Fatal(err)
	}
	if n := ipt.calls + ipt6.calls - before; n != 0 {
		t.Errorf("a restart made %d changes", n)
	}
	if err := e2.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string]*fakeIPT{"iptables": ipt, "ip6tables": ipt6} {
		if got, want := f.save(), Save(Ruleset{}, "ACCEPT"); got != want {
			t.Errorf("%s after cleanup:\n%s", name, lineDiff(want, got))
		}
	}
	if s, _ := e.readSysctl("net/ipv6/conf/all/forwarding"); s != "0" {
		t.Errorf("IPv6 forwarding = %s after cleanup, want 0", s)
	}
}

// Without ip6tables the enforcer says it cannot hold IPv6, and refuses a
// dual-stack state rather than leave its IPv6 unfiltered.
func TestNoIP6tablesRefusesIPv6(t *testing.T) {
	e := newFakeEnforcer(t, newFakeIPT(), t.TempDir())
	e.ipt6Err = os.ErrNotExist
	if e.EnforcesIPv6() {
		t.Error("EnforcesIPv6 without ip6tables")
	}
	if err := e.Reconcile(context.Background(), ipv6Scenario()); err == nil || !strings.Contains(err.Error(), "IPv6") {
		t.Errorf("Reconcile of a dual-stack state without ip6tables: %v", err)
	}
}

// The first dual-stack network may come long after the start: its
// ip6tables chains are made then.
func TestFirstIPv6NetworkAfterStart(t *testing.T) {
	ipt, ipt6 := newFakeIPT(), newFakeIPT()
	e := newFakeEnforcer(t, ipt, t.TempDir())
	e.ipt6, e.mode = ipt6, Hairpin
	full := ipv6Scenario()
	v := network.View{Networks: []*network.Network{full.Networks[6]}} // snat: IPv4-only
	ctx := context.Background()
	if err := e.Reconcile(ctx, v); err != nil {
		t.Fatal(err)
	}
	if got, want := ipt6.save(), Save(Ruleset{}, "ACCEPT"); got != want {
		t.Errorf("ip6tables with IPv4-only networks:\n%s", lineDiff(want, got))
	}
	v.Networks = append(v.Networks, full.Networks[1]) // net-a, dual-stack
	if err := e.NetworkAdded(ctx, v, full.Networks[1]); err != nil {
		t.Fatal(err)
	}
	if got, want := ipt6.save(), Save6(Render(v, "DOCKER", Hairpin), "DROP"); got != want {
		t.Errorf("ip6tables after the first dual-stack network:\n%s", lineDiff(want, got))
	}
}

// Ports published on IPv6 host addresses (-p [ADDR]:H:C, -p [::]:H:C) are
// published over IPv6 only, with the address matched when it is one; a
// port published on 0.0.0.0 goes to both families, as with Docker.
func TestPublishOnIPv6Addresses(t *testing.T) {
	v := ipv6Scenario()
	netA := v.Networks[1]
	e := refEndpoint(netA, "198.18.1.9", port("tcp", "2001:db8:19::1", 9443, 443), port("udp", "::", 9053, 53), port("tcp", "0.0.0.0", 9080, 80))
	e.IP6 = netip.MustParseAddr("fd42:d0c:0:11::9")
	v.Endpoints = []*network.Endpoint{e}
	rs := Render(v, "DOCKER", Hairpin)
	var dnat4, dnat6 []string
	for _, r := range rs.Rules {
		if strings.Contains(r.Spec, "-j DNAT") {
			if r.IPv6 {
				dnat6 = append(dnat6, r.String())
			} else {
				dnat4 = append(dnat4, r.String())
			}
		}
	}
	want4 := []string{"-A DOCKER -p tcp -m tcp --dport 9080 -j DNAT --to-destination 198.18.1.9:80"}
	want6 := []string{
		"-A DOCKER -d 2001:db8:19::1/128 -p tcp -m tcp --dport 9443 -j DNAT --to-destination [fd42:d0c:0:11::9]:443",
		"-A DOCKER -p udp -m udp --dport 9053 -j DNAT --to-destination [fd42:d0c:0:11::9]:53",
		"-A DOCKER -p tcp -m tcp --dport 9080 -j DNAT --to-destination [fd42:d0c:0:11::9]:80",
	}
	if !slices.Equal(dnat4, want4) || !slices.Equal(dnat6, want6) {
		t.Errorf("DNAT rules\niptables:  %q\nip6tables: %q\nwant %q and %q", dnat4, dnat6, want4, want6)
	}
}
