package exporter

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// dashboard is the part of Grafana's dashboard model (schema version 39,
// Grafana 10/11) the test reads.
type dashboard struct {
	SchemaVersion int
	Templating    struct {
		List []struct {
			Name, Type, Definition string
			Query                  any
			Multi, IncludeAll      bool
		}
	}
	Panels []struct {
		Title, Type string
		Datasource  struct{ UID string }
		Targets     []struct{ Expr, LegendFormat string }
		Options     map[string]any
	}
}

// The Grafana dashboard loads as Grafana's model, picks job, instance and
// network in variables that every query honours, uses $__rate_interval,
// and queries only series the exporter really serves (a scrape over
// hand-made state, as TestScrapeValues has it, with the Go and process
// collectors).
func TestDashboard(t *testing.T) {
	b, err := os.ReadFile("../deploy/grafana/bpfnet-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash dashboard
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&dash); err != nil {
		t.Fatalf("dashboard is not valid JSON: %v", err)
	}
	if dash.SchemaVersion != 39 {
		t.Errorf("schemaVersion %d; the dashboard is written for 39 (Grafana 10.x)", dash.SchemaVersion)
	}

	// The series a real scrape has, and which of them carry a network label.
	out := scrapeOfEverything(t)
	series, withNetwork := map[string]bool{}, map[string]bool{}
	for _, line := range strings.Split(out, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		name, labels, _ := strings.Cut(strings.Fields(line)[0], "{")
		series[name] = true
		if strings.Contains(labels, `network="`) {
			withNetwork[name] = true
		}
	}

	vars := map[string]string{}
	for _, v := range dash.Templating.List {
		vars[v.Name] = v.Definition
		if v.Type == "query" && (!v.Multi || !v.IncludeAll) {
			t.Errorf("variable %s: want multi-value with All", v.Name)
		}
	}
	labelValues := regexp.MustCompile(`^label_values\(([a-z_]+)(\{[^}]*\})?, ([a-z]+)\)$`)
	for _, name := range []string{"job", "instance", "network"} {
		m := labelValues.FindStringSubmatch(vars[name])
		switch {
		case m == nil:
			t.Errorf("variable %s: %q, want label_values(metric, %s)", name, vars[name], name)
		case !series[m[1]] || m[3] != name:
			t.Errorf("variable %s lists %s of %s, which the exporter does not serve", name, m[3], m[1])
		}
	}
	if _, ok := vars["datasource"]; !ok {
		t.Error("no datasource variable")
	}

	selector := regexp.MustCompile(`([a-z_]+)\{([^}]*)\}`)
	word := regexp.MustCompile(`[a-z_]+_[a-z_]+`)
	n := 0
	for _, p := range dash.Panels {
		if p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource %q, want ${datasource}", p.Title, p.Datasource.UID)
		}
		for _, tg := range p.Targets {
			if strings.Contains(tg.Expr, "[") && !strings.Contains(tg.Expr, "[$__rate_interval]") {
				t.Errorf("panel %q: %s has a fixed range; want [$__rate_interval]", p.Title, tg.Expr)
			}
			selected := map[string]bool{}
			for _, m := range selector.FindAllStringSubmatch(tg.Expr, -1) {
				name, matchers := m[1], strings.Split(m[2], ",")
				selected[name] = true
				n++
				if !series[name] {
					t.Errorf("panel %q uses %s, which the exporter does not serve", p.Title, name)
				}
				want := []string{`job=~"$job"`, `instance=~"$instance"`}
				if withNetwork[name] {
					want = append(want, `network=~"$network"`)
				}
				for _, w := range want {
					if !slices.Contains(matchers, w) {
						t.Errorf("panel %q: %s does not select %s", p.Title, m[0], w)
					}
				}
			}
			// Every metric name in the expression is inside a selector.
			for _, w := range word.FindAllString(tg.Expr, -1) {
				if series[w] && !selected[w] {
					t.Errorf("panel %q: %s without job and instance matchers", p.Title, w)
				}
			}
		}
	}
	if n == 0 {
		t.Error("the dashboard queries no metric")
	}

	// Traffic and drops are shown per IP family too (the network series'
	// family label).
	for _, metric := range []string{"bpfnet_network_bytes_total", "bpfnet_network_drops_total"} {
		shown := false
		for _, p := range dash.Panels {
			for _, tg := range p.Targets {
				by := regexp.MustCompile(`sum by \(([a-z, ]+)\)`).FindStringSubmatch(tg.Expr)
				if strings.Contains(tg.Expr, metric+"{") && by != nil && slices.Contains(strings.Split(by[1], ", "), "family") &&
					strings.Contains(tg.LegendFormat, "{{family}}") {
					shown = true
				}
			}
		}
		if !shown {
			t.Errorf("no panel shows %s by family", metric)
		}
	}

	// The datapath panel shows the mode's name, not the info metric's 1.
	for _, p := range dash.Panels {
		if p.Title != "Datapath" {
			continue
		}
		if p.Options["textMode"] != "name" || !strings.Contains(p.Targets[0].LegendFormat, "{{mode}}") {
			t.Errorf("datapath panel: textMode %v, legend %q; want the series name showing {{mode}}", p.Options["textMode"], p.Targets[0].LegendFormat)
		}
		return
	}
	t.Error("no Datapath panel")
}
