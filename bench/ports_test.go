package bench

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"testing"

	"github.com/bpfnet/bpfnet/api"
	"github.com/bpfnet/bpfnet/compat"
	"github.com/bpfnet/bpfnet/internal/testnet"
	"github.com/bpfnet/bpfnet/network"
)

var (
	portsBench  = flag.Bool("ports", false, "run the outside → published port benchmark (make bench-ports)")
	portsReport = flag.String("ports-report", "", "write the Markdown table to this file")
)

// The published ports: sockperf's and iperf3's, each to the same port of
// the container.
const sockperfPort, iperfPort = 11111, 5201

// portWorld is a container reached from the outside namespace at dst.
type portWorld struct {
	name       string
	c, outside *testnet.NS
	dst        string
}

// TestPublishedPortBench measures connections from the outside namespace
// to a container's published port (the uplink address, DNAT to the
// container) in worlds side by side, interleaved:
//
//   - routed: no published port, no rule: the outside connects to the
//     container's own address through the host's routing (the floor);
//
//   - docker-20.10: Docker 20.10's rules for the network and its -p
//     (default proxy layout, rendered by compat with the DOCKER prefix,
//     loaded with iptables-restore; bridge netfilter on);
//
//   - bpfnet-iptables and bpfnet-ebpf: the daemon, `endpoint create -p`.
//
//     make bench-ports   # go test ./bench -run TestPublishedPortBench -ports -v
func TestPublishedPortBench(t *testing.T) {
	if !*portsBench {
		t.Skip("benchmark: run with -ports (make bench-ports)")
	}
	worlds := []portWorld{
		handmadePortWorld(t, "routed", false),
		handmadePortWorld(t, "docker-20.10", true),
		daemonPortWorld(t, "bpfnet-iptables", "iptables"),
		daemonPortWorld(t, "bpfnet-ebpf", "ebpf"),
	}
	for _, w := range worlds {
		w.c.Spawn(t, sockperfPort, "taskset", "-c", "0", "sockperf", "server", "--tcp", "-p", fmt.Sprint(sockperfPort))
		w.c.Spawn(t, iperfPort, "iperf3", "-s", "-p", fmt.Sprint(iperfPort))
	}
	var targets []target
	for _, w := range worlds {
		targets = append(targets, target{w.name, w.outside, w.dst})
	}
	rr, stream := measure(t, targets)
	writeReport(t, *portsReport, fmt.Sprintf("Outside → a container's published port (the uplink address, DNAT). Medians of %d interleaved runs of %v each; %s.\n\n", *natRuns, *natTime, machine())+
		ratioTable(targets, rr, stream, "routed"))
}

// handmadePortWorld is a topology with a bridge and one container made by
// hand; with docker it loads Docker 20.10's rules publishing the ports,
// and the outside connects to the uplink address, else to the container.
func handmadePortWorld(t *testing.T, name string, docker bool) portWorld {
	topo := testnet.NewTopology(t)
	host, c := topo.Host, testnet.NewNS(t, "pc")
	host.MustRun(t, "ip", "link", "add", "brbench", "type", "bridge")
	host.MustRun(t, "ip", "addr", "add", "198.18.0.1/24", "dev", "brbench")
	host.MustRun(t, "ip", "link", "set", "brbench", "up")
	host.MustRun(t, "ip", "link", "add", "vpc", "type", "veth", "peer", "name", "eth0", "netns", c.Name)
	host.MustRun(t, "ip", "link", "set", "vpc", "master", "brbench", "up")
	c.MustRun(t, "ip", "addr", "add", "198.18.0.2/24", "dev", "eth0")
	c.MustRun(t, "ip", "link", "set", "eth0", "up")
	c.MustRun(t, "ip", "link", "set", "lo", "up")
	c.MustRun(t, "ip", "route", "add", "default", "via", "198.18.0.1")
	host.MustRun(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	w := portWorld{name: name, c: c, outside: topo.Outside, dst: "198.18.0.2"}
	if !docker {
		return w
	}
	n := &network.Network{ID: fmt.Sprintf("%064d", 0), Name: "web", ICC: true, Masquerade: true, Bridge: "brbench",
		Subnet: netip.MustParsePrefix("198.18.0.0/24")}
	ep := &network.Endpoint{ID: "c", NetworkID: n.ID, IP: netip.MustParseAddr("198.18.0.2")}
	for _, p := range []uint16{sockperfPort, iperfPort} {
		ep.Ports = append(ep.Ports, network.PortMapping{Proto: "tcp", HostIP: netip.IPv4Unspecified(), HostPort: p, Port: p})
	}
	v := network.View{Networks: []*network.Network{n}, Endpoints: []*network.Endpoint{ep}}
	host.MustRunInput(t, compat.Save(compat.Render(v, "DOCKER", compat.UserlandProxy), "DROP"), "iptables-restore")
	host.MustRun(t, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1")
	w.dst = testnet.UplinkAddr.String()
	return w
}

// daemonPortWorld runs bpfnetd with one network and a container
// publishing the ports; the outside connects to the uplink address.
func daemonPortWorld(t *testing.T, name, datapath string) portWorld {
	topo := testnet.NewTopology(t)
	d := testnet.NewDaemon(t, topo.Host, "--datapath="+datapath, "--default-network=false")
	d.Start()
	ctx := context.Background()
	if _, err := d.Client.CreateNetwork(ctx, api.CreateNetworkRequest{Name: "web", Subnet: "198.18.0.0/24"}); err != nil {
		t.Fatal(err)
	}
	c := testnet.NewNS(t, "pc")
	req := api.CreateEndpointRequest{Network: "web", NetNS: c.Path, Name: "c"}
	for _, p := range []uint16{sockperfPort, iperfPort} {
		req.Ports = append(req.Ports, fmt.Sprintf("%d:%d", p, p))
	}
	if _, err := d.Client.CreateEndpoint(ctx, req); err != nil {
		t.Fatal(err)
	}
	c.MustRun(t, "ip", "link", "set", "lo", "up")
	return portWorld{name: name, c: c, outside: topo.Outside, dst: testnet.UplinkAddr.String()}
}
