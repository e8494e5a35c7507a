package testnet

import (
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// Percentile returns the p-th percentile (nearest rank) of ds.
func Percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(p/100*float64(len(s))+0.5) - 1
	return s[max(0, min(i, len(s)-1))]
}

// CreationRow writes the Markdown row "| what | from–from+99 | p50 | p99 |"
// of creations from..from+99 (1-based) of ds, and returns p50 and p99.
func CreationRow(w io.Writer, what string, ds []time.Duration, from int) (p50, p99 time.Duration) {
	win := ds[from-1 : from+99]
	p50, p99 = Percentile(win, 50), Percentile(win, 99)
	fmt.Fprintf(w, "| %s | %d–%d | %.1f ms | %.1f ms |\n", what, from, from+99, ms(p50), ms(p99))
	return p50, p99
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

var (
	counters  = regexp.MustCompile(`\[\d+:\d+\]`)
	linkState = regexp.MustCompile(`<[^>]*>| state [A-Z]+|^\d+: |@if\d+|link/ether \S+`)
	spareLink = regexp.MustCompile(`^\d+: (veth[0-9a-f]{7}@bps|bps[0-9a-f]{7}@veth)[0-9a-f]{7}: `)
)

// SpareLink reports whether a line of `ip -o link` is either side of a
// spare veth pair (bpfnetd --spare-veths).
func SpareLink(line string) bool { return spareLink.MatchString(line) }

// HostState is what a daemon owns in a namespace: interfaces (without
// ifindexes and operational state), IPv4 addresses, and iptables rules,
// for "nothing changed" and "as before" checks. Spare veth pairs
// (bpfnetd --spare-veths) are left out: they are the running daemon's
// stock, taken by endpoints and made again as they come and go; a stopped
// daemon leaves none (Daemon.Stop checks).
func HostState(t testing.TB, ns *NS) string {
	t.Helper()
	var lines []string
	for _, l := range strings.Split(ns.MustRun(t, "ip", "-o", "link", "show"), "\n") {
		if SpareLink(l) {
			continue
		}
		lines = append(lines, linkState.ReplaceAllString(l, ""))
	}
	for _, family := range []string{"-4", "-6"} {
		// Global addresses only: link-local ones come and go with links.
		for _, l := range strings.Split(ns.MustRun(t, "ip", "-o", family, "addr", "show", "scope", "global"), "\n") {
			if f := strings.Fields(l); len(f) > 3 {
				lines = append(lines, strings.Join(f[1:4], " "))
			}
		}
	}
	// Interfaces listed by ifindex: a recreated veth moves to the end.
	slices.Sort(lines)
	lines = append(lines, IptablesRules(t, ns)...)
	for _, l := range ip6tablesRules(t, ns) {
		lines = append(lines, "ip6 "+l)
	}
	return strings.Join(lines, "\n")
}

// IptablesRules lists chains, policies and rules of filter, nat and raw.
// Tables holding nothing but built-in chains with policy ACCEPT print as
// nothing, so "as before the daemon ran" does not depend on whether
// iptables-nft has instantiated an empty table.
func IptablesRules(t testing.TB, ns *NS) []string { return rules(t, ns, "iptables-save") }

// ip6tablesRules is IptablesRules for ip6tables.
func ip6tablesRules(t testing.TB, ns *NS) []string { return rules(t, ns, "ip6tables-save") }

func rules(t testing.TB, ns *NS, save string) []string {
	t.Helper()
	var out []string
	for _, table := range []string{"filter", "nat", "raw"} {
		var lines []string
		empty := true
		for _, l := range strings.Split(ns.MustRun(t, save, "-t", table), "\n") {
			if l == "" || strings.HasPrefix(l, "#") || l == "COMMIT" || strings.HasPrefix(l, "*") {
				continue
			}
			l = counters.ReplaceAllString(l, "")
			if !strings.HasPrefix(l, ":") || !strings.HasSuffix(strings.TrimSpace(l), "ACCEPT") {
				empty = false
			}
			lines = append(lines, table+" "+l)
		}
		if !empty {
			out = append(out, lines...)
		}
	}
	return out
}
