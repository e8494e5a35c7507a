package compat

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/bpfnet/bpfnet/api"
	"github.com/bpfnet/bpfnet/network"
)

// Counts implements network.Counter. iptables counts no traffic per
// endpoint: packets and bytes come from each host-side veth's interface
// statistics (the host side receives what the container sends), and drops
// from the packet counters of the DROP rules of the compat layout, per
// network, the most iptables can tell: `-i BR -o BR -j DROP` in FORWARD is
// icc; `-o BR -j DROP` in ISOLATION-STAGE-2 is isolation (into BR), and
// so is the raw table's `-d ADDR ! -i BR -j DROP` (Docker 28's rule for a
// container's address reached other than through its bridge, which sees
// packets from other networks first); the two DROPs of an internal network
// in ISOLATION-STAGE-1 are internal (into it and out of it). A dual-stack
// network's ip6tables DROPs count the same way, as its IPv6 family.
func (e *Enforcer) Counts(v network.View) (network.Counts, error) {
	out := network.Counts{Endpoints: map[string]api.EndpointCounters{}, Networks: map[string]api.EndpointCounters{}}
	for _, ep := range v.Endpoints {
		var c api.EndpointCounters
		if l, err := netlink.LinkByName(ep.HostIf); err == nil && l.Attrs().Statistics != nil {
			s := l.Attrs().Statistics
			c.FromContainer = api.Counts{Packets: s.RxPackets, Bytes: s.RxBytes}
			c.ToContainer = api.Counts{Packets: s.TxPackets, Bytes: s.TxBytes}
		}
		out.Endpoints[ep.ID] = c
	}
	byBridge := map[string]string{}
	for _, n := range v.Networks {
		byBridge[n.Bridge] = n.ID
	}
	// A dual-stack network's IPv6 drops are its ip6tables rules' (the same
	// layout).
	clients := map[string]client{api.FamilyIPv4: e.ipt}
	if e.ipt6 != nil && slices.ContainsFunc(v.Networks, (*network.Network).DualStack) {
		clients[api.FamilyIPv6] = e.ipt6
	}
	c := ChainNames(e.prefix)
	for family, ipt := range clients {
		lc, ok := ipt.(interface {
			ListWithCounters(table, chain string) ([]string, error)
		})
		if !ok {
			return out, fmt.Errorf("iptables client cannot read counters")
		}
		add := func(bridge, dir, reason string, pkts, bytes uint64) {
			id, ok := byBridge[bridge]
			if !ok {
				return
			}
			c := out.Networks[id]
			d := &c.ToContainer
			if dir == "from_container" {
				d = &c.FromContainer
			}
			d.AddDrops(family, reason, pkts, bytes)
			out.Networks[id] = c
		}
		if err := dropCounts(lc.ListWithCounters, c, add); err != nil {
			return out, err
		}
	}
	return out, nil
}

// dropCounts reads the DROP rules' counters of one family's tables and
// adds them to the network of their bridge, by direction and reason.
func dropCounts(list func(table, chain string) ([]string, error), c Names, add func(bridge, dir, reason string, pkts, bytes uint64)) error {
	for _, tc := range [][2]string{{"filter", "FORWARD"}, {"filter", c.Isolation1}, {"filter", c.Isolation2}, {"raw", "PREROUTING"}} {
		table, chain := tc[0], tc[1]
		rules, err := list(table, chain)
		if err != nil {
			return fmt.Errorf("read counters of %s: %w", chain, err)
		}
		for _, r := range rules {
			f := strings.Fields(r)
			if len(f) < 2 || f[len(f)-1] != "DROP" {
				continue
			}
			in, outIf, negIn := fieldAfter(f, "-i"), fieldAfter(f, "-o"), strings.Contains(r, "! -i")
			pkts, bytes := counter(f)
			switch {
			case chain == "FORWARD" && in != "" && in == outIf:
				add(in, "to_container", "icc", pkts, bytes)
			case chain == c.Isolation2 && outIf != "":
				add(outIf, "to_container", "isolation", pkts, bytes)
			case chain == c.Isolation1 && outIf != "" && strings.Contains(r, "! -s"):
				add(outIf, "to_container", "internal", pkts, bytes)
			case chain == c.Isolation1 && in != "" && !negIn && strings.Contains(r, "! -d"):
				add(in, "from_container", "internal", pkts, bytes)
			case table == "raw" && in != "" && negIn:
				// -d ADDR ! -i BR: for a container, not through its
				// bridge (from another network, or from outside).
				add(in, "to_container", "isolation", pkts, bytes)
			}
		}
	}
	return nil
}

func fieldAfter(f []string, flag string) string {
	for i := 0; i+1 < len(f); i++ {
		if f[i] == flag {
			return f[i+1]
		}
	}
	return ""
}

// counter returns the packets and bytes of "-c PACKETS BYTES".
func counter(f []string) (packets, bytes uint64) {
	for i := 0; i+2 < len(f); i++ {
		if f[i] == "-c" {
			packets, _ = strconv.ParseUint(f[i+1], 10, 64)
			bytes, _ = strconv.ParseUint(f[i+2], 10, 64)
			return packets, bytes
		}
	}
	return 0, 0
}
