package network

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/bpfnet/bpfnet/api"
)

func TestDefaultPoolsAreDockers(t *testing.T) {
	p := DefaultPools()
	// 15 /16s from 172.17 to 172.31, then 16 /20s covering 192.168.0.0/16.
	if len(p) != 31 || p[0].String() != "172.17.0.0/16" || p[14].String() != "172.31.0.0/16" ||
		p[15].String() != "192.168.0.0/20" || p[16].String() != "192.168.16.0/20" || p[30].String() != "192.168.240.0/20" {
		t.Errorf("pools = %v", p)
	}
}

func TestPickSubnetSkipsTakenAndRoutes(t *testing.T) {
	taken := []netip.Prefix{netip.MustParsePrefix("172.17.0.0/16"), netip.MustParsePrefix("172.18.5.0/24")}
	got, err := pickSubnet(taken)
	if err != nil || got.String() != "172.19.0.0/16" {
		t.Errorf("pickSubnet = %v, %v; want 172.19.0.0/16", got, err)
	}
	var all []netip.Prefix
	all = append(all, netip.MustParsePrefix("172.16.0.0/12"), netip.MustParsePrefix("192.168.0.0/16"))
	if _, err := pickSubnet(all); err != ErrPoolsExhausted {
		t.Errorf("all pools taken: err = %v", err)
	}
}

// TestPlanAddresses checks both families of a network. The IPv6 side is
// checked against Docker 20.10's IPAM as the IPv6 reference showed it
// (ipv6-scenario.v6.rules): the gateway is the first address of the
// subnet (::1), the first endpoint ::2.
func TestPlanAddresses(t *testing.T) {
	const id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, tc := range []struct {
		name                string
		ipv6                bool // the IPv6 side is checked
		req                 api.CreateNetworkRequest
		subnet, rng, gw, e1 string
		err                 string
	}{
		{name: "subnet only: gateway is .1, first endpoint .2", req: api.CreateNetworkRequest{Subnet: "10.1.0.0/24"},
			subnet: "10.1.0.0/24", rng: "10.1.0.0/24", gw: "10.1.0.1", e1: "10.1.0.2"},
		{name: "ip-range: gateway and endpoints from the range", req: api.CreateNetworkRequest{Subnet: "10.1.0.0/16", IPRange: "10.1.5.0/24"},
			subnet: "10.1.0.0/16", rng: "10.1.5.0/24", gw: "10.1.5.0", e1: "10.1.5.1"},
		{name: "explicit gateway is skipped by endpoints", req: api.CreateNetworkRequest{Subnet: "10.1.0.0/24", Gateway: "10.1.0.2"},
			subnet: "10.1.0.0/24", rng: "10.1.0.0/24", gw: "10.1.0.2", e1: "10.1.0.1"},
		{name: "/30 holds a gateway and one endpoint", req: api.CreateNetworkRequest{Subnet: "10.1.0.4/30"},
			subnet: "10.1.0.4/30", rng: "10.1.0.4/30", gw: "10.1.0.5", e1: "10.1.0.6"},
		{name: "/31 is refused", req: api.CreateNetworkRequest{Subnet: "10.1.0.4/31"}, err: "too small"},
		{name: "gateway without subnet", req: api.CreateNetworkRequest{Gateway: "10.1.0.1"}, err: "needs a subnet"},
		{name: "overlap with a taken subnet", req: api.CreateNetworkRequest{Subnet: "10.9.0.0/16"}, err: "overlaps subnet 10.9.9.0/24"},
		{ipv6: true, name: "IPv6: subnet: gateway ::1, first endpoint ::2", req: api.CreateNetworkRequest{EnableIPv6: true, Subnet6: "fd42:d0c:0:11::/64"},
			subnet: "fd42:d0c:0:11::/64", rng: "fd42:d0c:0:11::/64", gw: "fd42:d0c:0:11::1", e1: "fd42:d0c:0:11::2"},
		{ipv6: true, name: "IPv6: range and gateway", req: api.CreateNetworkRequest{EnableIPv6: true, Subnet6: "2001:db8:1::/64", IPRange6: "2001:db8:1:0:1::/80", Gateway6: "2001:db8:1::1"},
			subnet: "2001:db8:1::/64", rng: "2001:db8:1:0:1::/80", gw: "2001:db8:1::1", e1: "2001:db8:1:0:1::"},
		{ipv6: true, name: "IPv6: /126 holds a gateway and two endpoints", req: api.CreateNetworkRequest{EnableIPv6: true, Subnet6: "fd00:1::4/126"},
			subnet: "fd00:1::4/126", rng: "fd00:1::4/126", gw: "fd00:1::5", e1: "fd00:1::6"},
		{ipv6: true, name: "IPv6: /127 is refused", req: api.CreateNetworkRequest{EnableIPv6: true, Subnet6: "fd00:1::4/127"}, err: "too small"},
		{ipv6: true, name: "IPv6: IPv4 subnet as the IPv6 one", req: api.CreateNetworkRequest{EnableIPv6: true, Subnet6: "10.2.0.0/24"}, err: "want an IPv6 prefix"},
		{ipv6: true, name: "IPv6: IPv6 subnet as the IPv4 one", req: api.CreateNetworkRequest{Subnet: "fd00:1::/64"}, err: "want an IPv4 prefix"},
		{ipv6: true, name: "IPv6: link-local", req: api.CreateNetworkRequest{EnableIPv6: true, Subnet6: "fe80::/64"}, err: "not link-local"},
		{ipv6: true, name: "IPv6: host bits", req: api.CreateNetworkRequest{EnableIPv6: true, Subnet6: "fd00:1::1/64"}, err: "did you mean fd00:1::/64"},
		{ipv6: true, name: "IPv6: IPv6 subnet without --ipv6", req: api.CreateNetworkRequest{Subnet6: "fd00:1::/64"}, err: "needs IPv6 on"},
		{ipv6: true, name: "IPv6: IPv6 gateway without an IPv6 subnet", req: api.CreateNetworkRequest{EnableIPv6: true, Gateway6: "fd00:1::1"}, err: "needs an IPv6 subnet"},
		{ipv6: true, name: "IPv6: gateway outside", req: api.CreateNetworkRequest{EnableIPv6: true, Subnet6: "fd00:1::/64", Gateway6: "fd00:2::1"}, err: "not inside subnet"},
		{ipv6: true, name: "IPv6: gateway is the subnet-router anycast address", req: api.CreateNetworkRequest{EnableIPv6: true, Subnet6: "fd00:1::/64", Gateway6: "fd00:1::"}, err: "network or broadcast address"},
		{ipv6: true, name: "IPv6: IPv4 gateway as the IPv6 one", req: api.CreateNetworkRequest{EnableIPv6: true, Subnet6: "fd00:1::/64", Gateway6: "10.0.0.1"}, err: "want an IPv6 address"},
		{ipv6: true, name: "IPv6: overlap with another network's IPv6 subnet", req: api.CreateNetworkRequest{EnableIPv6: true, Subnet6: "fd09::/16"}, err: "overlaps subnet fd09:9::/64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := &Network{Name: "t", ID: id}
			taken := []netip.Prefix{netip.MustParsePrefix("10.9.9.0/24"), netip.MustParsePrefix("fd09:9::/64")}
			err := planAddresses(n, tc.req, taken, nil)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			f, p := ipv4, n.pool4()
			if tc.ipv6 {
				f, p = ipv6, n.pool6()
			}
			if p.subnet.String() != tc.subnet || p.ipRange.String() != tc.rng || p.gateway.String() != tc.gw {
				t.Errorf("got subnet %s range %s gateway %s", p.subnet, p.ipRange, p.gateway)
			}
			if e, err := pickEndpointIP(f, p, nil, "", map[netip.Addr]bool{}); err != nil || e.String() != tc.e1 {
				t.Errorf("first endpoint = %v, %v; want %s", e, err, tc.e1)
			}
		})
	}
}

// TestAutomaticIPv6Subnet: --ipv6 without a subnet gets a unique local
// /64 (RFC 4193: fd00::/8, a 40-bit random global id), the same for the
// same network id, another for another id.
func TestAutomaticIPv6Subnet(t *testing.T) {
	plan := func(id string) netip.Prefix {
		n := &Network{Name: "t", ID: id}
		if err := planAddresses(n, api.CreateNetworkRequest{Subnet: "10.0.0.0/24", EnableIPv6: true}, nil, nil); err != nil {
			t.Fatal(err)
		}
		if n.Gateway6 != n.Subnet6.Addr().Next() {
			t.Errorf("gateway %s, want the subnet's first address", n.Gateway6)
		}
		return n.Subnet6
	}
	a, b := plan(strings.Repeat("a", 64)), plan(strings.Repeat("b", 64))
	for _, p := range []netip.Prefix{a, b} {
		if p.Bits() != 64 || p.Addr().As16()[0] != 0xfd {
			t.Errorf("automatic subnet %s is not a unique local /64", p)
		}
	}
	if a == b || plan(strings.Repeat("a", 64)) != a {
		t.Errorf("subnets %s, %s: want one per network id, stable", a, b)
	}
}

func TestMACFromIP(t *testing.T) {
	// Docker's reference: 172.17.0.2 has MAC 02:42:ac:11:00:02 (inspect-bridge.json).
	if got := MACFromIP(netip.MustParseAddr("172.17.0.2")).String(); got != "02:42:ac:11:00:02" {
		t.Errorf("MACFromIP = %s", got)
	}
}

func TestParseOptions(t *testing.T) {
	o, err := parseOptions(map[string]string{OptICC: "false", OptMasquerade: "0", OptMTU: "1400", OptHostIPv4: "192.0.2.1"})
	if err != nil || o.icc || o.masquerade || o.mtu != 1400 || o.hostIPv4.String() != "192.0.2.1" || o.hostBinding.String() != "0.0.0.0" {
		t.Errorf("parseOptions = %+v, %v", o, err)
	}
	for opt, msg := range map[string]string{
		OptICC + "=maybe": "want true or false", OptHostBinding + "=::1": "want an IPv4 address",
		"com.docker.network.bridge.foo=1": "unknown network option", OptDefaultBridge + "=true": "reserved",
	} {
		k, v, _ := strings.Cut(opt, "=")
		if _, err := parseOptions(map[string]string{k: v}); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("option %s: err = %v, want %q", opt, err, msg)
		}
	}
}
