package conformance

import (
	"flag"
	"maps"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/bpfnet/bpfnet/internal/testnet"
	"github.com/bpfnet/bpfnet/network"
)

// IPv6 (issue 18): Docker 20.10's verdicts for IPv6 traffic, measured on
// its own engine, the reference bpfnet's IPv6 must later agree with. The
// engine runs as the reference's steps 27–31 ran it (--experimental
// --ip6tables --ipv6 --fixed-cidr-v6, here with --userland-proxy=false as
// the IPv4 reference), every scenario network gets a unique local /64
// beside its IPv4 subnet, and the IPv4 tables are checked again over
// IPv6 (ipv6Rows).

// fixedCIDRv6 is the default network's IPv6 subnet (the reference's).
const fixedCIDRv6 = "fd42:d0c:0:1::/64"

var updateReference = flag.Bool("update-reference", false, "rewrite the Docker captures TestDockerBridgeReferenceIPv6 compares against (compat/testdata/docker-20.10/ipv6-scenario.v6.rules)")

// subnets6 are the scenario networks' IPv6 subnets in a dual-stack world
// (none otherwise). The host_ipv4 network stays IPv4-only: Docker 20.10
// cannot make it dual-stack (it hands the IPv4 address to ip6tables'
// SNAT, which refuses it; host_ipv6 came in Docker 25).
func (w *world) subnets6() map[string]netip.Prefix {
	if !w.dualStack {
		return nil
	}
	m := map[string]netip.Prefix{}
	for i, req := range scenarioNetworks {
		if _, ok := req.Options[network.OptHostIPv4]; ok {
			continue
		}
		m[req.Name] = netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0x42, 0x0d, 0x0c, 0, 0, 0, byte(0x11 + i)}), 64)
	}
	return m
}

// resolve6 is resolve for IPv6 rows.
func (w *world) resolve6(t *testing.T, s string) netip.Addr {
	switch {
	case s == "uplink":
		return testnet.UplinkAddr6
	case s == "outside":
		return testnet.OutsideAddr6
	case s == "loopback":
		return netip.IPv6Loopback()
	case strings.HasPrefix(s, "gw:"):
		if a, ok := w.gateways6[strings.TrimPrefix(s, "gw:")]; ok {
			return a
		}
	case strings.Contains(s, "@"):
		if a, ok := w.addrs6[s]; ok {
			return a
		}
	case w.containers[s] != nil:
		if a, ok := w.addrs6[s+"@"+w.primary[s]]; ok {
			return a
		}
	}
	t.Fatalf("no IPv6 address for %q", s)
	return netip.Addr{}
}

// ipv6Rows are rows as Docker 20.10 gives them over IPv6, as measured by
// TestDockerBridgeReferenceIPv6. Its ip6tables rules have the shapes of
// its iptables rules (reference §A.8, and ipv6-scenario.v6.rules), so
// every verdict is the IPv4 one, except:
//   - the host_ipv4 network is IPv4-only (subnets6): its row is left out;
//   - a port published on 127.0.0.1 is not published over IPv6 at all, so
//     [::1] is refused;
//   - the host's own connection to [::1]:8080 is dropped without an
//     answer: Docker's OUTPUT rule translates ::1 too (nothing excludes
//     it in the mode without a proxy), and Linux routes no packet with a
//     loopback source out of lo (IPv6 has no route_localnet);
//   - containers of an internal network cannot reach each other. Its
//     isolation rules drop whatever enters its bridge from outside its
//     subnet, and bridge netfilter puts the containers' neighbour
//     discovery (link-local sources) through them. Docker 28 fixed this
//     (the rules gained `! -i`/`! -o` of the bridge); bpfnet's IPv6
//     follows the fix (compat.InternalFix), so docker2010 says which of
//     the two the rows are for.
func ipv6Rows(rows []row, docker2010, sockHooks bool) []row {
	var out []row
	for _, r := range rows {
		switch {
		case r.seen == "extra":
			continue
		case r.to == "loopback:8080" && sockHooks:
			r.name = "host → [::1]:8080 → allow over IPv6, from the bridge's address (the eBPF datapath's socket hooks send it to the container before routing)"
		case r.to == "loopback:8080":
			r.want, r.seen = drop, ""
			r.name = r.name[:strings.LastIndex(r.name, "→")] + "→ drop over IPv6 (::1 translated, then unroutable)"
		case strings.HasPrefix(r.to, "loopback:"):
			r.want, r.seen = refused, ""
			r.name = r.name[:strings.LastIndex(r.name, "→")] + "→ refused over IPv6 (published on 127.0.0.1 only)"
		case r.from == "i1" && r.to == "i2" && docker2010:
			r.want, r.seen = drop, ""
			r.name = "internal, same network → drop over IPv6 (Docker 20.10: neighbour discovery is isolated; fixed in 28)"
		}
		out = append(out, r)
	}
	return out
}

// TestDockerBridgeReferenceIPv6 runs the scenario dual-stack on Docker's
// own bridge driver and checks every table over IPv4 and over IPv6, then
// compares Docker's ip6tables rules with the committed capture.
func TestDockerBridgeReferenceIPv6(t *testing.T) {
	if !strings.Contains(*clients, "docker") {
		t.Skip("-clients has no docker")
	}
	testnet.RequirePrivileges(t)
	w := newWorld(t)
	w.dualStack = true
	w.startDocker(t, "--userland-proxy=false", "--experimental", "--ip6tables", "--ipv6", "--fixed-cidr-v6", fixedCIDRv6)
	w.gateways[network.DefaultNetworkName] = hostAddr(t, w.topo.Host, "-4", "docker0")
	w.gateways6[network.DefaultNetworkName] = hostAddr(t, w.topo.Host, "-6", "docker0")
	w.dockerScenario(t, "bridge", func(scenarioEndpoint) bool { return true })
	w.topo.Host.Serve(t)
	w.topo.Outside.Serve(t)
	t.Run("IPv4", func(t *testing.T) {
		t.Run("policy", func(t *testing.T) { w.check(t, table) })
		t.Run("default network", func(t *testing.T) { w.check(t, defaultTable) })
		t.Run("published ports", func(t *testing.T) { w.check(t, portTable) })
	})
	w.checkIPv6(t, true, false)
	got := normalizeRules(w.topo.Host.MustRun(t, "ip6tables-save"), w.bridgeNames(t))
	const golden = "../../compat/testdata/docker-20.10/ipv6-scenario.v6.rules"
	if *updateReference {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("Docker's ip6tables rules differ from %s (-update-reference rewrites it):\n%s", golden, testnet.DiffLines(string(want), got))
	}
}

// checkIPv6 runs every table over IPv6, with Docker 20.10's verdicts or,
// for bpfnet, with the internal network fixed, and the neighbour
// advertisement spoofing row; ebpf: the eBPF datapath (its socket hooks,
// its anti-spoofing).
func (w *world) checkIPv6(t *testing.T, docker2010, ebpf bool) {
	w.v6 = true
	defer func() { w.v6 = false }()
	t.Run("IPv6", func(t *testing.T) {
		t.Run("policy", func(t *testing.T) { w.check(t, ipv6Rows(table, docker2010, ebpf)) })
		t.Run("default network", func(t *testing.T) { w.check(t, ipv6Rows(defaultTable, docker2010, ebpf)) })
		t.Run("published ports", func(t *testing.T) { w.check(t, ipv6Rows(portTable, docker2010, ebpf)) })
		t.Run("neighbour advertisement spoofing", func(t *testing.T) { w.checkNASpoofing(t, ebpf) })
	})
}

// checkNASpoofing: a2 tells a1, its neighbour on net-a, that the
// gateway's IPv6 address is at a2's MAC (an unsolicited advertisement with
// the override flag, RFC 4861 §7.2.6: a1 replaces the MAC of the entry it
// has). In Docker's layout nothing looks into neighbour discovery, so a1
// takes it, as it takes a forged ARP reply over IPv4: the row Docker gives
// (and bpfnet's iptables datapath with it). The eBPF datapath lets a
// container advertise only its own addresses: a1's entry keeps the
// gateway's MAC.
func (w *world) checkNASpoofing(t *testing.T, ebpf bool) {
	a1, a2 := w.containers["a1"], w.containers["a2"]
	a1mac, err := a1.MAC("eth0")
	if err != nil {
		t.Fatal(err)
	}
	a2mac, err := a2.MAC("eth0")
	if err != nil {
		t.Fatal(err)
	}
	gw := w.resolve6(t, "gw:net-a")
	// a1's entry for the gateway, from a ping; flushed afterwards, so the
	// rows that follow start from a clean cache whatever this one did.
	a1.MustRun(t, "ping", "-6", "-n", "-q", "-c", "1", "-W", "2", gw.String())
	defer a1.Run("ip", "-6", "neigh", "flush", "dev", "eth0")
	lladdr := func() string {
		f := strings.Fields(a1.MustRun(t, "ip", "-6", "neigh", "show", gw.String(), "dev", "eth0"))
		if i := slices.Index(f, "lladdr"); i >= 0 && i+1 < len(f) {
			return f[i+1]
		}
		return ""
	}
	real := lladdr()
	if real == "" || real == a2mac.String() {
		t.Fatalf("a1's entry for the gateway %s: %q before the advertisement", gw, real)
	}
	// type 136, O flag, the gateway as target, a2's MAC as its address.
	body := append([]byte{0x20, 0, 0, 0}, gw.AsSlice()...)
	body = append(body, 2, 1)
	body = append(body, a2mac...)
	frame := serializeLayers(t, &layers.Ethernet{SrcMAC: a2mac, DstMAC: a1mac, EthernetType: layers.EthernetTypeIPv6},
		&layers.IPv6{Version: 6, NextHeader: layers.IPProtocolICMPv6, HopLimit: 255, SrcIP: w.resolve6(t, "a2").AsSlice(), DstIP: w.resolve6(t, "a1").AsSlice()},
		&layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(136, 0)}, gopacket.Payload(body))
	for range 3 {
		if err := a2.SendFrame("eth0", frame); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(500 * time.Millisecond)
	got := lladdr()
	switch {
	case ebpf && got != real:
		t.Errorf("a1's entry for the gateway %s went from %s to %s (a2 is %s): the forged advertisement got through", gw, real, got, a2mac)
	case !ebpf && got != a2mac.String():
		t.Errorf("a1's entry for the gateway %s is %s, want a2's %s as in Docker's layout (%s before)", gw, got, a2mac, real)
	}
}

// hostAddr is the global address of family ("-4", "-6") on ifname.
func hostAddr(t *testing.T, ns *testnet.NS, family, ifname string) netip.Addr {
	t.Helper()
	f := strings.Fields(ns.MustRun(t, "ip", family, "-o", "addr", "show", "dev", ifname, "scope", "global"))
	i := slices.IndexFunc(f, func(s string) bool { return s == "inet" || s == "inet6" })
	if i < 0 || i+1 >= len(f) {
		t.Fatalf("no %s address on %s: %v", family, ifname, f)
	}
	p, err := netip.ParsePrefix(f[i+1])
	if err != nil {
		t.Fatal(err)
	}
	return p.Addr()
}

// bridgeNames maps each scenario network's bridge (br- and 12 digits of
// its id) to a name that does not change from run to run.
func (w *world) bridgeNames(t *testing.T) map[string]string {
	m := map[string]string{}
	for _, req := range scenarioNetworks {
		id := strings.TrimSpace(w.docker.Docker(t, 30*time.Second, "network", "inspect", "-f", "{{.Id}}", req.Name))
		m["br-"+id[:12]] = "br-" + req.Name
	}
	return m
}

var counters = regexp.MustCompile(`\[\d+:\d+\]`)

// normalizeRules drops what changes from run to run in an *tables-save
// output, as compat's tests read the other captures: its comment lines,
// counters (set to [0:0]) and bridge names.
func normalizeRules(save string, bridges map[string]string) string {
	var b strings.Builder
	for _, line := range strings.Split(save, "\n") {
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		b.WriteString(line + "\n")
	}
	s := counters.ReplaceAllString(b.String(), "[0:0]")
	for _, from := range slices.Sorted(maps.Keys(bridges)) {
		s = strings.ReplaceAll(s, from, bridges[from])
	}
	return s
}
