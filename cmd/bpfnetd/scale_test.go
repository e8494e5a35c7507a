package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/bpfnet/bpfnet/api"
	"github.com/bpfnet/bpfnet/internal/testnet"
)

var (
	scaleNetworks  = flag.Int("scale-networks", 1000, "networks TestControlPlaneScales creates")
	scaleEndpoints = flag.Int("scale-endpoints", 1000, "endpoints TestControlPlaneScales creates (a multiple of 10)")
	scaleDatapath  = flag.String("scale-datapath", "ebpf", "datapath TestControlPlaneScales runs")
	scaleAttach    = flag.String("scale-attach", "auto", "--tc-attach of the eBPF datapath in TestControlPlaneScales")
	scaleReport    = flag.String("scale-report", "", "write the Markdown table to this file")
)

// TestControlPlaneScales creates N networks (/28s of 198.18.0.0/17)
// and then M endpoints (M/10 namespaces, each joined to 10 /24 networks
// created first) through the API, timing each, and reports p50 and p99
// of the first and the last 100 creations of each kind, and the daemon's
// resident memory at the end. In eBPF mode a network is two map entries and one attachment
// and an endpoint four entries and two attachments, so creation must not
// grow with what exists; the iptables datapath (Docker's layout) is
// measured for comparison.
//
//	go test ./cmd/bpfnetd -run TestControlPlaneScales -v [-scale-datapath=iptables] [-scale-attach=tc]
func TestControlPlaneScales(t *testing.T) {
	n, m := *scaleNetworks, *scaleEndpoints
	if n < 200 || n > 2048 || m < 200 || m > 2500 || m%10 != 0 {
		t.Fatalf("-scale-networks=%d -scale-endpoints=%d: want 200..2048 networks and 200..2500 endpoints, a multiple of 10", n, m)
	}
	topo := testnet.NewTopology(t)
	// Without the default network, network i of the test is the daemon's i-th.
	d := testnet.NewDaemon(t, topo.Host, "--datapath="+*scaleDatapath, "--tc-attach="+*scaleAttach, "--default-network=false")
	d.Start()
	ctx := context.Background()
	for j := range 10 {
		if _, err := d.Client.CreateNetwork(ctx, api.CreateNetworkRequest{Name: fmt.Sprintf("eps%d", j), Subnet: fmt.Sprintf("198.18.%d.0/24", 128+j)}); err != nil {
			t.Fatal(err)
		}
	}
	base := netip.MustParseAddr("198.18.0.0").As4()
	nets := make([]time.Duration, n)
	for i := range n {
		off := i * 16
		a := base
		a[2] += byte(off >> 8)
		a[3] += byte(off)
		subnet := netip.PrefixFrom(netip.AddrFrom4(a), 28)
		start := time.Now()
		if _, err := d.Client.CreateNetwork(ctx, api.CreateNetworkRequest{Name: fmt.Sprintf("n%d", i+1), Subnet: subnet.String()}); err != nil {
			t.Fatalf("network %d (%s): %v", i+1, subnet, err)
		}
		nets[i] = time.Since(start)
	}
	// m/10 "containers", each joined to the 10 networks in turn (the
	// shape bench/dockerd_test.go gives a real Docker engine).
	containers := make([]*testnet.NS, m/10)
	for c := range containers {
		containers[c] = testnet.NewNS(t, fmt.Sprintf("s%d", c))
	}
	eps := make([]time.Duration, 0, m)
	for j := range 10 {
		for c, ns := range containers {
			req := api.CreateEndpointRequest{Network: fmt.Sprintf("eps%d", j), NetNS: ns.Path, IfName: fmt.Sprintf("eth%d", j), Name: fmt.Sprintf("s%d-%d", c, j)}
			start := time.Now()
			if _, err := d.Client.CreateEndpoint(ctx, req); err != nil {
				t.Fatalf("endpoint %d: %v", len(eps)+1, err)
			}
			eps = append(eps, time.Since(start))
		}
	}
	rss := d.RSS()
	kernel := bridgesByHand(t, n)

	var b strings.Builder
	fmt.Fprintf(&b, "Control plane, %s datapath (--tc-attach=%s): create time through the API (p50 / p99 of 100 creations).\n\n", *scaleDatapath, *scaleAttach)
	fmt.Fprintf(&b, "| what | creations | p50 | p99 |\n|---|---|---|---|\n")
	row := func(what string, ds []time.Duration, from int) (p50, p99 time.Duration) {
		return testnet.CreationRow(&b, what, ds, from)
	}
	// The first few creations warm caches up (and attach the uplink).
	netEarly, _ := row("network", nets, 6)
	netLate, _ := row("network", nets, n-99)
	epEarly, _ := row("endpoint", eps, 6)
	epLate, _ := row("endpoint", eps, m-99)
	row("bridge by hand (the kernel's share of a network)", kernel, 6)
	row("bridge by hand (the kernel's share of a network)", kernel, n-99)
	fmt.Fprintf(&b, "\nDaemon resident memory with %d networks and %d endpoints: %.1f MB.\n", n+10, m, float64(rss)/(1<<20))
	t.Log("\n" + b.String())
	if *scaleReport != "" {
		if err := os.WriteFile(*scaleReport, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if *scaleDatapath != "ebpf" {
		return // measured for comparison; Docker's layout is not flat
	}
	if netLate > 2*netEarly+10*time.Millisecond {
		t.Errorf("network p50 %v at %d networks, %v at the start: not flat", netLate, n, netEarly)
	}
	if epLate > 2*epEarly+10*time.Millisecond {
		t.Errorf("endpoint p50 %v at %d endpoints, %v at the start: not flat", epLate, m, epEarly)
	}
}

// bridgesByHand creates n bridges in a namespace of their own through
// netlink, each with a /28 address and up, as a network create does with
// no daemon, and returns how long each took: the kernel's part of a
// network's cost and of its growth with N.
func bridgesByHand(t *testing.T, n int) []time.Duration {
	ns := testnet.NewNS(t, "kbr")
	out := make([]time.Duration, n)
	err := ns.Do(func() error {
		for i := range n {
			start := time.Now()
			br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: fmt.Sprintf("kbr%d", i)}}
			if err := netlink.LinkAdd(br); err != nil {
				return err
			}
			a := netip.AddrFrom4([4]byte{198, 18, byte(i * 16 >> 8), byte(i*16) + 1})
			if err := netlink.AddrAdd(br, &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(28, 32)}}); err != nil {
				return err
			}
			if err := netlink.LinkSetUp(br); err != nil {
				return err
			}
			out[i] = time.Since(start)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
