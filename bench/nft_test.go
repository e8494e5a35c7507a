package bench

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// docker29NFT renders Docker 29's nftables layout (--firewall-backend=
// nftables, default proxy mode) for bridges with the given subnets, as
// shared/reference/docker-20.10/README.md §B.4 describes it: one table,
// base chains that look the bridge up in verdict maps keyed by interface
// name, and per-network chains (icc on, masquerade on, no published
// ports). It is the strongest peer: a packet meets a map lookup, not a
// walk over every network's rules. (nat-OUTPUT gets priority -100, the
// value of dstnat, which nft 1.0.6 accepts by name on prerouting only.)
func docker29NFT(bridges []string, subnets []netip.Prefix) string {
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
	}
	chain nat-prerouting-and-output {
	}
`)
	for i, br := range bridges {
		fmt.Fprintf(&b, `	chain filter-forward-in__%[1]s {
		ct state established,related counter accept comment "RELATED,ESTABLISHED"
		iifname "%[1]s" counter accept comment "ICC"
		counter drop comment "UNPUBLISHED PORT DROP"
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
`, br, subnets[i])
	}
	b.WriteString("}\n")
	return b.String()
}

// The rendering must load (nft checks it) and hold one map element per
// bridge in each of the four maps.
func TestDocker29NFTLoads(t *testing.T) {
	host, _ := newHost(t)
	bridges := []string{"br-a", "br-b"}
	subnets := []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24"), netip.MustParsePrefix("198.18.1.0/24")}
	host.MustRunInput(t, docker29NFT(bridges, subnets), "nft", "-f", "-")
	out := host.MustRun(t, "nft", "list", "map", "ip", "docker-bridges", "filter-forward-in-jumps")
	for _, br := range bridges {
		if !strings.Contains(out, `"`+br+`" : jump filter-forward-in__`+br) {
			t.Errorf("map lacks %s:\n%s", br, out)
		}
	}
}
