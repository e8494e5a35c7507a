package compat

import (
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/bpfnet/bpfnet/network"
)

// refNet builds a network as Docker 20.10 had it in the reference capture:
// same id (so the bridge is br-<12 hex>), subnet and options.
func refNet(id, name, subnet string, mod func(*network.Network)) *network.Network {
	n := &network.Network{
		ID: id, Name: name, Subnet: netip.MustParsePrefix(subnet), Bridge: "br-" + id[:12],
		ICC: true, Masquerade: true, MTU: 1500, HostBinding: netip.IPv4Unspecified(),
	}
	if mod != nil {
		mod(n)
	}
	return n
}

// The networks of the reference capture, in creation order (ids and
// subnets from inspect-*.json and the .rules files).
var (
	refDefault = refNet("5f589825128f34ce995cae6b342c0cac76287a0f14b5a2707c3a6979323be0c7", "bridge", "172.17.0.0/16",
		func(n *network.Network) { n.Bridge, n.Default = "docker0", true })
	refMyBridge = refNet("4690323eae369551fb7336e811e81e2c50886a38921748da7105062254aa39b4", "my-bridge-network", "192.168.100.0/24", nil)
	refNoICC    = refNet("969491fc79a83fe4e49f14c14012b514a545c508f6f8c8da0cbdcdeb9059dc20", "no-icc-network", "192.168.200.0/24",
		func(n *network.Network) { n.ICC = false })
	refNoMasq = refNet("0f8c7cc43f186e223168bad7d76fd2ce61464b58dd7ffd869aa2c87b9c2bbc0d", "no-masq-network", "192.168.150.0/24",
		func(n *network.Network) { n.Masquerade = false })
	refInternal = refNet("7d735beb2e068311e10d55c43920b4cf1729f0a0b3dbe0547979742a42bcbdad", "internal-network", "192.168.160.0/24",
		func(n *network.Network) { n.Internal = true })
	refMybr0 = refNet("fe42267e08711be582f6ddd9638d050ff9384a498294fa9599952b5bf3eda84e", "mybr0-network", "192.168.170.0/24",
		func(n *network.Network) { n.Bridge = "mybr0" })
	refHostBind = refNet("7813b63cdff5bb2d26e89a3253acfff324af3cd343a4d133ed0a951f93302a00", "hostbind-network", "192.168.180.0/24",
		func(n *network.Network) { n.HostBinding = netip.MustParseAddr("127.0.0.1") })
	refSNAT = refNet("c34552e40c7e701ce3cbc5d23383f5b70cbbff8a3bdefe2995442cc9c9da3c10", "snat-network", "192.168.220.0/24",
		func(n *network.Network) { n.HostIPv4 = netip.MustParseAddr("172.17.0.1") })
)

// refSteps maps each reference step to the networks that existed then.
var refSteps = []struct {
	file     string
	networks []*network.Network
}{
	{"01-fresh", []*network.Network{refDefault}},
	{"02-my-bridge-network", []*network.Network{refDefault, refMyBridge}},
	{"03-no-icc-network", []*network.Network{refDefault, refMyBridge, refNoICC}},
	{"04-no-masq-network", []*network.Network{refDefault, refMyBridge, refNoICC, refNoMasq}},
	{"05-internal-network", []*network.Network{refDefault, refMyBridge, refNoICC, refNoMasq, refInternal}},
	{"06-mybr0-network", []*network.Network{refDefault, refMyBridge, refNoICC, refNoMasq, refInternal, refMybr0}},
	{"07-hostbind-network", []*network.Network{refDefault, refMyBridge, refNoICC, refNoMasq, refInternal, refMybr0, refHostBind}},
	{"40-snat-host_ipv4-network", []*network.Network{refDefault, refSNAT}},
}

// refUserRule is the rule added by hand to DOCKER-USER before step 40.
const refUserRule = "-A DOCKER-USER -s 198.51.100.0/24 -m comment --comment user-rule-added-by-hand -j DROP"

var counters = regexp.MustCompile(`\[\d+:\d+\]`)

// referenceRules returns the captured iptables-save text of a step without
// comments and counters, and without what is not a rendering of its
// networks (see testdata/docker-20.10/README.md).
func referenceRules(t *testing.T, step string, keepUserRule bool) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "docker-20.10", step+".rules"))
	if err != nil {
		t.Fatal(err)
	}
	return normalizeSave(string(b), keepUserRule, false)
}

// normalizeSave strips comments and counters from iptables-save output,
// and the stale hairpin rules of 20.10 unless the capture is of hairpin
// mode (and optionally the user rule).
func normalizeSave(s string, keepUserRule, hairpin bool) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		switch {
		case line == "", strings.HasPrefix(line, "#"):
			continue
		case !hairpin && strings.Contains(line, "--src-type LOCAL -j MASQUERADE"):
			continue
		case line == refUserRule && !keepUserRule:
			continue
		}
		out = append(out, counters.ReplaceAllString(line, "[0:0]"))
	}
	return strings.Join(out, "\n") + "\n"
}

func TestRenderMatchesDocker2010(t *testing.T) {
	for _, step := range refSteps {
		t.Run(step.file, func(t *testing.T) {
			want := referenceRules(t, step.file, false)
			got := Save(Render(network.View{Networks: step.networks}, "DOCKER", UserlandProxy), "DROP")
			if got != want {
				t.Errorf("rendered rules differ from the Docker 20.10 capture\n%s", lineDiff(want, got))
			}
		})
	}
}

func TestRenderPrefix(t *testing.T) {
	rs := Render(network.View{Networks: []*network.Network{refDefault, refInternal}}, "BPFNET", UserlandProxy)
	text := Save(rs, "ACCEPT")
	for _, want := range []string{
		"-A FORWARD -j BPFNET-USER",
		"-A FORWARD -j BPFNET-ISOLATION-STAGE-1",
		"-A FORWARD -o docker0 -j BPFNET",
		"-A BPFNET-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j BPFNET-ISOLATION-STAGE-2",
		"-A BPFNET -i docker0 -j RETURN",
		":FORWARD ACCEPT [0:0]",
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("missing %q in\n%s", want, text)
		}
	}
	if strings.Contains(text, "DOCKER") {
		t.Errorf("prefix BPFNET still renders DOCKER:\n%s", text)
	}
}

func TestValidatePrefix(t *testing.T) {
	for p, ok := range map[string]bool{"BPFNET": true, "DOCKER": true, "A": true, "ABCDEFGHIJ": true,
		"ABCDEFGHIJK": false, "": false, "1X": false, "BAD PREFIX": false, "X-Y": false} {
		if err := ValidatePrefix(p); (err == nil) != ok {
			t.Errorf("ValidatePrefix(%q) = %v, want ok=%v", p, err, ok)
		}
	}
}

// lineDiff shows the lines only in want (-) and only in got (+), in order.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	i, j := 0, 0
	for i < len(w) || j < len(g) {
		switch {
		case i < len(w) && j < len(g) && w[i] == g[j]:
			b.WriteString("  " + w[i] + "\n")
			i++
			j++
		case i < len(w) && !strings.Contains(got, w[i]+"\n"):
			b.WriteString("- " + w[i] + "\n")
			i++
		case j < len(g):
			b.WriteString("+ " + g[j] + "\n")
			j++
		default:
			b.WriteString("- " + w[i] + "\n")
			i++
		}
	}
	return b.String()
}

// refEndpoint is a container of the reference capture with its published
// ports (docker ps and the .rules files of the step).
func refEndpoint(n *network.Network, ip string, ports ...network.PortMapping) *network.Endpoint {
	return &network.Endpoint{ID: ip, NetworkID: n.ID, IP: netip.MustParseAddr(ip), Ports: ports}
}

func port(proto, hostIP string, hostPort, p uint16) network.PortMapping {
	return network.PortMapping{Proto: proto, HostIP: netip.MustParseAddr(hostIP), HostPort: hostPort, Port: p}
}

var refNetworks07 = []*network.Network{refDefault, refMyBridge, refNoICC, refNoMasq, refInternal, refMybr0, refHostBind}

// The containers with published ports, as dockerd (default proxy mode)
// started them in steps 09–15. c7's -p 5050 on the internal network
// published nothing (bpfnet refuses it).
var (
	c2 = refEndpoint(refDefault, "172.17.0.3", port("tcp", "0.0.0.0", 8080, 80), port("udp", "0.0.0.0", 5353, 53))
	c3 = refEndpoint(refMyBridge, "192.168.100.2", port("tcp", "127.0.0.1", 9090, 90))
	c5 = refEndpoint(refHostBind, "192.168.180.2", port("tcp", "127.0.0.1", 7070, 70)) // host_binding_ipv4
	c6 = refEndpoint(refNoMasq, "192.168.150.2", port("tcp", "0.0.0.0", 6060, 60))
	c8 = refEndpoint(refNoICC, "192.168.200.2", port("tcp", "0.0.0.0", 4040, 40))
)

func TestRenderPortsMatchDocker2010(t *testing.T) {
	for _, step := range []struct {
		file string
		eps  []*network.Endpoint
	}{
		{"09-run-c2-default-p8080-p5353udp", []*network.Endpoint{c2}},
		{"10-run-c3-mybridge-p127-9090", []*network.Endpoint{c2, c3}},
		{"12-run-c5-hostbind-p7070", []*network.Endpoint{c2, c3, c5}},
		{"13-run-c6-nomasq-p6060", []*network.Endpoint{c2, c3, c5, c6}},
		{"15-run-c8-c9-noicc-c10-mybr0-c11-internal", []*network.Endpoint{c2, c3, c5, c6, c8}},
	} {
		t.Run(step.file, func(t *testing.T) {
			want := referenceRules(t, step.file, false)
			got := Save(docker2010(Render(network.View{Networks: refNetworks07, Endpoints: step.eps}, "DOCKER", UserlandProxy)), "DROP")
			if got != want {
				t.Errorf("rendered rules differ from the Docker 20.10 capture\n%s", lineDiff(want, got))
			}
		})
	}
}

// Steps 50 and 51 were captured by bpfnet's developers from Debian's
// Docker Engine 20.10.24 with --userland-proxy=false, the layout the daemon
// renders (testdata/docker-20.10/README.md): a network with
// com.docker.network.host_ipv4 SNATs the host's own packets into its
// bridge to that address, with masquerade on or off.
func TestRenderHairpinHostIPv4MatchesDocker2010(t *testing.T) {
	snat := refNet("916f3a2bd7b9496091e3f6fe3f6bd9bf430983b114e42930dabdbb704470b956", "snat-network", "192.168.220.0/24",
		func(n *network.Network) { n.HostIPv4 = netip.MustParseAddr("172.17.0.1") })
	nomasq := refNet("05d3cbc6e2bc8a5e782771d7355763c0eb48037ae1452cf981e7c06cd74c9e71", "snat-nomasq-network", "192.168.221.0/24",
		func(n *network.Network) { n.HostIPv4, n.Masquerade = netip.MustParseAddr("172.17.0.1"), false })
	for _, step := range []struct {
		file     string
		networks []*network.Network
	}{
		{"50-hairpin-snat-host_ipv4-network", []*network.Network{refDefault, snat}},
		{"51-hairpin-snat-nomasq-network", []*network.Network{refDefault, snat, nomasq}},
	} {
		t.Run(step.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", "docker-20.10", step.file+".rules"))
			if err != nil {
				t.Fatal(err)
			}
			want := normalizeSave(string(b), false, true)
			got := Save(Render(network.View{Networks: step.networks}, "DOCKER", Hairpin), "DROP")
			if got != want {
				t.Errorf("rendered rules differ from the Docker 20.10 capture\n%s", lineDiff(want, got))
			}
		})
	}
}

// Steps 23–25 ran dockerd with --userland-proxy=false. They were captured
// after a restart, which re-inserts network blocks in Go map order (and
// moves the default bridge's to the top), so the whole rule set is compared
// as a set, and the order only where Docker's is deterministic: the
// per-port rules, appended as containers start. Containers restarted with
// new addresses (c3 .3, c8 .3).
func TestRenderHairpinMatchesDocker2010(t *testing.T) {
	c3h := refEndpoint(refMyBridge, "192.168.100.3", c3.Ports...)
	c8h := refEndpoint(refNoICC, "192.168.200.3", c8.Ports...)
	for _, step := range []struct {
		file string
		eps  []*network.Endpoint
	}{
		{"23-restart-userland-proxy-false", nil},
		{"24-userland-proxy-false-containers-started", []*network.Endpoint{c2}},
		{"25-userland-proxy-false-all-containers", []*network.Endpoint{c2, c3h, c5, c6, c8h}},
	} {
		t.Run(step.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", "docker-20.10", step.file+".rules"))
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, l := range strings.Split(string(b), "\n") {
				// Another CNI tool's chains were on this host during step
				// 23; the DOCKER-USER rule was added by hand.
				if strings.HasPrefix(l, "-A ") && !strings.Contains(l, "CNI-") && l != refUserRule {
					want = append(want, l)
				}
			}
			rs := docker2010(Render(network.View{Networks: refNetworks07, Endpoints: step.eps}, "DOCKER", Hairpin))
			var got []string
			for _, r := range rs.Rules {
				got = append(got, r.String())
			}
			if a, b := sortedJoin(want), sortedJoin(got); a != b {
				t.Errorf("rule set differs from the capture (sorted)\n%s", lineDiff(a, b))
			}
			perPort := regexp.MustCompile(`-j DNAT|--dport \d+ -j (ACCEPT|MASQUERADE)`)
			if a, b := strings.Join(filter(want, perPort), "\n"), strings.Join(filter(got, perPort), "\n"); a != b {
				t.Errorf("per-port rules in a different order\n%s", lineDiff(a, b))
			}
		})
	}
}

func sortedJoin(lines []string) string {
	s := slices.Clone(lines)
	slices.Sort(s)
	return strings.Join(s, "\n") + "\n"
}

// filter keeps the lines matching re, grouped by target (one group per
// chain here: ACCEPT in filter DOCKER, MASQUERADE in POSTROUTING, DNAT in
// nat DOCKER), each group in its original order.
func filter(lines []string, re *regexp.Regexp) []string {
	var out []string
	for _, l := range lines {
		if re.MatchString(l) {
			out = append(out, l)
		}
	}
	target := func(l string) string { return l[strings.LastIndex(l, "-j "):] }
	slices.SortStableFunc(out, func(a, b string) int { return strings.Compare(target(a), target(b)) })
	return out
}

// docker2010 is rs without the additions of later Docker versions: what
// Docker 20.10 itself emits, to compare with its captures.
func docker2010(rs Ruleset) Ruleset {
	rs.Rules = slices.DeleteFunc(slices.Clone(rs.Rules), func(r Rule) bool { return r.Addition != "" })
	return rs
}

// The additions to the 20.10 layout, listed: for every container of a
// masquerading network, a drop of packets to it that did not arrive on its
// bridge (moby#45610, Docker 28; not for the no-masquerade network c6 is
// on, whose containers are reached at their addresses by design); for
// every port published on 127.0.0.1, a drop of packets to it that did not
// arrive on lo (moby#41872, Docker 28). Everything else is 20.10's, as the
// tests above check line by line.
func TestLaterDockerFixes(t *testing.T) {
	rs := Render(network.View{Networks: refNetworks07, Endpoints: []*network.Endpoint{c2, c3, c5, c6, c8}}, "DOCKER", Hairpin)
	var got []string
	for _, r := range rs.Rules {
		if r.Addition != "" {
			got = append(got, r.Table+" "+r.String()+"  # "+r.Addition)
		}
	}
	want := []string{
		"raw -A PREROUTING -d 172.17.0.3/32 ! -i docker0 -j DROP  # " + DirectAccessFix,
		"raw -A PREROUTING -d 192.168.100.2/32 ! -i br-4690323eae36 -j DROP  # " + DirectAccessFix,
		"raw -A PREROUTING -d 127.0.0.1/32 ! -i lo -p tcp -m tcp --dport 9090 -j DROP  # " + LoopbackPortFix,
		"raw -A PREROUTING -d 192.168.180.2/32 ! -i br-7813b63cdff5 -j DROP  # " + DirectAccessFix,
		"raw -A PREROUTING -d 127.0.0.1/32 ! -i lo -p tcp -m tcp --dport 7070 -j DROP  # " + LoopbackPortFix,
		"raw -A PREROUTING -d 192.168.200.2/32 ! -i br-969491fc79a8 -j DROP  # " + DirectAccessFix,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("additions:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !strings.Contains(Save(rs, "DROP"), "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A PREROUTING -d 172.17.0.3/32") {
		t.Errorf("Save does not print the raw table:\n%s", Save(rs, "DROP"))
	}
}
