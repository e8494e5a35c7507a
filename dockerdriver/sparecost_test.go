package dockerdriver_test

import (
	"flag"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/bpfnet/bpfnet/internal/testnet"
)

var spareCost = flag.Bool("sparecost", false, "run TestSpareCost (issue 16: hand-off endpoint creation with and without spare veth pairs)")

// TestSpareCost times the Docker driver's CreateEndpoint, as Docker's
// engine calls it, on two daemons side by side: one with --spare-veths=0
// (every endpoint makes and attaches its own pair: the comparison needs
// the flag) and one with its defaults (4 spares). Containers start in
// bursts (compose up, CI runners): 25 rounds of a burst of 4 endpoints on
// each daemon in turn, a second's pause after each. Then a sustained
// stream: 40 endpoints back to back on each, where spares run out after
// the fourth and their refill waits for a quiet moment.
//
//	go test ./dockerdriver -run TestSpareCost -sparecost -v
func TestSpareCost(t *testing.T) {
	if !*spareCost {
		t.Skip("run with -sparecost")
	}
	testnet.RequirePrivileges(t)
	type side struct {
		name           string
		drv            *driverClient
		net            string
		n              int
		bursts, stream []time.Duration
	}
	var sides []*side
	for _, s := range []struct{ name, flag string }{{"--spare-veths=0", "--spare-veths=0"}, {"spares (the default)", ""}} {
		topo := testnet.NewTopology(t)
		var args []string
		if s.flag != "" {
			args = append(args, s.flag)
		}
		d := testnet.NewDaemon(t, topo.Host, args...)
		d.DockerDriver()
		d.Start()
		sd := &side{name: s.name, drv: newDriverClient(t, d.PluginSocket), net: dockerID()}
		sd.drv.createNetwork(sd.net, "10.90.0.0/16", "10.90.0.1/16", "")
		sides = append(sides, sd)
	}
	create := func(s *side) time.Duration {
		s.n++
		body := fmt.Sprintf(`{"NetworkID":"%s","EndpointID":"%s","Interface":{"Address":"10.90.%d.%d/16"},"Options":{}}`, s.net, dockerID(), 1+s.n/250, 1+s.n%250)
		start := time.Now()
		s.drv.ok("NetworkDriver.CreateEndpoint", body)
		return time.Since(start)
	}
	for _, s := range sides {
		create(s) // the first asks for spares
	}
	time.Sleep(time.Second)
	for range 25 {
		for _, s := range sides {
			for range 4 {
				s.bursts = append(s.bursts, create(s))
			}
			time.Sleep(time.Second)
		}
	}
	for _, s := range sides {
		for range 40 {
			s.stream = append(s.stream, create(s))
		}
		time.Sleep(time.Second)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Docker driver CreateEndpoint (hand-off), TCX:\n\n| daemon | bursts of 4: p50 / p99 (100) | stream of 40: p50 / p99 |\n|---|---|---|\n")
	for _, s := range sides {
		fmt.Fprintf(&b, "| %s | %.1f / %.1f ms | %.1f / %.1f ms |\n", s.name,
			ms(testnet.Percentile(s.bursts, 50)), ms(testnet.Percentile(s.bursts, 99)), ms(testnet.Percentile(s.stream, 50)), ms(testnet.Percentile(s.stream, 99)))
	}
	fmt.Fprintf(&b, "\nbursts: %.1f× less with spares (p50)\n", float64(testnet.Percentile(sides[0].bursts, 50))/float64(testnet.Percentile(sides[1].bursts, 50)))
	t.Log("\n" + b.String())
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
