package main

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/bpfnet/bpfnet/internal/testnet"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testnet.RemoveBinaries()
	os.Exit(code)
}

// snapshot is everything a failed command could leave behind.
func snapshot(t *testing.T, d *testnet.Daemon, nss ...*testnet.NS) string {
	t.Helper()
	var b strings.Builder
	counters := regexp.MustCompile(`\[\d+:\d+\]`)
	// Operational state and flags settle on their own (a new bridge port
	// turns UNKNOWN into UP); they are not residue.
	linkState := regexp.MustCompile(`<[^>]*>| state [A-Z]+`)
	for _, ns := range nss {
		b.WriteString(linkState.ReplaceAllString(ns.MustRun(t, "ip", "-o", "link", "show"), ""))
		b.WriteString(ns.MustRun(t, "ip", "-o", "-4", "addr", "show"))
		b.WriteString(ns.MustRun(t, "ip", "route", "show"))
	}
	for _, line := range strings.Split(d.NS.MustRun(t, "iptables-save"), "\n") {
		if !strings.HasPrefix(line, "#") {
			b.WriteString(counters.ReplaceAllString(line, "") + "\n")
		}
	}
	b.WriteString(testnet.StateFiles(t, d.StateDir))
	return b.String()
}

// Every bad input gets a non-zero exit, a message naming the problem, and
// leaves interfaces, addresses, routes, rules and the state file unchanged.
func TestBadInputLeavesNoResidue(t *testing.T) {
	topo := testnet.NewTopology(t)
	d := testnet.NewDaemon(t, topo.Host)
	d.Start()
	c1 := testnet.NewNS(t, "c1")
	c2 := testnet.NewNS(t, "c2")
	d.MustCLI("network", "create", "--subnet", "198.18.1.0/24", "net1")
	d.MustCLI("network", "create", "--subnet", "198.18.2.0/30", "tiny") // gateway .1 and one endpoint .2
	d.MustCLI("network", "create", "--subnet", "198.18.4.0/24", "--internal", "intnet")
	d.MustCLI("endpoint", "create", "--network", "net1", "--netns", c1.Path, "--name", "ep1", "--ip", "198.18.1.5", "-p", "8080:80", "-p", "127.0.0.1:9090:90/udp")
	d.MustCLI("endpoint", "create", "--network", "tiny", "--netns", c2.Path, "--name", "only")
	// Published ports show where Docker users look for them.
	for _, args := range [][]string{{"endpoint", "ls"}, {"endpoint", "inspect", "ep1"}, {"network", "inspect", "net1"}} {
		out := d.MustCLI(args...)
		wants := []string{"0.0.0.0:8080->80/tcp", "127.0.0.1:9090->90/udp"}
		if args[0] == "endpoint" && args[1] == "inspect" {
			out = strings.Join(strings.Fields(out), "")
			wants = []string{`{"Proto":"udp","HostIP":"127.0.0.1","HostPort":9090,"Port":90}`}
		}
		for _, want := range wants {
			if !strings.Contains(out, want) {
				t.Errorf("bpfnet %s does not show %s:\n%s", strings.Join(args, " "), want, out)
			}
		}
	}
	topo.Host.MustRun(t, "ip", "link", "add", "taken0", "type", "bridge")
	c2.MustRun(t, "ip", "link", "add", "eth7", "type", "bridge")

	cases := []struct {
		name string
		args []string
		msg  string
	}{
		{"invalid CIDR", []string{"network", "create", "--subnet", "198.18.3.0/33", "x"}, "invalid subnet"},
		{"not a CIDR", []string{"network", "create", "--subnet", "banana", "x"}, "invalid subnet"},
		{"host bits set", []string{"network", "create", "--subnet", "198.18.3.1/24", "x"}, "did you mean 198.18.3.0/24"},
		{"IPv6 subnet without --ipv6", []string{"network", "create", "--subnet", "fd00::/64", "x"}, "needs IPv6 on (--ipv6)"},
		{"two IPv4 subnets", []string{"network", "create", "--subnet", "198.18.3.0/24", "--subnet", "198.18.5.0/24", "x"}, "give one per family"},
		{"IPv6 link-local subnet", []string{"network", "create", "--ipv6", "--subnet", "fe80::/64", "x"}, "not link-local"},
		{"IPv6 multicast subnet", []string{"network", "create", "--ipv6", "--subnet", "ff05::/64", "x"}, "multicast"},
		{"IPv6 address on an IPv4-only network", []string{"endpoint", "create", "--network", "net1", "--netns", c2.Path, "--ip6", "fd00::5"}, "has no IPv6 subnet"},
		{"overlapping subnet", []string{"network", "create", "--subnet", "198.18.1.128/25", "x"}, "overlaps subnet 198.18.1.0/24"},
		{"gateway outside subnet", []string{"network", "create", "--subnet", "198.18.3.0/24", "--gateway", "198.18.4.1", "x"}, "not inside subnet"},
		{"gateway is the network address", []string{"network", "create", "--subnet", "198.18.3.0/24", "--gateway", "198.18.3.0", "x"}, "network or broadcast"},
		{"gateway is the broadcast address", []string{"network", "create", "--subnet", "198.18.3.0/24", "--gateway", "198.18.3.255", "x"}, "network or broadcast"},
		{"ip-range outside subnet", []string{"network", "create", "--subnet", "198.18.3.0/24", "--ip-range", "198.18.4.0/25", "x"}, "not inside subnet"},
		{"ip-range larger than subnet", []string{"network", "create", "--subnet", "198.18.3.0/25", "--ip-range", "198.18.3.0/24", "x"}, "not inside subnet"},
		{"duplicate name", []string{"network", "create", "--subnet", "198.18.3.0/24", "net1"}, "already exists"},
		{"bad network name", []string{"network", "create", "bad/name"}, "invalid network name"},
		{"unknown option", []string{"network", "create", "-o", "com.docker.network.bridge.enable_foo=true", "x"}, "unknown network option"},
		{"bad option value", []string{"network", "create", "-o", "com.docker.network.bridge.enable_icc=maybe", "x"}, "want true or false"},
		{"option without value", []string{"network", "create", "-o", "com.docker.network.bridge.enable_icc", "x"}, "KEY=VALUE"},
		{"bad mtu", []string{"network", "create", "-o", "com.docker.network.driver.mtu=9", "x"}, "between 68 and 65535"},
		{"bridge name too long", []string{"network", "create", "-o", "com.docker.network.bridge.name=abcdefghijklmnop", "x"}, "invalid bridge name"},
		{"bridge name used by another network", []string{"network", "create", "-o", "com.docker.network.bridge.name=" + bridgeOf(t, d, "net1"), "x"}, "already used by network net1"},
		{"bridge name used by another interface", []string{"network", "create", "-o", "com.docker.network.bridge.name=taken0", "x"}, "already used by another interface"},
		{"remove network with endpoints", []string{"network", "rm", "net1"}, "has 1 endpoint"},
		{"remove unknown network", []string{"network", "rm", "nosuch"}, "network nosuch not found"},
		{"inspect unknown network", []string{"network", "inspect", "nosuch"}, "network nosuch not found"},
		{"endpoint on unknown network", []string{"endpoint", "create", "--network", "nosuch", "--netns", c1.Path}, "network nosuch not found"},
		{"endpoint without network", []string{"endpoint", "create", "--netns", c1.Path}, "--network is required"},
		{"netns missing", []string{"endpoint", "create", "--network", "net1", "--netns", "/run/netns/bpfnet-no-such-ns"}, "does not exist"},
		{"neither netns nor pid", []string{"endpoint", "create", "--network", "net1"}, "--netns PATH or --pid PID"},
		{"both netns and pid", []string{"endpoint", "create", "--network", "net1", "--netns", c1.Path, "--pid", "1"}, "not both"},
		{"pid that does not exist", []string{"endpoint", "create", "--network", "net1", "--pid", "999999999"}, "no process 999999999"},
		{"IP in use", []string{"endpoint", "create", "--network", "net1", "--netns", c2.Path, "--ip", "198.18.1.5"}, "already in use"},
		{"IP outside range", []string{"endpoint", "create", "--network", "net1", "--netns", c2.Path, "--ip", "198.18.9.5"}, "outside the ip-range"},
		{"IP is the gateway", []string{"endpoint", "create", "--network", "net1", "--netns", c2.Path, "--ip", "198.18.1.1"}, "is the gateway"},
		{"invalid IP", []string{"endpoint", "create", "--network", "net1", "--netns", c2.Path, "--ip", "1.2.3"}, "invalid address"},
		{"pool exhausted", []string{"endpoint", "create", "--network", "tiny", "--netns", c1.Path, "--ifname", "eth1"}, "exhausted"},
		{"ifname taken in the netns", []string{"endpoint", "create", "--network", "net1", "--netns", c2.Path, "--ifname", "eth7"}, "eth7 already exists"},
		{"invalid ifname", []string{"endpoint", "create", "--network", "net1", "--netns", c2.Path, "--ifname", "this-name-is-too-long"}, "invalid interface name"},
		{"duplicate endpoint name", []string{"endpoint", "create", "--network", "net1", "--netns", c2.Path, "--ifname", "eth3", "--name", "ep1"}, "already exists"},
		{"port spec without host port", []string{"endpoint", "create", "--network", "net1", "--netns", c2.Path, "-p", "80"}, "HOSTPORT:PORT"},
		{"port 0", []string{"endpoint", "create", "--network", "net1", "--netns", c2.Path, "-p", "0:80"}, "0 is out of range 1-65535"},
		{"port above 65535", []string{"endpoint", "create", "--network", "net1", "--netns", c2.Path, "-p", "8081:65536"}, "65536 is out of range 1-65535"},
		{"port ranges of different lengths", []string{"endpoint", "create", "--network", "net1", "--netns", c2.Path, "-p", "8000-8010:80-81"}, "differ in length"},
		{"unknown protocol", []string{"endpoint", "create", "--network", "net1", "--netns", c2.Path, "-p", "8081:80/sctp"}, "want tcp or udp"},
		{"host port already published", []string{"endpoint", "create", "--network", "net1", "--netns", c2.Path, "-p", "8080:81"}, "already published by endpoint ep1"},
		{"wildcard over a host-IP port", []string{"endpoint", "create", "--network", "net1", "--netns", c2.Path, "-p", "9090:90/udp"}, "already published by endpoint ep1"},
		{"host port requested twice", []string{"endpoint", "create", "--network", "net1", "--netns", c2.Path, "-p", "8081:80", "-p", "8081:81"}, "requested twice"},
		{"host IP not on this host", []string{"endpoint", "create", "--network", "net1", "--netns", c2.Path, "-p", "203.0.113.9:8081:80"}, "203.0.113.9 is not an address of this host"},
		{"ports on an internal network", []string{"endpoint", "create", "--network", "intnet", "--netns", c2.Path, "-p", "8081:80"}, "is internal"},
		{"remove unknown endpoint", []string{"endpoint", "rm", "nosuch"}, "endpoint nosuch not found"},
		{"locate an interface that is not a veth", []string{"locate", "--netns", c2.Path, "--ifname", "eth7"}, "not a veth"},
		{"locate a missing interface", []string{"locate", "--netns", c1.Path, "--ifname", "eth9"}, "no interface eth9"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := snapshot(t, d, topo.Host, c1, c2)
			_, stderr, code := d.CLI(tc.args...)
			if code == 0 {
				t.Fatalf("bpfnet %s: exit 0, want an error", strings.Join(tc.args, " "))
			}
			if !strings.Contains(stderr, tc.msg) {
				t.Errorf("stderr %q does not name the problem (want %q)", strings.TrimSpace(stderr), tc.msg)
			}
			if after := snapshot(t, d, topo.Host, c1, c2); after != before {
				t.Errorf("residue left behind:\n%s", testnet.DiffLines(before, after))
			}
		})
	}
}

func bridgeOf(t *testing.T, d *testnet.Daemon, name string) string {
	out := d.MustCLI("network", "ls")
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 6 && f[1] == name {
			return f[5]
		}
	}
	t.Fatalf("network %s not in ls:\n%s", name, out)
	return ""
}
