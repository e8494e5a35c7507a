package bench

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/bpfnet/bpfnet/compat"
	"github.com/bpfnet/bpfnet/internal/testnet"
	"github.com/bpfnet/bpfnet/network"
)

var (
	sweep       = flag.Bool("sweep", false, "run the same-network sweep (make bench)")
	sweepN      = flag.Int("sweep-networks", 1000, "networks of the large worlds")
	sweepReport = flag.String("sweep-report", "", "write the Markdown table to this file")
)

// pair is two containers on one network of a world.
type pair struct {
	name   string
	c1, c2 *testnet.NS
	dst    string // c2's address
}

// TestSameNetworkSweep measures traffic between two containers of the
// same network (the oldest one, which Docker's rule order makes walk
// every other network's rules) in worlds side by side, interleaved:
//
//   - bare: a bridge and two veths, no filtering at all;
//
//   - docker-20.10 with 1 and N networks: the same, plus Docker 20.10's
//     rule layout for that many networks (rendered by compat with the
//     DOCKER prefix, loaded with iptables-restore; bridge netfilter on);
//
//   - bpfnet-iptables with 1 network (the same layout, installed by the
//     daemon);
//
//   - bpfnet-ebpf with 1 and N networks.
//
//     make bench     # go test ./bench -run TestSameNetworkSweep -sweep -v
func TestSameNetworkSweep(t *testing.T) {
	if !*sweep {
		t.Skip("benchmark: run with -sweep (make bench)")
	}
	n := *sweepN
	worlds := []pair{
		barePair(t, "bare", 0),
		barePair(t, "docker-20.10, 1 network", 1),
		barePair(t, fmt.Sprintf("docker-20.10, %d networks", n), n),
		daemonPair(t, "bpfnet-iptables, 1 network", "iptables", 1),
		daemonPair(t, "bpfnet-ebpf, 1 network", "ebpf", 1),
		daemonPair(t, fmt.Sprintf("bpfnet-ebpf, %d networks", n), "ebpf", n),
	}
	for _, w := range worlds {
		w.c2.Spawn(t, "taskset", "-c", "0", "sockperf", "server", "--tcp", "-i", w.dst, "-p", "11111")
		w.c2.Spawn(t, "iperf3", "-s", "-B", w.dst)
	}
	var targets []target
	for _, w := range worlds {
		targets = append(targets, target{w.name, w.c1, w.dst})
	}
	rr, stream := measure(t, targets)
	writeReport(t, *sweepReport, fmt.Sprintf("Two containers of the same network. Medians of %d interleaved runs of %v each; %s.\n\n", *natRuns, *natSecs, machine())+
		ratioTable(targets, rr, stream, "bare"))
}

// barePair builds a bridge with two containers in a namespace of its own;
// with networks > 0 it loads Docker 20.10's rules for that many networks,
// the pair's being the oldest.
func barePair(t *testing.T, name string, networks int) pair {
	host := testnet.NewNS(t, "bhost")
	p := pair{name: name, c1: testnet.NewNS(t, "b1"), c2: testnet.NewNS(t, "b2"), dst: "198.18.0.3"}
	host.MustRun(t, "ip", "link", "add", "brbench", "type", "bridge")
	host.MustRun(t, "ip", "addr", "add", "198.18.0.1/24", "dev", "brbench")
	host.MustRun(t, "ip", "link", "set", "brbench", "up")
	for i, c := range []*testnet.NS{p.c1, p.c2} {
		host.MustRun(t, "ip", "link", "add", fmt.Sprintf("vb%d", i), "type", "veth", "peer", "name", "eth0", "netns", c.Name)
		host.MustRun(t, "ip", "link", "set", fmt.Sprintf("vb%d", i), "master", "brbench", "up")
		c.MustRun(t, "ip", "addr", "add", fmt.Sprintf("198.18.0.%d/24", i+2), "dev", "eth0")
		c.MustRun(t, "ip", "link", "set", "eth0", "up")
		c.MustRun(t, "ip", "link", "set", "lo", "up")
	}
	if networks == 0 {
		return p
	}
	var v network.View
	for i := range networks {
		n := &network.Network{ID: fmt.Sprintf("%064d", i), Name: fmt.Sprintf("n%d", i), ICC: true, Masquerade: true,
			Bridge: fmt.Sprintf("br-%012d", i), Subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)}
		if i == 0 {
			n.Bridge, n.Subnet = "brbench", netip.MustParsePrefix("198.18.0.0/24")
		}
		v.Networks = append(v.Networks, n)
	}
	host.MustRunInput(t, compat.Save(compat.Render(v, "DOCKER", compat.UserlandProxy), "DROP"), "iptables-restore")
	host.MustRun(t, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1")
	return p
}

// daemonPair runs bpfnetd with networks networks (the pair on the oldest).
func daemonPair(t *testing.T, name, datapath string, networks int) pair {
	topo := testnet.NewTopology(t)
	d := testnet.NewDaemon(t, topo.Host, "--datapath="+datapath, "--default-network=false", "--uplink="+testnet.UplinkIf)
	d.Start()
	ctx := context.Background()
	for i := range networks {
		subnet := fmt.Sprintf("10.%d.%d.0/24", i>>8, i&255)
		if i == 0 {
			subnet = "198.18.0.0/24"
		}
		if _, err := d.Client.CreateNetwork(ctx, network.CreateNetworkRequest{Name: fmt.Sprintf("n%d", i), Subnet: subnet}); err != nil {
			t.Fatal(err)
		}
	}
	p := pair{name: name, c1: testnet.NewNS(t, "d1"), c2: testnet.NewNS(t, "d2")}
	for i, c := range []*testnet.NS{p.c1, p.c2} {
		ep, err := d.Client.CreateEndpoint(ctx, network.CreateEndpointRequest{Network: "n0", NetNS: c.Path, Name: fmt.Sprintf("e%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		p.dst = ep.IP.String()
		c.MustRun(t, "ip", "link", "set", "lo", "up")
	}
	time.Sleep(200 * time.Millisecond)
	return p
}
