package testnet

import (
	"net/netip"
	"strings"
	"testing"
)

// Addresses of a topology. Everything lives in 198.18.0.0/15, the RFC 2544
// benchmarking range, inside the test's own namespaces: containers use
// 198.18.0.0/16 subnets, the uplink link is 198.19.0.0/24.
var (
	UplinkAddr  = netip.MustParseAddr("198.19.0.1") // host side of the uplink
	ExtraAddr   = netip.MustParseAddr("198.19.0.3") // a second host address on the uplink
	OutsideAddr = netip.MustParseAddr("198.19.0.2") // the outside namespace
)

// IPv6 addresses of a topology: the uplink link is in
// 2001:db8::/32 (RFC 3849, documentation), containers' networks in
// fd00::/8 (unique local addresses, RFC 4193).
var (
	UplinkAddr6  = netip.MustParseAddr("2001:db8:19::1")
	OutsideAddr6 = netip.MustParseAddr("2001:db8:19::2")
)

// UplinkIf is the host namespace's uplink interface.
const UplinkIf = "up0"

// Topology is a host namespace with an uplink veth to an outside namespace.
// The host is dual-stack, as real hosts are: its default routes point at
// the outside namespace, which routes only the container ranges back, so
// no packet can leave the machine.
type Topology struct {
	Host    *NS
	Outside *NS
}

// NewTopology builds the host and outside namespaces and their link.
func NewTopology(t testing.TB) *Topology {
	t.Helper()
	RequirePrivileges(t)
	topo := &Topology{Host: NewNS(t, "host"), Outside: NewNS(t, "out")}
	h, o := topo.Host, topo.Outside
	h.MustRun(t, "ip", "link", "add", UplinkIf, "type", "veth", "peer", "name", "eth0", "netns", o.Name)
	h.MustRun(t, "ip", "addr", "add", UplinkAddr.String()+"/24", "dev", UplinkIf)
	h.MustRun(t, "ip", "addr", "add", ExtraAddr.String()+"/24", "dev", UplinkIf)
	h.MustRun(t, "ip", "link", "set", UplinkIf, "up")
	h.MustRun(t, "ip", "route", "add", "default", "via", OutsideAddr.String())
	o.MustRun(t, "ip", "addr", "add", OutsideAddr.String()+"/24", "dev", "eth0")
	o.MustRun(t, "ip", "link", "set", "eth0", "up")
	o.MustRun(t, "ip", "route", "add", "198.18.0.0/16", "via", UplinkAddr.String())
	// Belt and braces: the outside namespace must have no default route.
	if out := o.MustRun(t, "ip", "route", "show", "default"); strings.TrimSpace(out) != "" {
		t.Fatalf("outside namespace has a default route: %s", out)
	}
	topo.addIPv6(t)
	return topo
}

// addIPv6 makes the topology dual-stack: IPv6 addresses on the uplink
// link, a default route over IPv6 into the outside namespace, and a route
// back from there for the containers' unique local addresses only.
// Addresses skip duplicate address detection, so they work at once.
func (topo *Topology) addIPv6(t testing.TB) {
	t.Helper()
	h, o := topo.Host, topo.Outside
	h.MustRun(t, "ip", "-6", "addr", "add", UplinkAddr6.String()+"/64", "dev", UplinkIf, "nodad")
	o.MustRun(t, "ip", "-6", "addr", "add", OutsideAddr6.String()+"/64", "dev", "eth0", "nodad")
	h.MustRun(t, "ip", "-6", "route", "add", "default", "via", OutsideAddr6.String())
	o.MustRun(t, "ip", "-6", "route", "add", "fd00::/8", "via", UplinkAddr6.String())
	if out := o.MustRun(t, "ip", "-6", "route", "show", "default"); strings.TrimSpace(out) != "" {
		t.Fatalf("outside namespace has an IPv6 default route: %s", out)
	}
}
