// Package exporter serves bpfnet's Prometheus metrics. Its collector reads
// the datapath's counters at scrape time through the small Source
// interface (no background copying), from its own registry, on its own
// listener with /metrics, /healthz and /readyz.
package exporter

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
)

// Counts are one direction of an endpoint's (or a network's) traffic.
type Counts struct {
	Packets, Bytes uint64
	Drops          map[string]uint64 // by reason
}

// Endpoint is one endpoint's counters with its labels.
type Endpoint struct {
	Network, Endpoint, Interface string
	FromContainer, ToContainer   Counts
}

// Snapshot is what one scrape reads.
type Snapshot struct {
	Endpoints []Endpoint
	// NetworkDrops are drops counted on a network as a whole (a packet for
	// an address that is no endpoint; in iptables mode, every drop), by
	// network and reason, in the to_container direction unless noted by
	// the source (direction → reason → count).
	NetworkDrops map[string]map[string]map[string]uint64
	// Networks lists every network, so totals exist even without traffic.
	Networks []string
	// NAT is nil when the datapath keeps no translation table.
	NAT *NAT
	// Released counts endpoints released because their interface
	// disappeared (their container's namespace died).
	Released uint64
}

// NAT are the translation table's numbers.
type NAT struct {
	Entries                     uint64
	Created, Exhausted, Expired uint64
}

// Source is what the collector reads from.
type Source interface {
	Snapshot() (Snapshot, error)
	// Datapath returns the datapath's mode (ebpf, iptables) and attach
	// mode (tcx, tc; empty for iptables).
	Datapath() (mode, attach string)
}

// Options configure the collector.
type Options struct {
	// PerEndpoint emits the bpfnet_endpoint_* series; off, only the
	// per-network totals (for hosts with very many endpoints).
	PerEndpoint bool
	Version     string
}

var directions = []string{"from_container", "to_container"}

// Collector is the prometheus.Collector over a Source.
type Collector struct {
	src          Source
	opts         Options
	scrapeErrors atomic.Uint64

	// labels caches the label pairs of per-endpoint series between
	// scrapes (building and validating them is most of a scrape's cost
	// with many endpoints); entries unused in a scrape are dropped.
	mu     sync.Mutex
	labels map[string][]*dto.LabelPair
	used   map[string]bool

	epPackets, epBytes, epDrops    *prometheus.Desc
	netPackets, netBytes, netDrops *prometheus.Desc
	natEntries, natTranslations    *prometheus.Desc
	datapathInfo, buildInfo        *prometheus.Desc
	released                       *prometheus.Desc
	scrapeErrs, scrapeDuration     *prometheus.Desc
}

// NewCollector returns a collector reading src.
func NewCollector(src Source, opts Options) *Collector {
	ep := []string{"network", "endpoint", "interface", "direction"}
	nw := []string{"network", "direction"}
	return &Collector{src: src, opts: opts, labels: map[string][]*dto.LabelPair{},
		epPackets:  prometheus.NewDesc("bpfnet_endpoint_packets_total", "Packets an endpoint's host-side veth hooks saw, by direction.", ep, nil),
		epBytes:    prometheus.NewDesc("bpfnet_endpoint_bytes_total", "Bytes (Ethernet frames) an endpoint's host-side veth hooks saw, by direction.", ep, nil),
		epDrops:    prometheus.NewDesc("bpfnet_endpoint_drops_total", "Packets dropped for an endpoint, by direction and reason.", append(ep, "reason"), nil),
		netPackets: prometheus.NewDesc("bpfnet_network_packets_total", "Packets of a network's endpoints, by direction.", nw, nil),
		netBytes:   prometheus.NewDesc("bpfnet_network_bytes_total", "Bytes of a network's endpoints, by direction.", nw, nil),
		netDrops:   prometheus.NewDesc("bpfnet_network_drops_total", "Packets dropped in a network, by direction and reason.", append(nw, "reason"), nil),
		natEntries: prometheus.NewDesc("bpfnet_nat_entries", "Live source translations.", nil, nil),
		natTranslations: prometheus.NewDesc("bpfnet_nat_translations_total",
			"Source translations by outcome: created, exhausted (refused, no free port), expired.", []string{"outcome"}, nil),
		released: prometheus.NewDesc("bpfnet_endpoints_released_total",
			"Endpoints released because their interface disappeared (their container's network namespace was deleted).", nil, nil),
		datapathInfo:   prometheus.NewDesc("bpfnet_datapath_info", "The datapath enforcing policy (value 1).", []string{"mode", "attach"}, nil),
		buildInfo:      prometheus.NewDesc("bpfnet_build_info", "bpfnet's build (value 1).", []string{"version", "goversion"}, nil),
		scrapeErrs:     prometheus.NewDesc("bpfnet_scrape_errors_total", "Scrapes that could not read the datapath's counters.", nil, nil),
		scrapeDuration: prometheus.NewDesc("bpfnet_scrape_duration_seconds", "Time the last scrape took to read the counters.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.epPackets, c.epBytes, c.epDrops, c.netPackets, c.netBytes, c.netDrops,
		c.natEntries, c.natTranslations, c.released, c.datapathInfo, c.buildInfo, c.scrapeErrs, c.scrapeDuration} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: it reads the counters now.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	mode, attach := c.src.Datapath()
	ch <- prometheus.MustNewConstMetric(c.datapathInfo, prometheus.GaugeValue, 1, mode, attach)
	ch <- prometheus.MustNewConstMetric(c.buildInfo, prometheus.GaugeValue, 1, c.opts.Version, runtime.Version())
	start := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.used = map[string]bool{}
	defer func() {
		for k := range c.labels {
			if !c.used[k] {
				delete(c.labels, k)
			}
		}
	}()
	snap, err := c.src.Snapshot()
	if err != nil {
		c.scrapeErrors.Add(1)
		ch <- prometheus.MustNewConstMetric(c.scrapeErrs, prometheus.CounterValue, float64(c.scrapeErrors.Load()))
		return
	}
	type totals struct{ packets, bytes float64 }
	nets := map[string]map[string]*totals{}
	netDrops := map[string]map[string]map[string]float64{}
	addNet := func(n string) {
		if nets[n] == nil {
			nets[n] = map[string]*totals{"from_container": {}, "to_container": {}}
			netDrops[n] = map[string]map[string]float64{"from_container": {}, "to_container": {}}
		}
	}
	for _, n := range snap.Networks {
		addNet(n)
	}
	for _, ep := range snap.Endpoints {
		addNet(ep.Network)
		for i, cnt := range []Counts{ep.FromContainer, ep.ToContainer} {
			dir := directions[i]
			nets[ep.Network][dir].packets += float64(cnt.Packets)
			nets[ep.Network][dir].bytes += float64(cnt.Bytes)
			for r, v := range cnt.Drops {
				netDrops[ep.Network][dir][r] += float64(v)
			}
			if !c.opts.PerEndpoint {
				continue
			}
			ch <- c.counter(c.epPackets, float64(cnt.Packets), ep, dir, "")
			ch <- c.counter(c.epBytes, float64(cnt.Bytes), ep, dir, "")
			for r, v := range cnt.Drops {
				ch <- c.counter(c.epDrops, float64(v), ep, dir, r)
			}
		}
	}
	for n, byDir := range snap.NetworkDrops {
		addNet(n)
		for dir, byReason := range byDir {
			for r, v := range byReason {
				netDrops[n][dir][r] += float64(v)
			}
		}
	}
	for n, byDir := range nets {
		for _, dir := range directions {
			ch <- prometheus.MustNewConstMetric(c.netPackets, prometheus.CounterValue, byDir[dir].packets, n, dir)
			ch <- prometheus.MustNewConstMetric(c.netBytes, prometheus.CounterValue, byDir[dir].bytes, n, dir)
			for r, v := range netDrops[n][dir] {
				ch <- prometheus.MustNewConstMetric(c.netDrops, prometheus.CounterValue, v, n, dir, r)
			}
		}
	}
	if snap.NAT != nil {
		ch <- prometheus.MustNewConstMetric(c.natEntries, prometheus.GaugeValue, float64(snap.NAT.Entries))
		ch <- prometheus.MustNewConstMetric(c.natTranslations, prometheus.CounterValue, float64(snap.NAT.Created), "created")
		ch <- prometheus.MustNewConstMetric(c.natTranslations, prometheus.CounterValue, float64(snap.NAT.Exhausted), "exhausted")
		ch <- prometheus.MustNewConstMetric(c.natTranslations, prometheus.CounterValue, float64(snap.NAT.Expired), "expired")
	}
	ch <- prometheus.MustNewConstMetric(c.released, prometheus.CounterValue, float64(snap.Released))
	ch <- prometheus.MustNewConstMetric(c.scrapeErrs, prometheus.CounterValue, float64(c.scrapeErrors.Load()))
	ch <- prometheus.MustNewConstMetric(c.scrapeDuration, prometheus.GaugeValue, time.Since(start).Seconds())
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

// counter returns a per-endpoint series (reason set for drops); callers
// hold c.mu.
func (c *Collector) counter(desc *prometheus.Desc, v float64, ep Endpoint, dir, reason string) prometheus.Metric {
	key := ep.Network + "\x00" + ep.Endpoint + "\x00" + ep.Interface + "\x00" + dir + "\x00" + reason
	c.used[key] = true
	labels, ok := c.labels[key]
	if !ok {
		// Sorted by label name, as the exposition wants them.
		pair := func(n, v string) *dto.LabelPair { return &dto.LabelPair{Name: &n, Value: &v} }
		labels = []*dto.LabelPair{pair("direction", dir), pair("endpoint", ep.Endpoint), pair("interface", ep.Interface), pair("network", ep.Network)}
		if reason != "" {
			labels = append(labels, pair("reason", reason))
		}
		c.labels[key] = labels
	}
	if reason == "" {
		labels = labels[:4]
	}
	return &endpointCounter{desc: desc, labels: labels, value: v}
}

// Handler returns the metrics mux: /metrics from a registry holding only
// this collector, /healthz (the process answers) and /readyz (ready()
// reports true once the daemon has reconciled).
func Handler(c *Collector, ready func() bool) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !ready() {
			http.Error(w, "not ready: reconciling", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	return mux
}

// Serve serves h on addr until ctx ends.
func Serve(ctx context.Context, log *slog.Logger, addr string, h http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server", "err", err)
		}
	}()
	log.Info("serving metrics", "addr", ln.Addr().String())
	return nil
}
