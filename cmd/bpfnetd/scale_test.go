package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/bpfnet/bpfnet/internal/testnet"
	"github.com/bpfnet/bpfnet/network"
)

var (
	scaleNetworks = flag.Int("scale-networks", 1000, "networks TestNetworkCreateScales creates")
	scaleDatapath = flag.String("scale-datapath", "ebpf", "datapath TestNetworkCreateScales runs")
)

// Creating a network costs the same whatever the number of networks
// already there: the eBPF datapath adds one entry to two maps and one
// program attachment. The test creates N networks (/28s of
// 198.18.0.0/15) through the API and compares the median create time
// of 25 networks from the 6th on with the 25 last ones.
//
//	go test ./cmd/bpfnetd -run TestNetworkCreateScales -v -scale-networks=1000
func TestNetworkCreateScales(t *testing.T) {
	n := *scaleNetworks
	if n < 20 || n > 8192 {
		t.Fatalf("-scale-networks=%d: want 20..8192", n)
	}
	topo := testnet.NewTopology(t)
	d := testnet.NewDaemon(t, topo.Host, "--datapath="+*scaleDatapath, "--default-network=false", "--uplink="+testnet.UplinkIf)
	d.Start()
	ctx := context.Background()
	base := netip.MustParseAddr("198.18.0.0").As4()
	took := make([]time.Duration, n)
	for i := range n {
		off := i * 16
		a := base
		a[1] += byte(off >> 16)
		a[2] += byte(off >> 8)
		a[3] += byte(off)
		subnet := netip.PrefixFrom(netip.AddrFrom4(a), 28)
		start := time.Now()
		if _, err := d.Client.CreateNetwork(ctx, network.CreateNetworkRequest{Name: fmt.Sprintf("n%d", i+1), Subnet: subnet.String()}); err != nil {
			t.Fatalf("network %d (%s): %v", i+1, subnet, err)
		}
		took[i] = time.Since(start)
	}
	median := func(ds []time.Duration) time.Duration {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[len(s)/2]
	}
	early, late := median(took[5:30]), median(took[n-25:])
	t.Logf("create time, median of networks 6-30: %v; of networks %d-%d: %v; ratio %.2f", early, n-24, n, late, float64(late)/float64(early))
	if *scaleDatapath != "ebpf" {
		return // measured for comparison; Docker's layout is not flat
	}
	if late > 2*early+10*time.Millisecond {
		t.Errorf("network %d took %v (median), network 10 %v: not flat", n, late, early)
	}
}
