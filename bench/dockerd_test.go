package bench

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bpfnet/bpfnet/internal/testnet"
)

var (
	dockerdBench      = flag.Bool("dockerd", false, "run TestDockerdControlPlane (make bench-dockerd)")
	dockerdNetworks   = flag.Int("dockerd-networks", 1000, "networks TestDockerdControlPlane creates")
	dockerdContainers = flag.Int("dockerd-containers", 100, "running containers TestDockerdControlPlane connects, each to 10 networks")
	dockerdReport     = flag.String("dockerd-report", "", "write the Markdown table to this file")
)

// TestDockerdControlPlane times a real Docker Engine 20.10 (Debian's
// docker.io) in a namespace of its own: its iptables rules go into that
// namespace only. Like TestControlPlaneScales for bpfnetd it creates N
// networks and then endpoints, and reports p50 and p99 of creations
// 6–105 and of the last 100. A network is `docker network create
// --subnet 10.x.y.0/24`. An endpoint is `docker network connect` of a
// running container (on Docker's default bridge) to one of 10 networks
// created first: the part of `docker run` that bpfnet's endpoint create
// does (veth, addresses, rules). Starting the containers is not timed.
//
//	make bench-dockerd   # go test ./bench -run TestDockerdControlPlane -dockerd -v
func TestDockerdControlPlane(t *testing.T) {
	if !*dockerdBench {
		t.Skip("benchmark: run with -dockerd (make bench-dockerd)")
	}
	n, m := *dockerdNetworks, 10**dockerdContainers
	if n < 200 || m < 200 {
		t.Fatalf("-dockerd-networks=%d -dockerd-containers=%d: want ≥ 200 networks and ≥ 20 containers", n, *dockerdContainers)
	}
	testnet.RequirePrivileges(t)
	d := &dockerd{testnet.StartDockerd(t, testnet.NewNS(t, "dockerd"), filepath.Join(t.TempDir(), "docker"), "--storage-driver", "vfs")}
	ctx := context.Background()

	eps := make([]string, 10)
	for j := range eps {
		eps[j] = fmt.Sprintf("eps%d", j)
		d.createNetwork(ctx, t, eps[j], fmt.Sprintf("10.255.%d.0/24", j))
	}
	nets := make([]time.Duration, n)
	for i := range n {
		start := time.Now()
		d.createNetwork(ctx, t, fmt.Sprintf("n%d", i+1), sweepSubnet(i).String())
		nets[i] = time.Since(start)
		if (i+1)%100 == 0 {
			t.Logf("%d networks, the last in %v", i+1, nets[i].Round(time.Millisecond))
		}
	}
	d.ImportPause(t)
	var containers []string
	for i := range *dockerdContainers {
		containers = append(containers, d.runContainer(ctx, t, fmt.Sprintf("c%d", i)))
	}
	var joins []time.Duration
	for _, net := range eps {
		for _, c := range containers {
			start := time.Now()
			d.do(ctx, t, "POST", "/networks/"+net+"/connect", map[string]any{"Container": c})
			joins = append(joins, time.Since(start))
		}
		t.Logf("%d endpoints, the last in %v", len(joins), joins[len(joins)-1].Round(time.Millisecond))
	}
	rss := testnet.RSS(t, d.Pid)

	var b strings.Builder
	fmt.Fprintf(&b, "Control plane, Docker Engine %s (Debian's docker.io, iptables-nft): create time through its API (p50 / p99 of 100 creations).\n\n", d.Version)
	fmt.Fprintf(&b, "| what | creations | p50 | p99 |\n|---|---|---|---|\n")
	testnet.CreationRow(&b, "network", nets, 6)
	testnet.CreationRow(&b, "network", nets, n-99)
	testnet.CreationRow(&b, "endpoint (network connect)", joins, 6)
	testnet.CreationRow(&b, "endpoint (network connect)", joins, m-99)
	fmt.Fprintf(&b, "\ndockerd resident memory with %d networks and %d endpoints on %d running containers: %.1f MB (containerd and the shims not counted).\n",
		n+11, m, *dockerdContainers, float64(rss)/(1<<20))
	t.Log("\n" + b.String())
	writeReport(t, *dockerdReport, b.String())
}

// dockerd adds the requests of the benchmark to testnet.Dockerd.
type dockerd struct{ *testnet.Dockerd }

func (d dockerd) do(ctx context.Context, t *testing.T, method, path string, body any) {
	t.Helper()
	if err := d.Call(ctx, method, path, body, nil); err != nil {
		t.Fatal(err)
	}
}

func (d dockerd) createNetwork(ctx context.Context, t *testing.T, name, subnet string) {
	t.Helper()
	d.do(ctx, t, "POST", "/networks/create", map[string]any{"Name": name, "CheckDuplicate": true, "Driver": "bridge",
		"IPAM": map[string]any{"Config": []map[string]string{{"Subnet": subnet}}}})
}

// runContainer creates and starts a container on Docker's default bridge
// and returns its id.
func (d dockerd) runContainer(ctx context.Context, t *testing.T, name string) string {
	t.Helper()
	var c struct {
		ID string `json:"Id"`
	}
	if err := d.Call(ctx, "POST", "/containers/create?name="+name, map[string]any{"Image": testnet.PauseImage, "Cmd": []string{"/pause"}}, &c); err != nil {
		t.Fatal(err)
	}
	d.do(ctx, t, "POST", "/containers/"+c.ID+"/start", nil)
	return c.ID
}
