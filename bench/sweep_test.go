package bench

import (
	"context"
	"flag"
	"fmt"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bpfnet/bpfnet/api"
	"github.com/bpfnet/bpfnet/compat"
	"github.com/bpfnet/bpfnet/internal/testnet"
	"github.com/bpfnet/bpfnet/network"
)

var (
	sweep          = flag.Bool("sweep", false, "run the same-network sweep (make bench)")
	sweepNs        = flag.String("sweep-networks", "1,10,100,1000", "numbers of networks of the sweep")
	sweepKinds     = flag.String("sweep-worlds", strings.Join(sweepKindNames, ","), "kinds of world to sweep")
	sweepIPTMax    = flag.Int("sweep-iptables-max", 100, "largest N for bpfnet-iptables (creating Docker's layout through the daemon takes minutes at 1000)")
	sweepWorkloads = flag.String("sweep-workloads", "rr,crr,udp,stream", "workloads: rr (TCP request/response), crr (TCP connections per second), udp (64-byte UDP packets per second), stream (one TCP stream)")
	sweepReport    = flag.String("sweep-report", "", "write the Markdown tables to this file")
	sweepCharts    = flag.String("sweep-charts", "", "write one SVG chart per workload into this directory")
	sweepIPv6      = flag.Bool("sweep-ipv6", false, "same path over IPv6: every network dual-stack, the pairs talk over their IPv6 addresses (worlds bare, docker-20.10, docker-20.10-legacy with Docker's ip6tables layout, bpfnet-iptables, bpfnet-ebpf; rr by a Go client and server, as Debian 12's sockperf has no IPv6)")
	sweepPath      = flag.String("sweep-path", "same", "path measured: same (container to container of one network), outside (container to the outside namespace through the uplink, masquerade on) or published (the outside namespace to a container's published ports on a host address)")
)

var sweepKindNames = []string{"docker-20.10", "docker-20.10-legacy", "docker-29-nft", "bpfnet-iptables", "bpfnet-ebpf"}

// pair is two containers on one network of a world, c2 at c2Addr; for
// the path measured, client connects to dst and server listens on bind.
type pair struct {
	name           string
	c1, c2         *testnet.NS
	c2Addr         netip.Addr
	client, server *testnet.NS
	dst, bind      string
	// kind, networks and position place the pair in the sweep.
	kind     string
	networks int
	newest   bool
}

// TestSameNetworkSweep measures traffic between two containers of one
// network, as the number of networks N grows, in worlds side by side:
//
//   - bare: a bridge and two veths, no filtering at all (the baseline);
//   - docker-20.10 and docker-20.10-legacy: the same plus Docker 20.10's
//     rule layout for N networks (rendered by compat with the DOCKER
//     prefix, loaded with iptables-restore through the nft or the legacy
//     backend; bridge netfilter on);
//   - docker-29-nft: Docker 29's nftables layout (verdict maps by bridge);
//   - bpfnet-iptables and bpfnet-ebpf: the daemon with N networks.
//
// With N > 1 each world has a pair on its oldest network (which Docker
// 20.10's order makes walk every other network's rules) and one on its
// newest. Every pair runs every workload, all interleaved (A B C A B C …),
// -runs times; the report gives medians and ratios to bare.
//
// With -sweep-path=outside the client sends to the world's outside
// namespace through its uplink instead, masqueraded (bare: routed, no
// translation, no filtering). With -sweep-path=published the client is in
// the outside namespace and connects to ports the server container
// publishes on a host address (the uplink's for the oldest network, its
// second address for the newest; bare: routed straight to the container).
//
//	make bench           # go test ./bench -run TestSameNetworkSweep -sweep -v
//	make bench-outside   # ... -sweep-path=outside
//	make bench-published # ... -sweep-path=published
func TestSameNetworkSweep(t *testing.T) {
	if !*sweep {
		t.Skip("benchmark: run with -sweep (make bench)")
	}
	if !slices.Contains([]string{"same", "outside", "published"}, *sweepPath) {
		t.Fatalf("-sweep-path=%q: want same, outside or published", *sweepPath)
	}
	if *sweepIPv6 && *sweepPath != "same" {
		t.Fatalf("-sweep-ipv6 measures the same path only, not %q", *sweepPath)
	}
	var ns []int
	for _, s := range strings.Split(*sweepNs, ",") {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 4000 {
			t.Fatalf("-sweep-networks: %q is not a number of networks (1..4000)", s)
		}
		ns = append(ns, n)
	}
	pairs := []pair{barePair(t)}
	for _, kind := range strings.Split(*sweepKinds, ",") {
		for _, n := range ns {
			switch {
			case kind == "bpfnet-iptables" && n > *sweepIPTMax:
				continue
			case kind == "docker-29-nft" && *sweepIPv6:
				t.Fatalf("-sweep-ipv6: Docker 29's IPv6 nftables layout is not modelled (docker29NFT is IPv4): leave docker-29-nft out")
			case strings.HasPrefix(kind, "bpfnet-"):
				pairs = append(pairs, daemonPairs(t, kind, n)...)
			case slices.Contains(sweepKindNames, kind):
				pairs = append(pairs, dockerPairs(t, kind, n)...)
			default:
				t.Fatalf("-sweep-worlds: unknown kind %q", kind)
			}
		}
	}
	var targets []target
	serving := map[*testnet.NS]bool{}
	for _, p := range pairs {
		if !serving[p.server] { // the pairs of a world share its outside
			if *sweepIPv6 {
				serveEcho(t, p.server, p.bind)
			} else {
				p.server.Spawn(t, sockperfPort, "taskset", "-c", "0", "sockperf", "server", "--tcp", "-i", p.bind, "-p", fmt.Sprint(sockperfPort))
			}
			p.server.Spawn(t, iperfPort, "iperf3", "-s", "-B", p.bind, "-p", fmt.Sprint(iperfPort))
			serveConnections(t, p.server, p.bind)
			serving[p.server] = true
		}
		targets = append(targets, target{p.name, p.client, p.dst})
	}
	time.Sleep(300 * time.Millisecond) // servers listening
	workloads := strings.Split(*sweepWorkloads, ",")
	res := measureWorkloads(t, targets, workloads)
	var b strings.Builder
	what, prefix := "Two containers of one network", "sweep-"
	if *sweepIPv6 {
		what, prefix = "Two containers of one network, over IPv6 (every network dual-stack; rr by a Go client and server, whose round trips include Go scheduler wake-ups: compare them only with each other)", "sweep-ipv6-"
	}
	switch *sweepPath {
	case "outside":
		what, prefix = "A container to the outside namespace through the uplink, masquerade on (bare: routed, no translation)", "sweep-outside-"
	case "published":
		what, prefix = "The outside namespace to a container's published ports on a host address (bare: routed to the container, no DNAT)", "sweep-published-"
	}
	fmt.Fprintf(&b, "%s, N networks. Medians of %d interleaved runs of %v each; %s.\n", what, *natRuns, *natTime, machine())
	for _, wl := range workloads {
		fmt.Fprintf(&b, "\n%s\n\n| world | N | network | %s | ÷ bare |\n|---|---|---|---|---|\n", workloadTitle[wl], workloadUnit[wl])
		base := res[wl]["bare"]
		for _, p := range pairs {
			v := res[wl][p.name]
			pos := "oldest"
			if p.newest {
				pos = "newest"
			}
			fmt.Fprintf(&b, "| %s | %d | %s | %.*f | %.2f |\n", p.kind, p.networks, pos, workloadDigits[wl], v, v/base)
		}
		if *sweepCharts != "" {
			writeChart(t, filepath.Join(*sweepCharts, prefix+wl+".svg"), wl, pairs, res[wl])
		}
	}
	writeReport(t, *sweepReport, b.String())
}

var (
	workloadTitle = map[string]string{
		"rr":     "TCP request/response, 64 B, median round trip (lower is better)",
		"crr":    "TCP connections per second, one client, connect and reset (higher is better)",
		"udp":    "64-byte UDP datagrams received per second, one sender (higher is better)",
		"stream": "one TCP stream (higher is better)",
	}
	workloadUnit   = map[string]string{"rr": "µs", "crr": "connections/s", "udp": "packets/s", "stream": "Gbit/s"}
	workloadDigits = map[string]int{"rr": 2, "crr": 0, "udp": 0, "stream": 2}
)

// measureWorkloads runs every workload against every target, interleaved,
// and returns the medians by workload and target name.
func measureWorkloads(t *testing.T, targets []target, workloads []string) map[string]map[string]float64 {
	all := map[string]map[string][]float64{}
	for _, wl := range workloads {
		if workloadTitle[wl] == "" {
			t.Fatalf("unknown workload %q", wl)
		}
		all[wl] = map[string][]float64{}
	}
	for run := range *natRuns {
		for _, w := range targets {
			var line []string
			for _, wl := range workloads {
				var v float64
				switch wl {
				case "rr":
					if *sweepIPv6 {
						v = goRR(t, w.from, w.dst, *natTime)
					} else {
						v = tcpRR(t, w.from, w.dst, *natTime)
					}
				case "crr":
					v = tcpConnRate(t, w.from, w.dst, *natTime)
				case "udp":
					v = udpRate(t, w.from, w.dst, *natTime)
				case "stream":
					v = tcpStream(t, w.from, w.dst, *natTime)
				}
				all[wl][w.name] = append(all[wl][w.name], v)
				line = append(line, fmt.Sprintf("%s %.*f", wl, workloadDigits[wl], v))
			}
			t.Logf("run %d %s: %s", run+1, w.name, strings.Join(line, ", "))
		}
	}
	out := map[string]map[string]float64{}
	for wl, byName := range all {
		out[wl] = map[string]float64{}
		for name, vs := range byName {
			out[wl][name] = median(vs)
		}
	}
	return out
}

// newHost returns a world's host namespace; for the outside and
// published paths it has an uplink to an outside namespace
// (testnet.NewTopology), returned too.
func newHost(t *testing.T) (host, outside *testnet.NS) {
	testnet.RequirePrivileges(t)
	if *sweepPath != "same" {
		topo := testnet.NewTopology(t)
		return topo.Host, topo.Outside
	}
	return testnet.NewNS(t, "bhost"), nil
}

// route sets the pair's client, server and addresses for the path
// measured; outside is the world's outside namespace (nil on the same
// path), routed that the world publishes nothing (bare).
func (p *pair) route(outside *testnet.NS, routed bool) {
	p.client, p.server = p.c1, p.c2
	p.dst = p.c2Addr.String()
	switch *sweepPath {
	case "outside":
		p.server, p.dst = outside, testnet.OutsideAddr.String()
	case "published":
		p.client = outside
		if !routed {
			p.dst = publishAddr(p.newest).String()
		}
	}
	p.bind = p.dst
	if *sweepPath == "published" {
		p.bind = p.c2Addr.String()
	}
}

// publishAddr is the host address a pair's container publishes its
// ports on: two pairs of one world cannot share one.
func publishAddr(newest bool) netip.Addr {
	if newest {
		return testnet.ExtraAddr
	}
	return testnet.UplinkAddr
}

// publishedPorts are the ports the published path publishes, each to the
// same container port: sockperf's, iperf3's (TCP control, UDP data) and
// serveConnections'.
var publishedPorts = []network.PortMapping{
	{Proto: "tcp", HostPort: sockperfPort, Port: sockperfPort},
	{Proto: "tcp", HostPort: iperfPort, Port: iperfPort},
	{Proto: "udp", HostPort: iperfPort, Port: iperfPort},
	{Proto: "tcp", HostPort: connPort, Port: connPort},
}

var vethCount int

// handPair adds bridge br with gateway .1 of subnet and two containers
// (.2 and .3) to host; with -sweep-ipv6 also ::1, ::2 and ::3 of subnet6,
// and the pair talks over IPv6.
func handPair(t *testing.T, host *testnet.NS, br string, subnet, subnet6 netip.Prefix) pair {
	gw := subnet.Addr().Next()
	p := pair{c1: testnet.NewNS(t, "b1"), c2: testnet.NewNS(t, "b2"), c2Addr: gw.Next().Next()}
	host.MustRun(t, "ip", "link", "add", br, "type", "bridge")
	host.MustRun(t, "ip", "addr", "add", netip.PrefixFrom(gw, subnet.Bits()).String(), "dev", br)
	host.MustRun(t, "ip", "link", "set", br, "up")
	gw6 := subnet6.Addr().Next()
	if *sweepIPv6 {
		host.MustRun(t, "ip", "addr", "add", netip.PrefixFrom(gw6, 64).String(), "dev", br, "nodad")
		p.c2Addr = gw6.Next().Next()
	}
	for i, c := range []*testnet.NS{p.c1, p.c2} {
		vethCount++
		veth := fmt.Sprintf("vb%d", vethCount)
		host.MustRun(t, "ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", c.Name)
		host.MustRun(t, "ip", "link", "set", veth, "master", br, "up")
		addr := gw
		for range i + 1 {
			addr = addr.Next()
		}
		c.MustRun(t, "ip", "addr", "add", netip.PrefixFrom(addr, subnet.Bits()).String(), "dev", "eth0")
		c.MustRun(t, "ip", "link", "set", "eth0", "up")
		c.MustRun(t, "ip", "link", "set", "lo", "up")
		c.MustRun(t, "ip", "route", "add", "default", "via", gw.String())
		if *sweepIPv6 {
			addr6 := gw6.Next()
			if i == 1 {
				addr6 = addr6.Next()
			}
			c.MustRun(t, "ip", "addr", "add", netip.PrefixFrom(addr6, 64).String(), "dev", "eth0", "nodad")
			c.MustRun(t, "ip", "-6", "route", "add", "default", "via", gw6.String())
		}
	}
	return p
}

// barePair is a bridge with two containers and no filtering at all
// (and, for the outside path, plain routing both ways).
func barePair(t *testing.T) pair {
	host, outside := newHost(t)
	// The outside namespace routes 198.18.0.0/16 to the uplink.
	p := handPair(t, host, "brbench", netip.MustParsePrefix("198.18.0.0/24"), sweepSubnet6(0))
	p.name, p.kind, p.networks = "bare", "bare", 1
	p.route(outside, true)
	if outside != nil {
		host.MustRun(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	}
	return p
}

// sweepSubnet is network i's subnet: 10.x.y.0/24 (inside the world's own
// namespaces).
func sweepSubnet(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)
}

// sweepSubnet6 is network i's IPv6 subnet in the IPv6 sweep:
// fd00:0:XXYY::/64.
func sweepSubnet6(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0, 0, 0, byte(i >> 8), byte(i)}), 64)
}

// dockerPairs builds a host with Docker's layout (kind) for n networks
// and pairs on the oldest and (n > 1) the newest.
func dockerPairs(t *testing.T, kind string, n int) []pair {
	host, outside := newHost(t)
	var v network.View
	for i := range n {
		n := &network.Network{ID: fmt.Sprintf("%064d", i), Name: fmt.Sprintf("n%d", i), ICC: true, Masquerade: true,
			Bridge: fmt.Sprintf("br-%012d", i), Subnet: sweepSubnet(i)}
		if *sweepIPv6 {
			n.Subnet6, n.Gateway6 = sweepSubnet6(i), sweepSubnet6(i).Addr().Next()
		}
		v.Networks = append(v.Networks, n)
	}
	var pairs []pair
	for _, i := range positions(n) {
		p := handPair(t, host, v.Networks[i].Bridge, v.Networks[i].Subnet, v.Networks[i].Subnet6)
		p.kind, p.networks, p.newest = kind, n, i > 0
		p.name = pairName(p)
		p.route(outside, false)
		pairs = append(pairs, p)
		if *sweepPath == "published" {
			ep := &network.Endpoint{ID: fmt.Sprintf("c%d", i), NetworkID: v.Networks[i].ID, IP: p.c2Addr}
			for _, m := range publishedPorts {
				m.HostIP = publishAddr(p.newest)
				ep.Ports = append(ep.Ports, m)
			}
			v.Endpoints = append(v.Endpoints, ep)
		}
	}
	rules := compat.Render(v, "DOCKER", compat.UserlandProxy)
	switch kind {
	case "docker-20.10":
		host.MustRunInput(t, compat.Save(rules, "DROP"), "iptables-nft-restore")
	case "docker-20.10-legacy":
		host.MustRunInput(t, compat.Save(rules, "DROP"), "iptables-legacy-restore")
	case "docker-29-nft":
		host.MustRunInput(t, docker29NFT(v), "nft", "-f", "-")
	}
	host.MustRun(t, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1")
	if *sweepIPv6 {
		// Docker's ip6tables layout (--ip6tables), through the same
		// backend.
		restore := strings.Replace(map[string]string{"docker-20.10": "iptables-nft-restore", "docker-20.10-legacy": "iptables-legacy-restore"}[kind], "iptables", "ip6tables", 1)
		host.MustRunInput(t, compat.Save6(rules, "DROP"), restore)
		host.MustRun(t, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1", "net.bridge.bridge-nf-call-ip6tables=1")
	}
	return pairs
}

// positions are the networks a world of n networks measures.
func positions(n int) []int {
	if n == 1 {
		return []int{0}
	}
	return []int{0, n - 1}
}

func pairName(p pair) string {
	pos := "oldest"
	if p.newest {
		pos = "newest"
	}
	return fmt.Sprintf("%s, %d networks, %s", p.kind, p.networks, pos)
}

// daemonPairs runs bpfnetd (kind bpfnet-DATAPATH) with n networks and
// pairs on the oldest and (n > 1) the newest.
func daemonPairs(t *testing.T, kind string, n int) []pair {
	topo := testnet.NewTopology(t)
	d := testnet.NewDaemon(t, topo.Host, "--datapath="+strings.TrimPrefix(kind, "bpfnet-"), "--default-network=false")
	d.Start()
	ctx := context.Background()
	for i := range n {
		req := api.CreateNetworkRequest{Name: fmt.Sprintf("n%d", i), Subnet: sweepSubnet(i).String()}
		if *sweepIPv6 {
			req.EnableIPv6, req.Subnet6 = true, sweepSubnet6(i).String()
		}
		if _, err := d.Client.CreateNetwork(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	var pairs []pair
	for _, i := range positions(n) {
		p := pair{c1: testnet.NewNS(t, "d1"), c2: testnet.NewNS(t, "d2"), kind: kind, networks: n, newest: i > 0}
		p.name = pairName(p)
		for j, c := range []*testnet.NS{p.c1, p.c2} {
			req := api.CreateEndpointRequest{Network: fmt.Sprintf("n%d", i), NetNS: c.Path, Name: fmt.Sprintf("e%d-%d", i, j)}
			if j == 1 && *sweepPath == "published" {
				for _, m := range publishedPorts {
					req.Ports = append(req.Ports, fmt.Sprintf("%s:%d:%d/%s", publishAddr(p.newest), m.HostPort, m.Port, m.Proto))
				}
			}
			ep, err := d.Client.CreateEndpoint(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			p.c2Addr = ep.IP
			if *sweepIPv6 {
				p.c2Addr = ep.IP6
			}
			c.MustRun(t, "ip", "link", "set", "lo", "up")
		}
		p.route(topo.Outside, false)
		pairs = append(pairs, p)
	}
	return pairs
}

// writeChart draws the oldest network's value of each kind against N
// (log scale), with bare as a flat line: an SVG of a few lines, no
// dependencies.
func writeChart(t *testing.T, path, wl string, pairs []pair, values map[string]float64) {
	type pt struct{ n, v float64 }
	series := map[string][]pt{}
	var kinds []string
	maxN, maxV := 1.0, 0.0
	for _, p := range pairs {
		if p.newest || p.kind == "bare" {
			continue
		}
		if !slices.Contains(kinds, p.kind) {
			kinds = append(kinds, p.kind)
		}
		series[p.kind] = append(series[p.kind], pt{float64(p.networks), values[p.name]})
		maxN, maxV = max(maxN, float64(p.networks)), max(maxV, values[p.name])
	}
	bare := values["bare"]
	maxV = max(maxV, bare) * 1.1
	const w, h, left, bottom = 640.0, 360.0, 70.0, 40.0
	x := func(n float64) float64 { return left + (w-left-20)*math.Log10(n)/max(math.Log10(maxN), 1) }
	y := func(v float64) float64 { return h - bottom - (h-bottom-20)*v/maxV }
	colors := []string{"#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#2ca02c", "#1f77b4"}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">`+"\n", w, h+20*float64(len(kinds)+1))
	fmt.Fprintf(&b, `<text x="%.0f" y="14">%s, oldest network, vs networks (log)</text>`+"\n", left, workloadUnit[wl])
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="black"/>`+"\n", left, h-bottom, w-20, h-bottom)
	fmt.Fprintf(&b, `<line x1="%.0f" y1="20" x2="%.0f" y2="%.0f" stroke="black"/>`+"\n", left, left, h-bottom)
	for n := 1.0; n <= maxN; n *= 10 {
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle">%.0f</text>`+"\n", x(n), h-bottom+16, n)
	}
	for i := 0; i <= 4; i++ {
		v := maxV * float64(i) / 4
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end">%.*f</text>`+"\n", left-6, y(v)+4, workloadDigits[wl], v)
	}
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="gray" stroke-dasharray="4"/>`+"\n", x(1), y(bare), x(maxN), y(bare))
	legend := func(i int, color, name string) {
		ly := h + 20*float64(i)
		fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="%s" stroke-width="2"/><text x="%.0f" y="%.0f">%s</text>`+"\n",
			left, ly, left+30, ly, color, left+36, ly+4, name)
	}
	legend(0, "gray", "bare bridge")
	for i, kind := range kinds {
		var ps []string
		for _, p := range series[kind] {
			ps = append(ps, fmt.Sprintf("%.1f,%.1f", x(p.n), y(p.v)))
		}
		c := colors[i%len(colors)]
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", c, strings.Join(ps, " "))
		legend(i+1, c, kind)
	}
	b.WriteString("</svg>\n")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}
