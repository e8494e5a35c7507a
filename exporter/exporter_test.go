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
	v             network.View
	released      uint64
	spares, taken int
}

func (m fakeModel) View() network.View    { return m.v }
func (m fakeModel) Released() uint64      { return m.released }
func (m fakeModel) Spares() (int, uint64) { return m.spares, uint64(m.taken) }

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

// handMade is a state and its counters as the eBPF datapath reports
// them, split by IP family, every kind of series present: a dual-stack
// network with two endpoints and an IPv4-only one without any.
func handMade() (fakeModel, *networktest.Observable) {
	web := &network.Network{ID: "w1", Name: "web", Bridge: "br-w", Subnet6: netip.MustParsePrefix("fd00::/64")}
	quiet := &network.Network{ID: "q1", Name: "quiet", Bridge: "br-q"}
	c1 := &network.Endpoint{ID: "e1", Name: "c1", NetworkID: "w1", HostIf: "veth1", IP: netip.MustParseAddr("10.0.0.2")}
	c2 := &network.Endpoint{ID: "e2", Name: "c2", NetworkID: "w1", HostIf: "veth2", IP: netip.MustParseAddr("10.0.0.3")}
	v4, v6 := api.FamilyIPv4, api.FamilyIPv6
	enf := &networktest.Observable{Enforcer: &networktest.Enforcer{Calls: &networktest.Calls{}}, Attach: "tcx",
		Counters: network.Counts{ByFamily: true,
			Endpoints: map[string]api.EndpointCounters{
				"e1": {
					FromContainer: api.Counts{Packets: 10, Bytes: 1000, Drops: map[string]uint64{"spoof": 2}, DropBytes: map[string]uint64{"spoof": 120},
						Families: map[string]api.Counts{
							v4: {Packets: 6, Bytes: 600, Drops: map[string]uint64{"spoof": 2}, DropBytes: map[string]uint64{"spoof": 120}},
							v6: {Packets: 4, Bytes: 400}}},
					ToContainer: api.Counts{Packets: 7, Bytes: 700, Families: map[string]api.Counts{v4: {Packets: 7, Bytes: 700}, v6: {}}}},
				"e2": {
					FromContainer: api.Counts{Packets: 5, Bytes: 500, Families: map[string]api.Counts{v4: {Packets: 3, Bytes: 300}, v6: {Packets: 2, Bytes: 200}}},
					ToContainer: api.Counts{Packets: 1, Bytes: 100, Drops: map[string]uint64{"icc": 4}, DropBytes: map[string]uint64{"icc": 240},
						Families: map[string]api.Counts{
							v4: {Packets: 1, Bytes: 100, Drops: map[string]uint64{"icc": 1}, DropBytes: map[string]uint64{"icc": 60}},
							v6: {Drops: map[string]uint64{"icc": 3}, DropBytes: map[string]uint64{"icc": 180}}}}},
			},
			Networks: map[string]api.EndpointCounters{
				"w1": {ToContainer: api.Counts{Drops: map[string]uint64{"no_endpoint": 3, "icc": 1}, DropBytes: map[string]uint64{"no_endpoint": 180, "icc": 60},
					Families: map[string]api.Counts{
						v4: {Drops: map[string]uint64{"no_endpoint": 3, "icc": 1}, DropBytes: map[string]uint64{"no_endpoint": 180, "icc": 60}}}}},
			},
		},
		Stats: api.NATStats{Entries: 6, Created: 40, Exhausted: 2, Expired: 30}}
	m := fakeModel{v: network.View{Networks: []*network.Network{web, quiet}, Endpoints: []*network.Endpoint{c1, c2}}, released: 5, spares: 3, taken: 7}
	return m, enf
}

// unsplit is handMade's state with counters as the iptables datapath
// reports them: traffic not split by family, drops split.
func unsplit() (fakeModel, *networktest.Observable) {
	m, enf := handMade()
	enf.Counters.ByFamily = false
	for id, ec := range enf.Counters.Endpoints {
		ec.FromContainer.Families, ec.ToContainer.Families = nil, nil
		ec.FromContainer.Drops, ec.FromContainer.DropBytes, ec.ToContainer.Drops, ec.ToContainer.DropBytes = nil, nil, nil, nil
		enf.Counters.Endpoints[id] = ec
	}
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
		// Network totals by family: the sum of its endpoints, plus the
		// drops not tied to one (icc over IPv4: 1 + 1).
		`bpfnet_network_packets_total{direction="from_container",family="ipv4",network="web"} 9`,
		`bpfnet_network_packets_total{direction="from_container",family="ipv6",network="web"} 6`,
		`bpfnet_network_bytes_total{direction="to_container",family="ipv4",network="web"} 800`,
		`bpfnet_network_bytes_total{direction="to_container",family="ipv6",network="web"} 0`,
		`bpfnet_network_drops_total{direction="to_container",family="ipv4",network="web",reason="icc"} 2`,
		`bpfnet_network_drops_total{direction="to_container",family="ipv6",network="web",reason="icc"} 3`,
		`bpfnet_network_drops_total{direction="to_container",family="ipv4",network="web",reason="no_endpoint"} 3`,
		`bpfnet_network_drops_total{direction="from_container",family="ipv4",network="web",reason="spoof"} 2`,
		`bpfnet_network_drop_bytes_total{direction="to_container",family="ipv4",network="web",reason="icc"} 120`,
		`bpfnet_network_drop_bytes_total{direction="to_container",family="ipv6",network="web",reason="icc"} 180`,
		`bpfnet_network_drop_bytes_total{direction="to_container",family="ipv4",network="web",reason="no_endpoint"} 180`,
		`bpfnet_network_drop_bytes_total{direction="from_container",family="ipv4",network="web",reason="spoof"} 120`,
		// A network without endpoints still has its totals, in the
		// families it has.
		`bpfnet_network_packets_total{direction="to_container",family="ipv4",network="quiet"} 0`,
		`bpfnet_nat_entries 6`,
		`bpfnet_nat_translations_total{outcome="created"} 40`,
		`bpfnet_nat_translations_total{outcome="exhausted"} 2`,
		`bpfnet_nat_translations_total{outcome="expired"} 30`,
		`bpfnet_endpoints_released_total 5`,
		`bpfnet_spare_veths 3`,
		`bpfnet_spare_veths_taken_total 7`,
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

	for _, absent := range []string{`family="ipv6",network="quiet"`, `family=""`, `bpfnet_network_drops_total{direction="from_container",family="ipv6"`} {
		if strings.Contains(out, absent) {
			t.Errorf("a series with %s", absent)
		}
	}

	// Traffic not split by family (iptables): the totals under an empty
	// family, which Prometheus stores as no label; drops by family still.
	m, enf = unsplit()
	out = get(t, NewCollector(m, enf, Options{}))
	for _, want := range []string{
		`bpfnet_network_packets_total{direction="from_container",family="",network="web"} 15`,
		`bpfnet_network_bytes_total{direction="to_container",family="",network="web"} 800`,
		`bpfnet_network_packets_total{direction="to_container",family="",network="quiet"} 0`,
		`bpfnet_network_drops_total{direction="to_container",family="ipv4",network="web",reason="icc"} 1`,
		`bpfnet_network_drops_total{direction="to_container",family="ipv4",network="web",reason="no_endpoint"} 3`,
	} {
		if !strings.Contains(out, "\n"+want+"\n") {
			t.Errorf("unsplit: missing %s", want)
		}
	}
	if strings.Contains(out, `family="ipv4",network="quiet"`) || strings.Contains(out, `bpfnet_network_packets_total{direction="from_container",family="ipv4"`) {
		t.Errorf("unsplit traffic reported under a family:\n%s", out)
	}

	// Per-endpoint series off: only the totals; an enforcer without a
	// translation table (iptables): no NAT series.
	out = get(t, NewCollector(m, &networktest.Enforcer{Calls: &networktest.Calls{}}, Options{}))
	for _, absent := range []string{"bpfnet_endpoint_packets_total{", "bpfnet_nat_entries"} {
		if strings.Contains(out, absent) {
			t.Errorf("%s present", absent)
		}
	}
	if !strings.Contains(out, `bpfnet_network_packets_total{direction="from_container",family="",network="web"} 0`) {
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
