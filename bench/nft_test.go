package bench

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/bpfnet/bpfnet/network"
)

// docker29NFT renders Docker 29's nftables layout (--firewall-backend=
// nftables, default proxy mode) for v's networks (icc on, masquerade on)
// and its endpoints' published ports, as shared/reference/docker-20.10/
// README.md §B.4 describes it: one table, base chains that look the
// bridge up in verdict maps keyed by interface name, and per-network
// chains. It is the strongest peer: a packet meets a map lookup, not a
// walk over every network's rules. Per published port: a DNAT rule in
// nat-prerouting-and-output (`ip daddr H iifname != br … dnat to C:P`),
// an accept in the network's forward-in chain, and per container the raw
// "DROP DIRECT ACCESS" rule. (nat-OUTPUT gets priority -100, the value of
// dstnat, which nft 1.0.6 accepts by name on prerouting only.)
func docker29NFT(v network.View) string {
	var bridges []string
	for _, n := range v.Networks {
		bridges = append(bridges, n.Bridge)
	}
	bridgeOf := map[string]string{}
	for _, n := range v.Networks {
		bridgeOf[n.ID] = n.Bridge
	}
	var dnat, direct strings.Builder
	accepts := map[string][]string{}
	for _, ep := range v.Endpoints {
		br := bridgeOf[ep.NetworkID]
		if len(ep.Ports) > 0 {
			fmt.Fprintf(&direct, "\t\tip daddr %s iifname != %q counter drop comment \"DROP DIRECT ACCESS\"\n", ep.IP, br)
		}
		for _, m := range ep.Ports {
			daddr := "" // 0.0.0.0: every host address
			if m.HostIP.IsValid() && !m.HostIP.IsUnspecified() {
				daddr = fmt.Sprintf("ip daddr %s ", m.HostIP)
			}
			fmt.Fprintf(&dnat, "\t\t%siifname != %q %s dport %d counter dnat to %s:%d comment \"DNAT\"\n", daddr, br, m.Proto, m.HostPort, ep.IP, m.Port)
			accepts[br] = append(accepts[br], fmt.Sprintf("\t\tip daddr %s %s dport %d counter accept\n", ep.IP, m.Proto, m.Port))
		}
	}
	var b strings.Builder
	b.WriteString("table ip docker-bridges {\n")
	vmap := func(name string, chain func(br string) string) {
		fmt.Fprintf(&b, "\tmap %s {\n\t\ttype ifname : verdict\n", name)
		if len(bridges) > 0 {
			var el []string
			for _, br := range bridges {
				el = append(el, fmt.Sprintf("%q : jump %s", br, chain(br)))
			}
			fmt.Fprintf(&b, "\t\telements = { %s }\n", strings.Join(el, ",\n\t\t\t"))
		}
		b.WriteString("\t}\n")
	}
	vmap("filter-forward-in-jumps", func(br string) string { return "filter-forward-in__" + br })
	vmap("filter-forward-out-jumps", func(br string) string { return "filter-forward-out__" + br })
	vmap("nat-postrouting-in-jumps", func(br string) string { return "nat-postrouting-in__" + br })
	vmap("nat-postrouting-out-jumps", func(br string) string { return "nat-postrouting-out__" + br })
	b.WriteString(`	chain filter-FORWARD {
		type filter hook forward priority filter; policy accept;
		oifname vmap @filter-forward-in-jumps
		iifname vmap @filter-forward-out-jumps
	}
	chain nat-PREROUTING {
		type nat hook prerouting priority dstnat; policy accept;
		fib daddr type local counter jump nat-prerouting-and-output
	}
	chain nat-OUTPUT {
		type nat hook output priority -100; policy accept;
		ip daddr != 127.0.0.0/8 fib daddr type local counter jump nat-prerouting-and-output
	}
	chain nat-POSTROUTING {
		type nat hook postrouting priority srcnat; policy accept;
		iifname vmap @nat-postrouting-out-jumps
		oifname vmap @nat-postrouting-in-jumps
	}
	chain raw-PREROUTING {
		type filter hook prerouting priority raw; policy accept;
` + direct.String() + `	}
	chain nat-prerouting-and-output {
` + dnat.String() + `	}
`)
	for _, n := range v.Networks {
		fmt.Fprintf(&b, `	chain filter-forward-in__%[1]s {
		ct state established,related counter accept comment "RELATED,ESTABLISHED"
		iifname "%[1]s" counter accept comment "ICC"
%[3]s		counter drop comment "UNPUBLISHED PORT DROP"
	}
	chain filter-forward-out__%[1]s {
		ct state established,related counter accept comment "RELATED,ESTABLISHED"
		counter accept comment "OUTGOING"
	}
	chain nat-postrouting-in__%[1]s {
	}
	chain nat-postrouting-out__%[1]s {
		oifname != "%[1]s" ip saddr %[2]s counter masquerade comment "MASQUERADE"
	}
`, n.Bridge, n.Subnet, strings.Join(accepts[n.Bridge], ""))
	}
	b.WriteString("}\n")
	return b.String()
}

// The rendering must load (nft checks it), hold one map element per
// bridge in each of the four maps and a DNAT rule per published port.
func TestDocker29NFTLoads(t *testing.T) {
	host, _ := newHost(t)
	v := network.View{Networks: []*network.Network{
		{ID: "a", Bridge: "br-a", Subnet: netip.MustParsePrefix("198.18.0.0/24")},
		{ID: "b", Bridge: "br-b", Subnet: netip.MustParsePrefix("198.18.1.0/24")},
	}, Endpoints: []*network.Endpoint{{ID: "c", NetworkID: "b", IP: netip.MustParseAddr("198.18.1.2"),
		Ports: []network.PortMapping{{Proto: "udp", HostIP: netip.MustParseAddr("192.0.2.1"), HostPort: 8080, Port: 80}}}}}
	host.MustRunInput(t, docker29NFT(v), "nft", "-f", "-")
	out := host.MustRun(t, "nft", "list", "map", "ip", "docker-bridges", "filter-forward-in-jumps")
	for _, n := range v.Networks {
		if !strings.Contains(out, `"`+n.Bridge+`" : jump filter-forward-in__`+n.Bridge) {
			t.Errorf("map lacks %s:\n%s", n.Bridge, out)
		}
	}
	out = host.MustRun(t, "nft", "list", "chain", "ip", "docker-bridges", "nat-prerouting-and-output")
	if !strings.Contains(out, `ip daddr 192.0.2.1 iifname != "br-b" udp dport 8080`) || !strings.Contains(out, "dnat to 198.18.1.2:80") {
		t.Errorf("no DNAT rule for the published port:\n%s", out)
	}
}
