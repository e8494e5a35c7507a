// Package exporter serves bpfnet's Prometheus metrics. Its collector reads
// the model and the enforcer's counters at scrape time (no background
// copying), from its own registry, on its own listener with /metrics,
// /healthz and /readyz.
package exporter

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	"github.com/bpfnet/bpfnet/api"
	"github.com/bpfnet/bpfnet/internal/httpserve"
	"github.com/bpfnet/bpfnet/network"
)

// Model is the daemon's state as the collector reads it (a
// network.Manager).
type Model interface {
	View() network.View
	// Released counts endpoints released because their interface
	// disappeared (their container's namespace died).
	Released() uint64
	// Spares reports the spare veth pairs waiting for the Docker driver's
	// endpoints, and how many endpoints took one.
	Spares() (waiting int, taken uint64)
}

// Options configure the collector.
type Options struct {
	// PerEndpoint emits the bpfnet_endpoint_* series; off, only the
	// per-network totals (for hosts with very many endpoints).
	PerEndpoint bool
	Version     string
}

var directions = []string{"from_container", "to_container"}

// Collector is the prometheus.Collector over the model and the enforcer
// that runs, which it asks for the abilities it has: counters
// (network.Counter), a translation table (network.NATTable), an attach
// mode (network.Describer).
type Collector struct {
	model        Model
	enf          network.Enforcer
	opts         Options
	perEndpoint  atomic.Bool // opts.PerEndpoint, changed by SetPerEndpoint
	scrapeErrors atomic.Uint64

	// labels caches the label pairs of per-endpoint series between
	// scrapes (building and validating them is most of a scrape's cost
	// with many endpoints); entries unused in a scrape (an older gen) are
	// dropped.
	mu     sync.Mutex
	labels map[endpointLabels]cachedLabels
	gen    uint64

	epPackets, epBytes, epDrops, epDropBytes     *prometheus.Desc
	netPackets, netBytes, netDrops, netDropBytes *prometheus.Desc
	natEntries, natTranslations                  *prometheus.Desc
	datapathInfo, buildInfo                      *prometheus.Desc
	released, spares, sparesTaken                *prometheus.Desc
	scrapeErrs, scrapeDuration                   *prometheus.Desc
}

// NewCollector returns a collector reading m and enf.
func NewCollector(m Model, enf network.Enforcer, opts Options) *Collector {
	ep := []string{"network", "endpoint", "interface", "direction"}
	nw := []string{"network", "direction", "family"}
	c := &Collector{model: m, enf: enf, opts: opts, labels: map[endpointLabels]cachedLabels{},
		epPackets: prometheus.NewDesc("bpfnet_endpoint_packets_total", "Packets an endpoint's host-side veth hooks saw, by direction.", ep, nil),
		epBytes:   prometheus.NewDesc("bpfnet_endpoint_bytes_total", "Bytes (Ethernet frames) an endpoint's host-side veth hooks saw, by direction.", ep, nil),
		epDrops:   prometheus.NewDesc("bpfnet_endpoint_drops_total", "Packets dropped for an endpoint, by direction and reason.", append(ep, "reason"), nil),
		epDropBytes: prometheus.NewDesc("bpfnet_endpoint_drop_bytes_total",
			"Bytes of the packets dropped for an endpoint (frame lengths; iptables datapath: IP lengths), by direction and reason.", append(ep, "reason"), nil),
		netPackets: prometheus.NewDesc("bpfnet_network_packets_total", "Packets of a network's endpoints, by direction and IP family.", nw, nil),
		netBytes:   prometheus.NewDesc("bpfnet_network_bytes_total", "Bytes of a network's endpoints, by direction and IP family.", nw, nil),
		netDrops:   prometheus.NewDesc("bpfnet_network_drops_total", "Packets dropped in a network, by direction, IP family and reason.", append(nw, "reason"), nil),
		netDropBytes: prometheus.NewDesc("bpfnet_network_drop_bytes_total",
			"Bytes of the packets dropped in a network (frame lengths; iptables datapath: IP lengths), by direction, IP family and reason.", append(nw, "reason"), nil),
		natEntries: prometheus.NewDesc("bpfnet_nat_entries", "Live source translations.", nil, nil),
		natTranslations: prometheus.NewDesc("bpfnet_nat_translations_total",
			"Source translations by outcome: created, exhausted (refused, no free port), expired.", []string{"outcome"}, nil),
		released: prometheus.NewDesc("bpfnet_endpoints_released_total",
			"Endpoints released because their interface disappeared (their container's network namespace was deleted).", nil, nil),
		spares: prometheus.NewDesc("bpfnet_spare_veths",
			"Veth pairs waiting, programs attached, for the Docker driver's next endpoints (bpfnetd --spare-veths).", nil, nil),
		sparesTaken: prometheus.NewDesc("bpfnet_spare_veths_taken_total",
			"Endpoints of the Docker driver that took a spare veth pair instead of making and attaching one.", nil, nil),
		datapathInfo:   prometheus.NewDesc("bpfnet_datapath_info", "The datapath enforcing policy (value 1).", []string{"mode", "attach"}, nil),
		buildInfo:      prometheus.NewDesc("bpfnet_build_info", "bpfnet's build (value 1).", []string{"version", "goversion"}, nil),
		scrapeErrs:     prometheus.NewDesc("bpfnet_scrape_errors_total", "Scrapes that could not read the datapath's counters.", nil, nil),
		scrapeDuration: prometheus.NewDesc("bpfnet_scrape_duration_seconds", "Time the last scrape took to read the counters.", nil, nil),
	}
	c.perEndpoint.Store(opts.PerEndpoint)
	return c
}

// SetPerEndpoint turns the bpfnet_endpoint_* series on or off from the
// next scrape (a configuration reload).
func (c *Collector) SetPerEndpoint(on bool) { c.perEndpoint.Store(on) }

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.epPackets, c.epBytes, c.epDrops, c.epDropBytes, c.netPackets, c.netBytes, c.netDrops, c.netDropBytes,
		c.natEntries, c.natTranslations, c.released, c.spares, c.sparesTaken, c.datapathInfo, c.buildInfo, c.scrapeErrs, c.scrapeDuration} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: it reads the counters now.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	var st api.Status
	if d, ok := c.enf.(network.Describer); ok {
		d.Describe(&st)
	}
	ch <- prometheus.MustNewConstMetric(c.datapathInfo, prometheus.GaugeValue, 1, c.enf.Name(), st.Attach)
	ch <- prometheus.MustNewConstMetric(c.buildInfo, prometheus.GaugeValue, 1, c.opts.Version, runtime.Version())
	start := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	defer func() {
		for k, l := range c.labels {
			if l.gen != c.gen {
				delete(c.labels, k)
			}
		}
	}()
	if err := c.collect(ch); err != nil {
		c.scrapeErrors.Add(1)
	} else {
		ch <- prometheus.MustNewConstMetric(c.scrapeDuration, prometheus.GaugeValue, time.Since(start).Seconds())
	}
	ch <- prometheus.MustNewConstMetric(c.released, prometheus.CounterValue, float64(c.model.Released()))
	waiting, taken := c.model.Spares()
	ch <- prometheus.MustNewConstMetric(c.spares, prometheus.GaugeValue, float64(waiting))
	ch <- prometheus.MustNewConstMetric(c.sparesTaken, prometheus.CounterValue, float64(taken))
	ch <- prometheus.MustNewConstMetric(c.scrapeErrs, prometheus.CounterValue, float64(c.scrapeErrors.Load()))
}

// collect emits the traffic, drop and translation series (callers hold
// c.mu). An error leaves them all out of the scrape.
func (c *Collector) collect(ch chan<- prometheus.Metric) error {
	v := c.model.View()
	var counts network.Counts
	if src, ok := c.enf.(network.Counter); ok {
		var err error
		if counts, err = src.Counts(v); err != nil {
			return err
		}
	}
	var nat api.NATStats
	table, hasNAT := c.enf.(network.NATTable)
	if hasNAT {
		var err error
		if nat, err = table.NATStats(); err != nil {
			return err
		}
	}
	perEndpoint := c.perEndpoint.Load()
	// The network series, summed over endpoints: by network, direction,
	// family and (drops) reason.
	type key struct{ network, dir, family, reason string }
	type totals struct{ packets, bytes float64 }
	traffic, drops := map[key]*totals{}, map[key]*totals{}
	add := func(m map[key]*totals, k key, packets, bytes uint64) {
		t := m[k]
		if t == nil {
			t = &totals{}
			m[k] = t
		}
		t.packets += float64(packets)
		t.bytes += float64(bytes)
	}
	addDrops := func(nw, dir string, cnt api.Counts) {
		for family, fc := range byFamily(cnt) {
			for r, n := range fc.Drops {
				add(drops, key{nw, dir, family, r}, n, fc.DropBytes[r])
			}
		}
	}
	names := map[string]string{}
	for _, n := range v.Networks {
		names[n.ID] = n.Name
		// A network without endpoints still has its totals.
		families := []string{""}
		if counts.ByFamily {
			families = []string{api.FamilyIPv4}
			if n.DualStack() {
				families = append(families, api.FamilyIPv6)
			}
		}
		for _, dir := range directions {
			for _, f := range families {
				add(traffic, key{n.Name, dir, f, ""}, 0, 0)
			}
		}
	}
	// The per-endpoint series go out in the order the registry sorts
	// them in (label values by label name: direction, endpoint,
	// interface, network, reason), which makes its sort a linear pass.
	eps := make([]*network.Endpoint, 0, len(v.Endpoints))
	for _, ep := range v.Endpoints {
		if _, ok := names[ep.NetworkID]; ok {
			eps = append(eps, ep)
		}
	}
	slices.SortFunc(eps, func(a, b *network.Endpoint) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.HostIf, b.HostIf), cmp.Compare(names[a.NetworkID], names[b.NetworkID]))
	})
	for i, dir := range directions {
		for _, ep := range eps {
			nw := names[ep.NetworkID]
			ec := counts.Endpoints[ep.ID]
			cnt := [2]api.Counts{ec.FromContainer, ec.ToContainer}[i]
			for family, fc := range byFamily(cnt) {
				add(traffic, key{nw, dir, family, ""}, fc.Packets, fc.Bytes)
			}
			addDrops(nw, dir, cnt)
			if !perEndpoint {
				continue
			}
			labels := endpointLabels{network: nw, endpoint: ep.Name, iface: ep.HostIf, direction: dir}
			ch <- c.counter(c.epPackets, float64(cnt.Packets), labels)
			ch <- c.counter(c.epBytes, float64(cnt.Bytes), labels)
			for _, r := range slices.Sorted(maps.Keys(cnt.Drops)) {
				labels.reason = r
				ch <- c.counter(c.epDrops, float64(cnt.Drops[r]), labels)
				ch <- c.counter(c.epDropBytes, float64(cnt.DropBytes[r]), labels)
			}
		}
	}
	for id, ec := range counts.Networks {
		nw, ok := names[id]
		if !ok {
			continue
		}
		for i, cnt := range []api.Counts{ec.FromContainer, ec.ToContainer} {
			addDrops(nw, directions[i], cnt)
		}
	}
	for k, t := range traffic {
		ch <- prometheus.MustNewConstMetric(c.netPackets, prometheus.CounterValue, t.packets, k.network, k.dir, k.family)
		ch <- prometheus.MustNewConstMetric(c.netBytes, prometheus.CounterValue, t.bytes, k.network, k.dir, k.family)
	}
	for k, t := range drops {
		ch <- prometheus.MustNewConstMetric(c.netDrops, prometheus.CounterValue, t.packets, k.network, k.dir, k.family, k.reason)
		ch <- prometheus.MustNewConstMetric(c.netDropBytes, prometheus.CounterValue, t.bytes, k.network, k.dir, k.family, k.reason)
	}
	if hasNAT {
		ch <- prometheus.MustNewConstMetric(c.natEntries, prometheus.GaugeValue, float64(nat.Entries))
		ch <- prometheus.MustNewConstMetric(c.natTranslations, prometheus.CounterValue, float64(nat.Created), "created")
		ch <- prometheus.MustNewConstMetric(c.natTranslations, prometheus.CounterValue, float64(nat.Exhausted), "exhausted")
		ch <- prometheus.MustNewConstMetric(c.natTranslations, prometheus.CounterValue, float64(nat.Expired), "expired")
	}
	return nil
}

// byFamily returns a direction's counts by IP family, or all of them under
// the family "" (no label) where the datapath does not tell families
// apart.
func byFamily(cnt api.Counts) map[string]api.Counts {
	if len(cnt.Families) == 0 {
		return map[string]api.Counts{"": cnt}
	}
	return cnt.Families
}

// endpointCounter is a per-endpoint counter sample with cached labels.
type endpointCounter struct {
	desc   *prometheus.Desc
	labels []*dto.LabelPair
	value  float64
}

func (m *endpointCounter) Desc() *prometheus.Desc { return m.desc }

func (m *endpointCounter) Write(out *dto.Metric) error {
	out.Label = m.labels
	out.Counter = &dto.Counter{Value: &m.value}
	return nil
}

// endpointLabels are the labels of a per-endpoint series; reason is set
// for drops only.
type endpointLabels struct{ network, endpoint, iface, direction, reason string }

// cachedLabels are a series' label pairs and the scrape (gen) that last
// used them.
type cachedLabels struct {
	pairs []*dto.LabelPair
	gen   uint64
}

// counter returns a per-endpoint series; callers hold c.mu.
func (c *Collector) counter(desc *prometheus.Desc, v float64, l endpointLabels) prometheus.Metric {
	cached, ok := c.labels[l]
	if !ok {
		// Sorted by label name, as the exposition wants them.
		pair := func(n, v string) *dto.LabelPair { return &dto.LabelPair{Name: &n, Value: &v} }
		cached.pairs = []*dto.LabelPair{pair("direction", l.direction), pair("endpoint", l.endpoint), pair("interface", l.iface), pair("network", l.network)}
		if l.reason != "" {
			cached.pairs = append(cached.pairs, pair("reason", l.reason))
		}
	}
	if cached.gen != c.gen {
		cached.gen = c.gen
		c.labels[l] = cached
	}
	return &endpointCounter{desc: desc, labels: cached.pairs, value: v}
}

// Handler returns the metrics mux: /metrics from a registry holding this
// collector and the standard Go runtime and process collectors (go_*,
// process_*, as every Go exporter has), /healthz (the process answers) and /readyz (ready()
// reports true once the daemon has reconciled).
func Handler(c *Collector, ready func() bool) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(c, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !ready() {
			http.Error(w, "not ready: reconciling", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// Serve listens on addr and serves h there until ctx ends.
func Serve(ctx context.Context, log *slog.Logger, addr string, h http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	go func() {
		if err := httpserve.Serve(ctx, ln, h); err != nil {
			log.Error("metrics server", "err", err)
		}
	}()
	log.Info("serving metrics", "addr", ln.Addr().String())
	return nil
}
