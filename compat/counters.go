package compat

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/bpfnet/bpfnet/network"
)

// DropCounts reads the packet counters of the DROP rules the compat
// layout installs and attributes them to networks and drop reasons, the
// most iptables can tell: `-i BR -o BR -j DROP` in FORWARD is icc;
// `-o BR -j DROP` in ISOLATION-STAGE-2 is isolation (into BR); the two
// DROPs of an internal network in ISOLATION-STAGE-1 are internal (into it
// and out of it). Result: network name → direction → reason → packets.
func (e *Enforcer) DropCounts(v network.View) (map[string]map[string]map[string]uint64, error) {
	lc, ok := e.ipt.(interface {
		ListWithCounters(table, chain string) ([]string, error)
	})
	if !ok {
		return nil, fmt.Errorf("iptables client cannot read counters")
	}
	byBridge := map[string]string{}
	for _, n := range v.Networks {
		byBridge[n.Bridge] = n.Name
	}
	out := map[string]map[string]map[string]uint64{}
	add := func(bridge, dir, reason string, pkts uint64) {
		name, ok := byBridge[bridge]
		if !ok {
			return
		}
		if out[name] == nil {
			out[name] = map[string]map[string]uint64{}
		}
		if out[name][dir] == nil {
			out[name][dir] = map[string]uint64{}
		}
		out[name][dir][reason] += pkts
	}
	c := ChainNames(e.prefix)
	for _, chain := range []string{"FORWARD", c.Isolation1, c.Isolation2} {
		rules, err := lc.ListWithCounters("filter", chain)
		if err != nil {
			return nil, fmt.Errorf("read counters of %s: %w", chain, err)
		}
		for _, r := range rules {
			f := strings.Fields(r)
			if len(f) < 2 || f[len(f)-1] != "DROP" {
				continue
			}
			in, out, negIn, pkts := fieldAfter(f, "-i"), fieldAfter(f, "-o"), strings.Contains(r, "! -i"), counter(f)
			switch {
			case chain == "FORWARD" && in != "" && in == out:
				add(in, "to_container", "icc", pkts)
			case chain == c.Isolation2 && out != "":
				add(out, "to_container", "isolation", pkts)
			case chain == c.Isolation1 && out != "" && strings.Contains(r, "! -s"):
				add(out, "to_container", "internal", pkts)
			case chain == c.Isolation1 && in != "" && !negIn && strings.Contains(r, "! -d"):
				add(in, "from_container", "internal", pkts)
			}
		}
	}
	return out, nil
}

func fieldAfter(f []string, flag string) string {
	for i := 0; i+1 < len(f); i++ {
		if f[i] == flag {
			return f[i+1]
		}
	}
	return ""
}

// counter returns the packets of "-c PACKETS BYTES".
func counter(f []string) uint64 {
	for i := 0; i+2 < len(f); i++ {
		if f[i] == "-c" {
			n, _ := strconv.ParseUint(f[i+1], 10, 64)
			return n
		}
	}
	return 0
}
