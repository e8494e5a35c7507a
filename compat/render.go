// Package compat is the iptables enforcer: it renders, from the desired
// state, the rule set Docker 20.10's bridge driver would emit (as data, with
// a pure function) and applies or removes it with go-iptables. It is the
// datapath for hosts where eBPF is not available.
package compat

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"github.com/bpfnet/bpfnet/network"
)

// DefaultPrefix is the chain prefix unless --chain-prefix says otherwise.
// With "DOCKER" the rendered rules are Docker's own.
const DefaultPrefix = "BPFNET"

// Placement says how a rule joins its chain, following Docker 20.10.
type Placement int

const (
	// Insert puts the rule just below the previous rule of the rendered
	// order (at the top if it is the first): how Docker inserts network
	// blocks, newest first.
	Insert Placement = iota
	// Top keeps the rule at its index from the top, moving it back there if
	// something was inserted above it (Docker's "ensured" FORWARD jumps).
	Top
	// Append adds the rule at the end when missing (icc DROPs, RETURNs).
	Append
)

// Rule is one iptables rule in iptables-save's canonical form.
type Rule struct {
	// IPv6 rules are ip6tables'; the others iptables'.
	IPv6  bool
	Table string
	Chain string
	// Spec is the rule without "-A CHAIN", exactly as iptables-save prints it.
	Spec  string
	Place Placement
	// Addition names the later Docker fix a rule comes from, for rules
	// that are not Docker 20.10's (docs/compat.md); empty for 20.10's own.
	Addition string
}

// String is the rule as `iptables -S` and iptables-save print it.
func (r Rule) String() string { return "-A " + r.Chain + " " + r.Spec }

// Chain is a user-defined chain bpfnet owns (in ip6tables when IPv6).
type Chain struct {
	Table, Name string
	IPv6        bool `json:",omitempty"`
}

// Ruleset is the complete rendered rule set.
type Ruleset struct {
	Chains []Chain
	// Rules in their rendered order; per chain, this is the order
	// iptables-save shows after a first start.
	Rules []Rule
}

// Names of the chains for a prefix.
type Names struct{ Prefix, Isolation1, Isolation2, User string }

// ChainNames derives the chain names from the prefix.
func ChainNames(prefix string) Names {
	return Names{Prefix: prefix, Isolation1: prefix + "-ISOLATION-STAGE-1", Isolation2: prefix + "-ISOLATION-STAGE-2", User: prefix + "-USER"}
}

var prefixRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,9}$`)

// ValidatePrefix checks that every derived chain name fits iptables' 28
// characters.
func ValidatePrefix(p string) error {
	if !prefixRE.MatchString(p) {
		return fmt.Errorf("invalid chain prefix %q: 1 to 10 letters, digits or '_', starting with a letter", p)
	}
	return nil
}

// Mode is the variant of Docker's layout: which of dockerd's
// --userland-proxy settings the rules are those of.
type Mode int

const (
	// Hairpin is Docker's layout with --userland-proxy=false (reference
	// §A.7): published ports are DNATed for every source, the host's own
	// connections to 127.0.0.1 included. bpfnet runs no proxy, so the
	// daemon always renders this.
	Hairpin Mode = iota
	// UserlandProxy is Docker's default layout, in which docker-proxy
	// serves loopback and same-bridge connections to published ports. It
	// is rendered for comparison with Docker (goldens, benchmarks) only.
	UserlandProxy
)

// family is what the rendering of one IP version takes from the model.
type family struct {
	ipv6 bool
	// host is the prefix length of one address ("/32").
	host string
	// loopback is the loopback range, as Docker's rules write it.
	loopback string
	// subnet is a network's subnet of this family (invalid: none).
	subnet func(n *network.Network) netip.Prefix
	// addr is an endpoint's address of this family (invalid: none).
	addr func(ep *network.Endpoint) netip.Addr
	// dnat is a DNAT target.
	dnat func(a netip.Addr, port uint16) string
	// publishes says whether a port published on host address a is
	// published in this family.
	publishes func(a netip.Addr) bool
}

var (
	ipv4 = family{host: "/32", loopback: "127.0.0.0/8",
		subnet:    func(n *network.Network) netip.Prefix { return n.Subnet },
		addr:      func(ep *network.Endpoint) netip.Addr { return ep.IP },
		dnat:      func(a netip.Addr, port uint16) string { return fmt.Sprintf("%s:%d", a, port) },
		publishes: func(a netip.Addr) bool { return a.Is4() }}
	ipv6 = family{ipv6: true, host: "/128", loopback: "::1/128",
		subnet: func(n *network.Network) netip.Prefix { return n.Subnet6 },
		addr:   func(ep *network.Endpoint) netip.Addr { return ep.IP6 },
		dnat:   func(a netip.Addr, port uint16) string { return netip.AddrPortFrom(a, port).String() },
		// 0.0.0.0 is every address of both families, as with Docker.
		publishes: func(a netip.Addr) bool { return a.Is6() || a == netip.IPv4Unspecified() }}
)

// Render returns the rules Docker 20.10 would have for the networks and
// published ports of v (created oldest first), with the given chain prefix
// and mode: its iptables rules and, when a network is dual-stack, its
// ip6tables rules (reference §A.8; Docker 20.10 with --ip6tables). It is a
// pure function of its input.
func Render(v network.View, prefix string, mode Mode) Ruleset {
	rs := render(v, prefix, mode, ipv4)
	if slices.ContainsFunc(v.Networks, (*network.Network).DualStack) {
		rs6 := render(v, prefix, mode, ipv6)
		rs.Chains = append(rs.Chains, rs6.Chains...)
		rs.Rules = append(rs.Rules, rs6.Rules...)
	}
	return rs
}

// render is Render for one family. Docker 20.10's ip6tables layout is its
// iptables layout with the IPv6 subnets and addresses, except that it has
// no user chain, a network's blocks are there only when it has IPv6 (its
// isolation rules always are), host_ipv4 does not apply (IPv6 is
// masqueraded), and a port published on a specific IPv4 address is not
// published over IPv6 (ipv6-scenario.v6.rules), nor one published on an
// IPv6 address over IPv4.
func render(v network.View, prefix string, mode Mode, f family) Ruleset {
	c := ChainNames(prefix)
	rs := Ruleset{Chains: []Chain{{"filter", c.Prefix, f.ipv6}, {"filter", c.Isolation1, f.ipv6}, {"filter", c.Isolation2, f.ipv6}}}
	if !f.ipv6 {
		rs.Chains = append(rs.Chains, Chain{"filter", c.User, false})
	}
	rs.Chains = append(rs.Chains, Chain{"nat", c.Prefix, f.ipv6})
	add := func(table, chain string, place Placement, format string, a ...any) {
		rs.Rules = append(rs.Rules, Rule{IPv6: f.ipv6, Table: table, Chain: chain, Spec: fmt.Sprintf(format, a...), Place: place})
	}
	addFix := func(fix, table, chain string, place Placement, format string, a ...any) {
		add(table, chain, place, format, a...)
		rs.Rules[len(rs.Rules)-1].Addition = fix
	}
	// has reports whether n has this family.
	has := func(n *network.Network) bool { return f.subnet(n).IsValid() }
	newest := slices.Clone(v.Networks)
	slices.Reverse(newest)

	// filter FORWARD: the two jumps, the network blocks (newest first), then
	// the icc=false DROPs, which Docker appends (so oldest first).
	if !f.ipv6 {
		add("filter", "FORWARD", Top, "-j %s", c.User)
	}
	add("filter", "FORWARD", Top, "-j %s", c.Isolation1)
	for _, n := range newest {
		if !has(n) {
			continue
		}
		br := n.Bridge
		if !n.Internal {
			add("filter", "FORWARD", Insert, "-o %s -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT", br)
			add("filter", "FORWARD", Insert, "-o %s -j %s", br, c.Prefix)
			add("filter", "FORWARD", Insert, "-i %s ! -o %s -j ACCEPT", br, br)
		}
		if n.ICC {
			add("filter", "FORWARD", Insert, "-i %s -o %s -j ACCEPT", br, br)
		}
	}
	for _, n := range v.Networks {
		if has(n) && !n.ICC {
			add("filter", "FORWARD", Append, "-i %s -o %s -j DROP", n.Bridge, n.Bridge)
		}
	}

	// Isolation: stage 1 sends traffic leaving a bridge for another
	// interface to stage 2, which drops it if it enters another bridge.
	// Internal networks drop anything crossing their subnet's border.
	for _, n := range newest {
		switch {
		case n.Internal && f.ipv6 && has(n):
			// 20.10's rules without "! -i"/"! -o" also meet the
			// containers' own neighbour discovery (link-local sources)
			// through bridge netfilter; Docker 28 fixed that.
			addFix(InternalFix, "filter", c.Isolation1, Insert, "! -s %s ! -i %s -o %s -j DROP", f.subnet(n), n.Bridge, n.Bridge)
			addFix(InternalFix, "filter", c.Isolation1, Insert, "! -d %s -i %s ! -o %s -j DROP", f.subnet(n), n.Bridge, n.Bridge)
		case n.Internal && has(n):
			add("filter", c.Isolation1, Insert, "! -s %s -o %s -j DROP", f.subnet(n), n.Bridge)
			add("filter", c.Isolation1, Insert, "! -d %s -i %s -j DROP", f.subnet(n), n.Bridge)
		case !n.Internal:
			add("filter", c.Isolation1, Insert, "-i %s ! -o %s -j %s", n.Bridge, n.Bridge, c.Isolation2)
		}
	}
	add("filter", c.Isolation1, Append, "-j RETURN")
	for _, n := range newest {
		if !n.Internal {
			add("filter", c.Isolation2, Insert, "-o %s -j DROP", n.Bridge)
		}
	}
	add("filter", c.Isolation2, Append, "-j RETURN")
	if !f.ipv6 {
		// The user chain only gets its RETURN; its other rules are the user's.
		add("filter", c.User, Append, "-j RETURN")
	}

	// nat: the jumps to the DNAT chain (published ports) and masquerade.
	// In proxy mode the host's loopback connections are left to the proxy,
	// and a per-bridge RETURN keeps a network's own traffic out of DNAT.
	// In hairpin mode every bridge masquerades what the host sends into it
	// from a local address (127.0.0.1 after DNAT), inserted above the
	// network's MASQUERADE.
	add("nat", "PREROUTING", Insert, "-m addrtype --dst-type LOCAL -j %s", c.Prefix)
	if mode == UserlandProxy {
		add("nat", "OUTPUT", Insert, "! -d %s -m addrtype --dst-type LOCAL -j %s", f.loopback, c.Prefix)
	} else {
		add("nat", "OUTPUT", Insert, "-m addrtype --dst-type LOCAL -j %s", c.Prefix)
	}
	// hostIPv4 is a network's SNAT source: host_ipv4, for IPv4 only.
	hostIPv4 := func(n *network.Network) bool { return n.HostIPv4.IsValid() && !f.ipv6 }
	for _, n := range newest {
		if n.Internal || !has(n) {
			continue
		}
		if mode == Hairpin {
			// With host_ipv4 the host's own packets into the bridge get
			// that address too, masquerade on or off (captures 50, 51).
			if hostIPv4(n) {
				add("nat", "POSTROUTING", Insert, "-o %s -m addrtype --src-type LOCAL -j SNAT --to-source %s", n.Bridge, n.HostIPv4)
			} else {
				add("nat", "POSTROUTING", Insert, "-o %s -m addrtype --src-type LOCAL -j MASQUERADE", n.Bridge)
			}
		}
		if !n.Masquerade {
			continue
		}
		if hostIPv4(n) {
			add("nat", "POSTROUTING", Insert, "-s %s ! -o %s -j SNAT --to-source %s", f.subnet(n), n.Bridge, n.HostIPv4)
		} else {
			add("nat", "POSTROUTING", Insert, "-s %s ! -o %s -j MASQUERADE", f.subnet(n), n.Bridge)
		}
	}
	if mode == UserlandProxy {
		for _, n := range newest {
			if !n.Internal && n.Masquerade && has(n) {
				add("nat", c.Prefix, Insert, "-i %s -j RETURN", n.Bridge)
			}
		}
	}

	// Published ports, appended in the order they were published: accept
	// the DNATed connection into the bridge, masquerade a container
	// reaching its own port, and the DNAT itself.
	for _, ep := range v.Endpoints {
		n := v.Network(ep.NetworkID)
		a := f.addr(ep)
		if n == nil || n.Internal || !a.IsValid() {
			continue
		}
		for _, p := range ep.Ports {
			if !f.publishes(p.HostIP) {
				continue
			}
			add("filter", c.Prefix, Append, "-d %s%s ! -i %s -o %s -p %s -m %s --dport %d -j ACCEPT", a, f.host, n.Bridge, n.Bridge, p.Proto, p.Proto, p.Port)
			add("nat", "POSTROUTING", Append, "-s %s%s -d %s%s -p %s -m %s --dport %d -j MASQUERADE", a, f.host, a, f.host, p.Proto, p.Proto, p.Port)
			var match string
			if !p.HostIP.IsUnspecified() {
				match += fmt.Sprintf("-d %s%s ", p.HostIP, f.host)
			}
			if mode == UserlandProxy {
				match += fmt.Sprintf("! -i %s ", n.Bridge)
			}
			add("nat", c.Prefix, Append, "%s-p %s -m %s --dport %d -j DNAT --to-destination %s", match, p.Proto, p.Proto, p.HostPort, f.dnat(a, p.Port))
		}
	}

	// The later fixes in the raw table. Networks without masquerade get
	// no direct-access drop: their containers are reached at their own
	// addresses by design (replies come back to them routed).
	for _, ep := range v.Endpoints {
		n := v.Network(ep.NetworkID)
		a := f.addr(ep)
		if n == nil || n.Internal || !a.IsValid() {
			continue
		}
		if n.Masquerade {
			addFix(DirectAccessFix, "raw", "PREROUTING", Append, "-d %s%s ! -i %s -j DROP", a, f.host, n.Bridge)
		}
		for _, p := range ep.Ports {
			if p.HostIP.IsLoopback() && f.publishes(p.HostIP) {
				addFix(LoopbackPortFix, "raw", "PREROUTING", Append, "-d %s%s ! -i lo -p %s -m %s --dport %d -j DROP", p.HostIP, f.host, p.Proto, p.Proto, p.HostPort)
			}
		}
	}
	return rs
}

// The additions to Docker 20.10's layout: holes later Docker versions
// closed with raw-table PREROUTING drops (moby pull request 49325), and
// the IPv6 internal network fixed.
const (
	// DirectAccessFix drops packets to a container's address that did not
	// arrive on its bridge: routed straight to a container's port, past
	// the published one (moby issue 45610; Docker 28.0, per endpoint from
	// 28.2).
	DirectAccessFix = "Docker 28: no direct access to a container from outside its bridge (moby#45610)"
	// LoopbackPortFix drops packets for a port published on a loopback
	// address that did not arrive on lo: the LAN reached them (moby issue
	// 41872; Docker 28.0).
	LoopbackPortFix = "Docker 28: loopback-published ports only from the host (moby#41872)"
	// InternalFix replaces 20.10's two ip6tables rules of an internal
	// network, which dropped its containers' neighbour discovery between
	// each other (TestDockerBridgeReferenceIPv6), with rules for traffic
	// crossing the bridge only.
	InternalFix = "Docker 28: an internal network's containers reach each other over IPv6"
)

// builtin lists the built-in chains of each table in iptables-save order.
var builtin = map[string][]string{
	"filter": {"INPUT", "FORWARD", "OUTPUT"},
	"nat":    {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
	"raw":    {"PREROUTING", "OUTPUT"},
}

// Tables are the tables bpfnet writes to, in the order Save prints them
// (raw only when it has rules).
var Tables = []string{"filter", "nat", "raw"}

// Save prints rs's iptables rules as iptables-save would print a
// namespace holding only these rules (without counters and comments).
// forwardPolicy is the policy of filter FORWARD ("ACCEPT" or "DROP").
func Save(rs Ruleset, forwardPolicy string) string { return save(rs, forwardPolicy, false) }

// Save6 prints rs's ip6tables rules as Save does its iptables rules.
func Save6(rs Ruleset, forwardPolicy string) string { return save(rs, forwardPolicy, true) }

// HasIPv6 reports whether rs has ip6tables rules.
func (rs Ruleset) HasIPv6() bool {
	return slices.ContainsFunc(rs.Rules, func(r Rule) bool { return r.IPv6 })
}

func save(rs Ruleset, forwardPolicy string, ipv6 bool) string {
	var b strings.Builder
	for _, table := range Tables {
		if table == "raw" && !slices.ContainsFunc(rs.Rules, func(r Rule) bool { return r.Table == "raw" && r.IPv6 == ipv6 }) {
			continue
		}
		fmt.Fprintf(&b, "*%s\n", table)
		for _, ch := range builtin[table] {
			policy := "ACCEPT"
			if table == "filter" && ch == "FORWARD" {
				policy = forwardPolicy
			}
			fmt.Fprintf(&b, ":%s %s [0:0]\n", ch, policy)
		}
		var user []string
		for _, ch := range rs.Chains {
			if ch.Table == table && ch.IPv6 == ipv6 {
				user = append(user, ch.Name)
			}
		}
		slices.Sort(user)
		for _, name := range user {
			fmt.Fprintf(&b, ":%s - [0:0]\n", name)
		}
		for _, ch := range append(slices.Clone(builtin[table]), user...) {
			for _, r := range rs.Rules {
				if r.Table == table && r.Chain == ch && r.IPv6 == ipv6 {
					fmt.Fprintln(&b, r.String())
				}
			}
		}
		b.WriteString("COMMIT\n")
	}
	return b.String()
}
