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

func TestPlanAddresses(t *testing.T) {
	for _, tc := range []struct {
		name                string
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
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := &Network{Name: "t"}
			err := planAddresses(n, tc.req, []netip.Prefix{netip.MustParsePrefix("10.9.9.0/24")}, nil)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if n.Subnet.String() != tc.subnet || n.IPRange.String() != tc.rng || n.Gateway.String() != tc.gw {
				t.Errorf("got subnet %s range %s gateway %s", n.Subnet, n.IPRange, n.Gateway)
			}
			if e, err := pickEndpointIP(n, "", nil); err != nil || e.String() != tc.e1 {
				t.Errorf("first endpoint = %v, %v; want %s", e, err, tc.e1)
			}
		})
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
