package bench

import (
	"flag"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/bpfnet/bpfnet/internal/testnet"
)

var (
	natBench  = flag.Bool("nat", false, "run the container → outside benchmark (make bench-nat)")
	natRuns   = flag.Int("runs", 5, "interleaved runs per datapath")
	natTime   = flag.Duration("duration", 5*time.Second, "length of each measurement")
	natReport = flag.String("report", "", "write the Markdown table to this file")
	natOnly   = flag.String("only", "ebpf,iptables", "datapaths to run (for debugging)")
)

// TestNATBench compares container → outside traffic through the eBPF
// datapath (BPF masquerade, uplink redirect, no conntrack) with the
// iptables datapath (Docker's rules: FORWARD chains, MASQUERADE, kernel
// conntrack). Both worlds exist side by side and the runs interleave
// (ebpf, iptables, ebpf, …), so machine noise hits both alike.
//
//	make bench-nat    # go test ./bench -run TestNATBench -nat -v
func TestNATBench(t *testing.T) {
	if !*natBench {
		t.Skip("benchmark: run with -nat (make bench-nat)")
	}
	var targets []target
	for _, dp := range strings.Split(*natOnly, ",") {
		topo := testnet.NewTopology(t)
		d := testnet.NewDaemon(t, topo.Host, "--datapath="+dp, "--default-network=false")
		d.Start()
		d.MustCLI("network", "create", "--subnet", "198.18.1.0/24", "web")
		c := testnet.NewNS(t, "c")
		d.MustCLI("endpoint", "create", "--network", "web", "--netns", c.Path, "--name", "c")
		topo.Outside.Spawn(t, 11111, "taskset", "-c", "0", "sockperf", "server", "--tcp", "-i", testnet.OutsideAddr.String(), "-p", "11111")
		topo.Outside.Spawn(t, 5201, "iperf3", "-s", "-B", testnet.OutsideAddr.String())
		targets = append(targets, target{dp, c, testnet.OutsideAddr.String()})
	}
	rr, stream := measure(t, targets)
	var b strings.Builder
	fmt.Fprintf(&b, "Container → outside through the uplink, masquerade on, one network. Medians of %d interleaved runs of %v each; %s.\n\n", *natRuns, *natTime, machine())
	fmt.Fprintf(&b, "| workload | eBPF datapath | iptables datapath | eBPF / iptables |\n|---|---|---|---|\n")
	e, i := rr["ebpf"], rr["iptables"]
	fmt.Fprintf(&b, "| TCP request/response, 64 B, median round trip (lower is better) | %.2f µs | %.2f µs | %.2f |\n", e, i, e/i)
	e, i = stream["ebpf"], stream["iptables"]
	fmt.Fprintf(&b, "| one TCP stream (higher is better) | %.2f Gbit/s | %.2f Gbit/s | %.2f |\n", e, i, e/i)
	writeReport(t, *natReport, b.String())
}
