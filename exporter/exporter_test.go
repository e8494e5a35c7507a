package exporter

import (
	"fmt"
	"io"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/bpfnet/bpfnet/api"
	"github.com/bpfnet/bpfnet/network"
	"github.com/bpfnet/bpfnet/network/networktest"
)

type fakeModel struct {
	v        network.View
	released uint64
}

func (m fakeModel) View() network.View { return m.v }
func (m fakeModel) Released() uint64   { return m.released }

// get returns the exposition /metrics serves.
func get(t testing.TB, c *Collector) string {
	t.Helper()
	rec := httptest.NewRecorder()
	Handler(c, func() bool { return true }).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("/metrics: %d %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

// handMade is a state and its counters, every kind of series present.
func handMade() (fakeModel, *networktest.Observable) {
	web := &network.Network{ID: "w1", Name: "web", Bridge: "br-w"}
	quiet := &network.Network{ID: "q1", Name: "quiet", Bridge: "br-q"}
	c1 := &network.Endpoint{ID: "e1", Name: "c1", NetworkID: "w1", HostIf: "veth1", IP: netip.MustParseAddr("10.0.0.2")}
	c2 := &network.Endpoint{ID: "e2", Name: "c2", NetworkID: "w1", HostIf: "veth2", IP: netip.MustParseAddr("10.0.0.3")}
	enf := &networktest.Observable{Enforcer: &networktest.Enforcer{Calls: &networktest.Calls{}}, Attach: "tcx",
		Counters: network.Counts{
			Endpoints: map[string]api.EndpointCounters{
				"e1": {FromContainer: api.Counts{Packets: 10, Bytes: 1000, Drops: map[string]uint64{"spoof": 2}, DropBytes: map[string]uint64{"spoof": 120}},
					ToContainer: api.Counts{Packets: 7, Bytes: 700}},
				"e2": {FromContainer: api.Counts{Packets: 5, Bytes: 500},
					ToContainer: api.Counts{Packets: 1, Bytes: 100, Drops: map[string]uint64{"icc": 4}, DropBytes: map[string]uint64{"icc": 240}}},
			},
			Networks: map[string]api.EndpointCounters{
				"w1": {ToContainer: api.Counts{Drops: map[string]uint64{"no_endpoint": 3, "icc": 1}, DropBytes: map[string]uint64{"no_endpoint": 180, "icc": 60}}},
			},
		},
		Stats: api.NATStats{Entries: 6, Created: 40, Exhausted: 2, Expired: 30}}
	m := fakeModel{v: network.View{Networks: []*network.Network{web, quiet}, Endpoints: []*network.Endpoint{c1, c2}}, released: 5}
	return m, enf
}

// scrapeOfEverything is a scrape with every series the exporter has.
func scrapeOfEverything(t *testing.T) string {
	m, enf := handMade()
	return get(t, NewCollector(m, enf, Options{PerEndpoint: true, Version: "v9"}))
}

// The values of a scrape, for a hand-made state and counters: every line
// below is written from the metric contract (docs/metrics.md), not from
// the collector.
func TestScrapeValues(t *testing.T) {
	m, enf := handMade()
	out := get(t, NewCollector(m, enf, Options{PerEndpoint: true, Version: "v9"}))
	for _, want := range []string{
		`bpfnet_datapath_info{attach="tcx",mode="fake"} 1`,
		`bpfnet_endpoint_packets_total{direction="from_container",endpoint="c1",interface="veth1",network="web"} 10`,
		`bpfnet_endpoint_bytes_total{direction="to_container",endpoint="c1",interface="veth1",network="web"} 700`,
		`bpfnet_endpoint_drops_total{direction="from_container",endpoint="c1",interface="veth1",network="web",reason="spoof"} 2`,
		`bpfnet_endpoint_drops_total{direction="to_container",endpoint="c2",interface="veth2",network="web",reason="icc"} 4`,
		`bpfnet_endpoint_drop_bytes_total{direction="from_container",endpoint="c1",interface="veth1",network="web",reason="spoof"} 120`,
		`bpfnet_endpoint_drop_bytes_total{direction="to_container",endpoint="c2",interface="veth2",network="web",reason="icc"} 240`,
		// Network totals: the sum of its endpoints, plus the drops not
		// tied to one (icc: 4 + 1).
		`bpfnet_network_packets_total{direction="from_container",network="web"} 15`,
		`bpfnet_network_bytes_total{direction="to_container",network="web"} 800`,
		`bpfnet_network_drops_total{direction="to_container",network="web",reason="icc"} 5`,
		`bpfnet_network_drops_total{direction="to_container",network="web",reason="no_endpoint"} 3`,
		`bpfnet_network_drops_total{direction="from_container",network="web",reason="spoof"} 2`,
		`bpfnet_network_drop_bytes_total{direction="to_container",network="web",reason="icc"} 300`,
		`bpfnet_network_drop_bytes_total{direction="to_container",network="web",reason="no_endpoint"} 180`,
		`bpfnet_network_drop_bytes_total{direction="from_container",network="web",reason="spoof"} 120`,
		// A network without endpoints still has its totals.
		`bpfnet_network_packets_total{direction="to_container",network="quiet"} 0`,
		`bpfnet_nat_entries 6`,
		`bpfnet_nat_translations_total{outcome="created"} 40`,
		`bpfnet_nat_translations_total{outcome="exhausted"} 2`,
		`bpfnet_nat_translations_total{outcome="expired"} 30`,
		`bpfnet_endpoints_released_total 5`,
		`bpfnet_scrape_errors_total 0`,
	} {
		if !strings.Contains(out, "\n"+want+"\n") {
			t.Errorf("missing %s", want)
		}
	}
	// The standard collectors every Go exporter registers.
	for _, want := range []string{"\ngo_goroutines ", "\ngo_memstats_alloc_bytes ", "\nprocess_cpu_seconds_total ", "\nprocess_resident_memory_bytes ", "\nprocess_open_fds "} {
		if !strings.Contains(out, want) {
			t.Errorf("missing the series %s", strings.TrimSpace(want))
		}
	}
	if t.Failed() {
		t.Logf("exposition:\n%s", out)
	}

	// Per-endpoint series off: only the totals; an enforcer without a
	// translation table (iptables): no NAT series.
	out = get(t, NewCollector(m, &networktest.Enforcer{Calls: &networktest.Calls{}}, Options{}))
	for _, absent := range []string{"bpfnet_endpoint_packets_total{", "bpfnet_nat_entries"} {
		if strings.Contains(out, absent) {
			t.Errorf("%s present", absent)
		}
	}
	if !strings.Contains(out, `bpfnet_network_packets_total{direction="from_container",network="web"} 0`) {
		t.Errorf("no zero totals for an enforcer without counters:\n%s", out)
	}
}

func bigModel(n int) (fakeModel, *networktest.Observable) {
	var m fakeModel
	enf := &networktest.Observable{Enforcer: &networktest.Enforcer{}, Counters: network.Counts{Endpoints: map[string]api.EndpointCounters{}}}
	for i := range 10 {
		m.v.Networks = append(m.v.Networks, &network.Network{ID: fmt.Sprint("n", i), Name: fmt.Sprint("net", i)})
	}
	for i := range n {
		id := fmt.Sprint("e", i)
		m.v.Endpoints = append(m.v.Endpoints, &network.Endpoint{ID: id, Name: fmt.Sprint("ep", i), NetworkID: fmt.Sprint("n", i%10), HostIf: fmt.Sprintf("veth%07x", i)})
		enf.Counters.Endpoints[id] = api.EndpointCounters{
			FromContainer: api.Counts{Packets: 100, Bytes: 10000, Drops: map[string]uint64{"unsupported": 3}},
			ToContainer:   api.Counts{Packets: 100, Bytes: 10000, Drops: map[string]uint64{"unsupported": 7}}}
	}
	return m, enf
}

// BenchmarkScrape1000 is a whole /metrics request for 1,000 endpoints
// (without reading BPF maps): collection, gathering and encoding.
func BenchmarkScrape1000(b *testing.B) {
	m, enf := bigModel(1000)
	h := Handler(NewCollector(m, enf, Options{PerEndpoint: true}), func() bool { return true })
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		io.Copy(io.Discard, rec.Body)
	}
}
