package exporter

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bpfnet/bpfnet/network/networktest"
)

// The Grafana dashboard is valid JSON and every metric its queries use is
// one the collector describes.
func TestDashboardUsesExistingMetrics(t *testing.T) {
	b, err := os.ReadFile("../deploy/grafana/bpfnet-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard is not valid JSON: %v", err)
	}
	known := map[string]bool{}
	ch := make(chan *prometheus.Desc, 64)
	NewCollector(fakeModel{}, &networktest.Enforcer{}, Options{PerEndpoint: true}).Describe(ch)
	close(ch)
	name := regexp.MustCompile(`fqName: "([a-z_]+)"`)
	for d := range ch {
		if m := name.FindStringSubmatch(d.String()); m != nil {
			known[m[1]] = true
		}
	}
	used := regexp.MustCompile(`bpfnet_[a-z_]+`)
	n := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, m := range used.FindAllString(tg.Expr, -1) {
				n++
				if !known[m] {
					t.Errorf("panel %q uses %s, which the exporter does not have (it has %s)", p.Title, m, strings.Join(keys(known), ", "))
				}
			}
		}
	}
	if n == 0 {
		t.Error("the dashboard queries no bpfnet metric")
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
