package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bpfnet/bpfnet/api"
	"github.com/bpfnet/bpfnet/internal/testnet"
	"github.com/bpfnet/bpfnet/network"
)

// The crash points of internal/fault, reached while creating or deleting.
var crashPoints = []string{
	"network-bridge", "network-enforced", "network-unenforced",
	"endpoint-veth", "endpoint-enforced", "endpoint-unenforced", "store-synced",
}

// 50 times: a daemon built with the faultinject tag runs create/delete
// loops until it kills itself (SIGKILL) at a random crash point; the next
// start must find a consistent host: every network and endpoint of the
// state exists and is attached, nothing of bpfnet's exists that the state
// lacks (interfaces, pins), and the state files all parse.
func TestCrashSafety(t *testing.T) {
	topo := testnet.NewTopology(t)
	d := testnet.NewDaemon(t, topo.Host, "--datapath=ebpf")
	d.PinBPFFS() // pins outlive each crash, and the consistency check reads them
	d.Bin = testnet.FaultBinaries(t)
	containers := []*testnet.NS{testnet.NewNS(t, "c1"), testnet.NewNS(t, "c2")}
	rng := rand.New(rand.NewPCG(1, 2))
	ctx := context.Background()
	for iter := range 50 {
		point := crashPoints[rng.IntN(len(crashPoints))]
		d.Env = []string{fmt.Sprintf("BPFNET_FAULT=%s:%d", point, 1+rng.IntN(3))}
		// Starting creates the default network when it is missing, so the
		// daemon may die there already.
		var exit error
		if err := d.StartOrExit(); err != nil {
			exit = err
		} else {
			// Create and delete until the daemon dies.
			died := false
			for round := 0; round < 20 && !died; round++ {
				died = !churn(ctx, d, containers, fmt.Sprintf("i%dr%d", iter, round))
			}
			if !died {
				t.Fatalf("iteration %d: the daemon never reached crash point %s", iter, d.Env[0])
			}
			exit = d.WaitExit(10 * time.Second)
		}
		if exit == nil || !strings.Contains(exit.Error(), "killed") {
			t.Fatalf("iteration %d: the daemon exited with %v, want SIGKILL at %s", iter, exit, d.Env[0])
		}
		d.Env = nil
		d.Start()
		if err := consistent(t, d, topo.Host, containers); err != nil {
			t.Fatalf("iteration %d (crash at %s): %v\n%s", iter, point, err, d.Log())
		}
		// Start the next iteration from nothing.
		eps, _ := d.Client.Endpoints(ctx, "")
		for _, ep := range eps {
			if err := d.Client.RemoveEndpoint(ctx, ep.ID); err != nil {
				t.Fatal(err)
			}
		}
		nets, _ := d.Client.Networks(ctx)
		for _, n := range nets {
			if n.Name == network.DefaultNetworkName {
				continue // the daemon's; it stays
			}
			if err := d.Client.RemoveNetwork(ctx, n.ID); err != nil {
				t.Fatal(err)
			}
		}
		d.Stop()
	}
}

// churn creates two networks and an endpoint in each container, then
// deletes them; false once the daemon stops answering.
func churn(ctx context.Context, d *testnet.Daemon, containers []*testnet.NS, tag string) bool {
	var nets []string
	for i := range 2 {
		n, err := d.Client.CreateNetwork(ctx, api.CreateNetworkRequest{Name: fmt.Sprintf("%s-n%d", tag, i), Subnet: fmt.Sprintf("198.18.%d.0/24", 10+i)})
		if err != nil {
			return false
		}
		nets = append(nets, n.ID)
	}
	var eps []string
	for i, c := range containers {
		ep, err := d.Client.CreateEndpoint(ctx, api.CreateEndpointRequest{Network: nets[i%2], NetNS: c.Path, Name: fmt.Sprintf("%s-e%d", tag, i)})
		if err != nil {
			return false
		}
		eps = append(eps, ep.ID)
	}
	for _, id := range eps {
		if d.Client.RemoveEndpoint(ctx, id) != nil {
			return false
		}
	}
	for _, id := range nets {
		if d.Client.RemoveNetwork(ctx, id) != nil {
			return false
		}
	}
	return true
}

// consistent compares the daemon's state with the host.
func consistent(t *testing.T, d *testnet.Daemon, host *testnet.NS, containers []*testnet.NS) error {
	ctx := context.Background()
	nets, err := d.Client.Networks(ctx)
	if err != nil {
		return err
	}
	eps, err := d.Client.Endpoints(ctx, "")
	if err != nil {
		return err
	}
	links := host.MustRun(t, "ip", "-o", "link", "show")
	want := map[string]bool{testnet.UplinkIf: true}
	for _, n := range nets {
		want[n.Bridge] = true
		if !strings.Contains(links, " "+n.Bridge+": ") {
			return fmt.Errorf("network %s: bridge %s missing", n.Name, n.Bridge)
		}
	}
	for _, ep := range eps {
		want[ep.HostIf] = true
		line := ""
		for _, l := range strings.Split(links, "\n") {
			if strings.Contains(l, " "+ep.HostIf+"@") {
				line = l
			}
		}
		if line == "" || !strings.Contains(line, "state UP") && !strings.Contains(line, "LOWER_UP") {
			return fmt.Errorf("endpoint %s: veth %s missing or down: %q", ep.Name, ep.HostIf, line)
		}
	}
	// Nothing marked as bpfnet's beyond the state.
	for _, l := range strings.Split(host.MustRun(t, "ip", "-o", "link", "show"), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			if (strings.HasPrefix(name, "br-") || strings.HasPrefix(name, "veth")) && !want[name] {
				return fmt.Errorf("stray interface %s", name)
			}
		}
	}
	// Container interfaces only for endpoints of the state.
	inState := 0
	for _, c := range containers {
		out := c.MustRun(t, "ip", "-o", "link", "show")
		inState += strings.Count(out, "eth0@")
	}
	if inState != len(eps) {
		return fmt.Errorf("%d container interfaces for %d endpoints", inState, len(eps))
	}
	// Every attachment in place; every pin for an interface that exists.
	st, err := d.Client.Status(ctx)
	if err != nil {
		return err
	}
	// The uplink's 2 hooks, 2 per veth, 8 socket hooks (connect, sendmsg,
	// recvmsg and getpeername for IPv4 and IPv6; none on bridges).
	if len(st.Attachments) != 2+2*len(eps)+8 {
		return fmt.Errorf("%d attachments for %d networks and %d endpoints", len(st.Attachments), len(nets), len(eps))
	}
	for _, a := range st.Attachments {
		if a.Mode == "" {
			return fmt.Errorf("attachment missing: %+v", a)
		}
	}
	pins, _ := os.ReadDir(filepath.Join(d.BPFFS, "links"))
	for _, p := range pins {
		ifname, _, _ := strings.Cut(p.Name(), ":")
		if !want[ifname] {
			return fmt.Errorf("stray pin %s", p.Name())
		}
	}
	// No temp files left beside the state.
	for _, kind := range []string{"networks", "endpoints"} {
		files, _ := os.ReadDir(filepath.Join(d.StateDir, kind))
		for _, f := range files {
			if strings.HasPrefix(f.Name(), ".") {
				return fmt.Errorf("leftover temp file %s/%s", kind, f.Name())
			}
		}
	}
	return nil
}
