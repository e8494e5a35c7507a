package datapath

import (
	"net"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/vishvananda/netlink"

	"github.com/bpfnet/bpfnet/bpf"
	"github.com/bpfnet/bpfnet/network"
)

// ndOption is an NDP option (RFC 4861 §4.6): type, length in units of 8
// bytes, data.
func ndOption(typ byte, data []byte) []byte {
	o := append([]byte{typ, byte((len(data) + 2 + 7) / 8)}, data...)
	for len(o)%8 != 0 {
		o = append(o, 0)
	}
	return o
}

// icmp6 builds an Ethernet/IPv6/ICMPv6 frame from src to dst with the
// given hop limit, type and body (what follows type, code and checksum);
// hbh puts a hop-by-hop header with a router-alert option in front, as
// MLD messages have (RFC 2711).
func icmp6(t *testing.T, srcMAC net.HardwareAddr, src, dst string, hop uint8, typ uint8, body []byte, hbh bool) []byte {
	t.Helper()
	ip := &layers.IPv6{Version: 6, NextHeader: layers.IPProtocolICMPv6, HopLimit: hop, SrcIP: net.ParseIP(src), DstIP: net.ParseIP(dst)}
	ic := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(typ, 0)}
	ic.SetNetworkLayerForChecksum(ip)
	ls := []gopacket.SerializableLayer{eth(srcMAC, mac("33:33:00:00:00:16"), layers.EthernetTypeIPv6), ip}
	if hbh {
		ip.NextHeader = layers.IPProtocolIPv6HopByHop
		ls = append(ls, &layers.IPv6HopByHop{Options: []*layers.IPv6HopByHopOption{{OptionType: 5, OptionLength: 2, OptionData: []byte{0, 0}}, {OptionType: 1, OptionLength: 0}}})
		ls[len(ls)-1].(*layers.IPv6HopByHop).NextHeader = layers.IPProtocolICMPv6
	}
	return serialize(t, append(ls, ic, gopacket.Payload(body))...)
}

// nsBody is a neighbour solicitation (or advertisement) body: 4 bytes of
// reserved/flags, the target, then options.
func nsBody(target string, opts ...[]byte) []byte {
	b := append(make([]byte, 4), net.ParseIP(target).To16()...)
	for _, o := range opts {
		b = append(b, o...)
	}
	return b
}

// TestIPv6Control: networks are IPv4-only, so IPv6 is limited to the
// link-local control traffic a host-side peer needs (RFC 4861 neighbour
// discovery, RFC 3810 listener reports); a container may send neither
// router advertisements, redirects nor MLD queries, nor solicit or
// advertise with another MAC; nothing crosses icc or isolation.
func TestIPv6Control(t *testing.T) {
	w := newWorld(t, nil)
	e1 := w.eps["e1"]
	own, other := mac(e1.mac), mac("02:42:c6:12:01:03")
	mld2 := make([]byte, 4) // reserved, number of records 0
	for _, tc := range []struct {
		name   string
		frame  []byte
		reason int
	}{
		{"MLDv2 report to ff02::16", icmp6(t, own, "fe80::42:c6ff:fe12:102", "ff02::16", 1, 143, mld2, true), none},
		{"MLDv2 report during DAD (from ::)", icmp6(t, own, "::", "ff02::16", 1, 143, mld2, true), none},
		{"MLDv1 report", icmp6(t, own, "fe80::1", "ff02::1:ff12:102", 1, 131, make([]byte, 20), true), none},
		{"MLD report with hop limit 64", icmp6(t, own, "fe80::1", "ff02::16", 64, 143, mld2, true), unsupported},
		{"MLD query from a container", icmp6(t, own, "fe80::1", "ff02::1", 1, 130, make([]byte, 20), true), router},
		{"router solicitation", icmp6(t, own, "fe80::1", "ff02::2", 255, 133, make([]byte, 4), false), none},
		{"router advertisement", icmp6(t, own, "fe80::1", "ff02::1", 255, 134, make([]byte, 12), false), router},
		{"redirect", icmp6(t, own, "fe80::1", "fe80::2", 255, 137, make([]byte, 36), false), router},
		{"neighbour solicitation with its own MAC", icmp6(t, own, "fe80::1", "ff02::1:ff00:2", 255, 135, nsBody("fe80::2", ndOption(1, own)), false), none},
		{"neighbour solicitation with another MAC", icmp6(t, own, "fe80::1", "ff02::1:ff00:2", 255, 135, nsBody("fe80::2", ndOption(1, other)), false), spoof},
		{"neighbour advertisement with its own MAC", icmp6(t, own, "fe80::1", "ff02::1", 255, 136, nsBody("fe80::1", ndOption(2, own)), false), none},
		{"neighbour advertisement with another MAC", icmp6(t, own, "fe80::1", "ff02::1", 255, 136, nsBody("fe80::1", ndOption(2, other)), false), spoof},
		{"another MAC behind an unknown option", icmp6(t, own, "fe80::1", "ff02::1", 255, 136, nsBody("fe80::1", ndOption(14, make([]byte, 6)), ndOption(2, other)), false), spoof},
		{"option of length zero", icmp6(t, own, "fe80::1", "ff02::1", 255, 136, nsBody("fe80::1", []byte{2, 0, 0, 0, 0, 0, 0, 0}), false), malformed},
		{"DAD solicitation from ::", icmp6(t, own, "::", "ff02::1:ff00:2", 255, 135, nsBody("fe80::2"), false), none},
		{"router advertisement from ::", icmp6(t, own, "::", "ff02::1", 255, 134, make([]byte, 12), false), unsupported},
		{"echo request, link-local", icmp6(t, own, "fe80::1", "fe80::2", 64, 128, make([]byte, 4), false), unsupported},
		{"neighbour solicitation to a global address", icmp6(t, own, "fe80::1", "2001:db8::2", 255, 135, nsBody("2001:db8::2"), false), unsupported},
	} {
		t.Run("from a container: "+tc.name, func(t *testing.T) {
			w.expect(t, w.coll.FromContainer, e1.ifindex, e1.ifindex, fromC, true, tc.frame, tc.reason)
		})
	}

	// To a container: the host's router messages pass; a neighbour's
	// control traffic (bridged from its veth) only where icc and
	// isolation would let its IPv4 through.
	e2, e3, e4 := w.eps["e2"], w.eps["e3"], w.eps["e4"]
	ns := func(from *testEP) []byte {
		return icmp6(t, mac(from.mac), "fe80::1", "ff02::1:ff00:2", 255, 135, nsBody("fe80::2", ndOption(1, mac(from.mac))), false)
	}
	w.checkTo(t, "to a container: ", []toCase{
		{"router advertisement from the host", e1, 0, icmp6(t, hostMAC, "fe80::1", "ff02::1", 255, 134, make([]byte, 12), false), none},
		{"MLD query from the host", e1, 0, icmp6(t, hostMAC, "fe80::1", "ff02::1", 1, 130, make([]byte, 20), true), none},
		{"solicitation from a neighbour, icc on", e1, e2.ifindex, ns(e2), none},
		{"solicitation from a neighbour, icc off", e4, e3.ifindex, ns(e3), icc},
		{"solicitation from another network", e1, e3.ifindex, ns(e3), isolation},
		{"echo from the host", e1, 0, icmp6(t, hostMAC, "fe80::1", "fe80::2", 64, 128, make([]byte, 4), false), unsupported},
	})
}

// toCase is a frame into a container (to_container) that came in on
// ingress (0: made by the host), and the drop reason it must get.
type toCase struct {
	name    string
	to      *testEP
	ingress int
	frame   []byte
	reason  int
}

func (w *world) checkTo(t *testing.T, prefix string, cases []toCase) {
	for _, tc := range cases {
		t.Run(prefix+tc.name, func(t *testing.T) {
			w.ingress = tc.ingress
			defer func() { w.ingress = 0 }()
			w.expect(t, w.coll.ToContainer, tc.to.ifindex, tc.to.ifindex, toC, true, tc.frame, tc.reason)
		})
	}
}

// The uplink's IPv6 address (the masquerade source), another address of
// the host, and a host outside.
const uplinkAddr6, extraAddr6, outsideAddr6 = "2001:db8:19::1", "2001:db8:19::3", "2001:db8:19::2"

// The dual-stack part of the world (issue 18): four networks with an
// IPv6 subnet besides their IPv4 one, and their endpoints.
//
//	n6 198.18.6.0/24 fd00:6::/64 icc            e8 fd00:6::2  e9 fd00:6::3
//	n7 198.18.7.0/24 fd00:7::/64 no icc         e10 fd00:7::2
//	n8 198.18.8.0/24 fd00:8::/64 internal       e11 fd00:8::2
//	n9 198.18.9.0/24 fd00:9::/64 no masquerade  e12 fd00:9::2
//
// Their gateways (::1), the uplink's 2001:db8:19::1 and 2001:db8:19::3 are
// host addresses.
func (w *world) addDualStack(t *testing.T) {
	t.Helper()
	nets := []*network.Network{
		{Name: "n6", Subnet: netip.MustParsePrefix("198.18.6.0/24"), Subnet6: netip.MustParsePrefix("fd00:6::/64"), ICC: true, Masquerade: true},
		{Name: "n7", Subnet: netip.MustParsePrefix("198.18.7.0/24"), Subnet6: netip.MustParsePrefix("fd00:7::/64"), Masquerade: true},
		{Name: "n8", Subnet: netip.MustParsePrefix("198.18.8.0/24"), Subnet6: netip.MustParsePrefix("fd00:8::/64"), ICC: true, Internal: true},
		{Name: "n9", Subnet: netip.MustParsePrefix("198.18.9.0/24"), Subnet6: netip.MustParsePrefix("fd00:9::/64"), ICC: true},
	}
	eps := []*testEP{
		{name: "e8", ip: "198.18.6.2", mac: "02:42:c6:12:06:02", net: "n6"},
		{name: "e9", ip: "198.18.6.3", mac: "02:42:c6:12:06:03", net: "n6"},
		{name: "e10", ip: "198.18.7.2", mac: "02:42:c6:12:07:02", net: "n7"},
		{name: "e11", ip: "198.18.8.2", mac: "02:42:c6:12:08:02", net: "n8"},
		{name: "e12", ip: "198.18.9.2", mac: "02:42:c6:12:09:02", net: "n9"},
		{name: "e13", ip: "198.18.7.3", mac: "02:42:c6:12:07:03", net: "n7"},
	}
	ip6 := map[string]string{"e8": "fd00:6::2", "e9": "fd00:6::3", "e10": "fd00:7::2", "e11": "fd00:8::2", "e12": "fd00:9::2", "e13": "fd00:7::3"}
	err := w.ns.Do(func() error {
		for _, n := range nets {
			if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br-" + n.Name}}); err != nil {
				return err
			}
			l, err := netlink.LinkByName("br-" + n.Name)
			if err != nil {
				return err
			}
			w.nets[n.Name] = l.Attrs().Index
		}
		for _, ep := range eps {
			if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "v" + ep.name}, PeerName: "p" + ep.name}); err != nil {
				return err
			}
			l, err := netlink.LinkByName("v" + ep.name)
			if err != nil {
				return err
			}
			ep.ifindex = l.Attrs().Index
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*network.Network{}
	for _, n := range nets {
		id := uint32(w.nets[n.Name])
		byName[n.Name] = n
		must(t, w.coll.Networks.Put(id, networkInfo(n, bridgeMAC)))
		must(t, w.coll.Subnets.Put(subnetKey(n.Subnet), id))
		must(t, w.coll.Subnets6.Put(subnet6Key(n.Subnet6), id))
		must(t, w.coll.HostAddrs6.Put(in6(n.Subnet6.Addr().Next()), uint32(1)))
	}
	must(t, w.coll.HostAddrs6.Put(in6(netip.MustParseAddr(uplinkAddr6)), uint32(1)))
	must(t, w.coll.HostAddrs6.Put(in6(netip.MustParseAddr(extraAddr6)), uint32(1)))
	must(t, w.coll.Uplinks.Put(uint32(w.uplink), bpf.BpfnetUplinkInfo{Addr: be32(netip.MustParseAddr(uplinkAddr)), Addr6: in6(netip.MustParseAddr(uplinkAddr6))}))
	for i, ep := range eps {
		ep.slot = uint32(len(w.eps) + 1 + i)
		w.eps[ep.name] = ep
		id := uint32(w.nets[ep.net])
		info, ipEntry, err := endpointInfo(&network.Endpoint{Name: ep.name, IP: netip.MustParseAddr(ep.ip), IP6: netip.MustParseAddr(ip6[ep.name]), MAC: ep.mac},
			byName[ep.net], id, uint32(ep.ifindex), ep.slot)
		must(t, err)
		must(t, w.coll.EpByIfindex.Put(uint32(ep.ifindex), info))
		must(t, w.coll.EpByIp.Put(be32(netip.MustParseAddr(ep.ip)), ipEntry))
		must(t, w.coll.EpByIp6.Put(in6(netip.MustParseAddr(ip6[ep.name])), ipEntry))
	}
}

// frame6 is an Ethernet/IPv6 frame whose payload (extension headers and
// the upper layer) is given as bytes, next naming the first of them.
func frame6(t *testing.T, srcMAC net.HardwareAddr, src, dst string, next layers.IPProtocol, payload ...[]byte) []byte {
	t.Helper()
	ip := &layers.IPv6{Version: 6, NextHeader: next, HopLimit: 64, SrcIP: net.ParseIP(src), DstIP: net.ParseIP(dst)}
	var b []byte
	for _, p := range payload {
		b = append(b, p...)
	}
	return serialize(t, eth(srcMAC, bridgeMAC, layers.EthernetTypeIPv6), ip, gopacket.Payload(b))
}

// Upper layers and extension headers (RFC 8200 §4), byte by byte.
var (
	echo6   = []byte{128, 0, 0, 0, 0, 7, 0, 1} // ICMPv6 echo request, id 7, seq 1
	tcpSyn6 = []byte{0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0}
)

// extHeader is a hop-by-hop, routing or destination options header of
// 8 bytes followed by next (padded with a PadN option).
func extHeader(next layers.IPProtocol) []byte { return []byte{byte(next), 0, 1, 4, 0, 0, 0, 0} }

// fragHeader is a fragment header before next: offset in 8-byte units,
// more fragments or not.
func fragHeader(next layers.IPProtocol, offset uint16, more bool) []byte {
	fo := offset << 3
	if more {
		fo |= 1
	}
	return []byte{byte(next), 0, byte(fo >> 8), byte(fo), 0, 0, 0x12, 0x34}
}

// TestIPv6FromContainer: on a dual-stack network, what a container sends
// over IPv6 gets the IPv4 verdicts (icc, isolation, internal, host
// addresses reachable), from its own IPv6 address only (its link-local
// one, the modified EUI-64 of its MAC, towards the link), whatever
// extension headers precede the upper layer; its neighbour discovery
// advertises its own addresses and MAC only, and router messages stay
// its neighbours'. The outside is reachable (nat6_test.go follows those
// flows).
func TestIPv6FromContainer(t *testing.T) {
	w := newWorld(t, nil)
	w.addDualStack(t)
	e8, e10, e11 := w.eps["e8"], w.eps["e10"], w.eps["e11"]
	own := mac(e8.mac)
	// RFC 4291 appendix A: 02:42:c6:12:06:02 → interface id 0042:c6ff:fe12:0602.
	const ll8, ll9 = "fe80::42:c6ff:fe12:602", "fe80::42:c6ff:fe12:603"
	mld2 := make([]byte, 4)
	icmp := layers.IPProtocolICMPv6
	for _, tc := range []struct {
		name   string
		from   *testEP
		frame  []byte
		reason int
	}{
		{"echo to a neighbour", e8, frame6(t, own, "fd00:6::2", "fd00:6::3", icmp, echo6), none},
		{"TCP to a neighbour", e8, frame6(t, own, "fd00:6::2", "fd00:6::3", layers.IPProtocolTCP, tcpSyn6), none},
		{"to its gateway", e8, frame6(t, own, "fd00:6::2", "fd00:6::1", icmp, echo6), none},
		{"to the uplink's address", e8, frame6(t, own, "fd00:6::2", "2001:db8:19::1", icmp, echo6), none},
		{"to a container of another network", e8, frame6(t, own, "fd00:6::2", "fd00:7::2", icmp, echo6), isolation},
		{"to a container of an internal network", e8, frame6(t, own, "fd00:6::2", "fd00:8::2", icmp, echo6), internal},
		{"to an address of another network nobody has", e8, frame6(t, own, "fd00:6::2", "fd00:7::99", icmp, echo6), isolation},
		{"internal → another network's gateway (host input)", e11, frame6(t, mac(e11.mac), "fd00:8::2", "fd00:6::1", icmp, echo6), none},
		{"internal → outside", e11, frame6(t, mac(e11.mac), "fd00:8::2", "2001:db8:19::2", icmp, echo6), internal},
		{"to the outside (tracked)", e8, frame6(t, own, "fd00:6::2", "2001:db8:19::2", icmp, echo6), none},
		{"icc off: to its network's address nobody has", e10, frame6(t, mac(e10.mac), "fd00:7::2", "fd00:7::9", icmp, echo6), icc},
		{"a neighbour's source", e8, frame6(t, own, "fd00:6::3", "fd00:6::1", icmp, echo6), spoof},
		{"another network's source", e8, frame6(t, own, "fd00:7::2", "fd00:6::1", icmp, echo6), spoof},
		{"a link-local source not its own", e8, frame6(t, own, "fe80::1", ll9, icmp, echo6), spoof},
		{"its link-local source to a link-local neighbour", e8, frame6(t, own, ll8, ll9, icmp, echo6), none},
		{"its link-local source to a global address", e8, frame6(t, own, ll8, "fd00:6::3", icmp, echo6), spoof},
		{"another MAC", e8, frame6(t, mac(w.eps["e9"].mac), "fd00:6::2", "fd00:6::3", icmp, echo6), spoof},
		{"hop-by-hop and destination options before TCP", e8,
			frame6(t, own, "fd00:6::2", "fd00:6::3", layers.IPProtocolIPv6HopByHop, extHeader(layers.IPProtocolIPv6Destination), extHeader(layers.IPProtocolTCP), tcpSyn6), none},
		{"extension headers before TCP to another network", e8,
			frame6(t, own, "fd00:6::2", "fd00:7::2", layers.IPProtocolIPv6HopByHop, extHeader(layers.IPProtocolIPv6Routing), extHeader(layers.IPProtocolTCP), tcpSyn6), isolation},
		{"first fragment to another network", e8, frame6(t, own, "fd00:6::2", "fd00:7::2", layers.IPProtocolIPv6Fragment, fragHeader(icmp, 0, true), echo6), isolation},
		{"later fragment to a neighbour", e8, frame6(t, own, "fd00:6::2", "fd00:6::3", layers.IPProtocolIPv6Fragment, fragHeader(icmp, 8, false), make([]byte, 16)), none},
		{"later fragment to another network", e8, frame6(t, own, "fd00:6::2", "fd00:7::2", layers.IPProtocolIPv6Fragment, fragHeader(icmp, 8, false), make([]byte, 16)), isolation},
		{"later fragment with a neighbour's source", e8, frame6(t, own, "fd00:6::3", "fd00:6::1", layers.IPProtocolIPv6Fragment, fragHeader(icmp, 8, false), make([]byte, 16)), spoof},
		{"seven extension headers", e8, frame6(t, own, "fd00:6::2", "fd00:6::3", layers.IPProtocolIPv6Destination,
			extHeader(layers.IPProtocolIPv6Destination), extHeader(layers.IPProtocolIPv6Destination), extHeader(layers.IPProtocolIPv6Destination),
			extHeader(layers.IPProtocolIPv6Destination), extHeader(layers.IPProtocolIPv6Destination), extHeader(layers.IPProtocolIPv6Destination),
			extHeader(icmp), echo6), malformed},
		{"an extension header longer than the packet", e8, frame6(t, own, "fd00:6::2", "fd00:6::3", layers.IPProtocolIPv6Destination, []byte{58, 8, 1, 4, 0, 0, 0, 0}), malformed},
		{"solicitation for an address nobody has", e8, icmp6(t, own, "fd00:6::2", "ff02::1:ff00:9", 255, 135, nsBody("fd00:6::9", ndOption(1, own)), false), none},
		{"solicitation for its gateway, unicast", e8, icmp6(t, own, "fd00:6::2", "fd00:6::1", 255, 135, nsBody("fd00:6::1", ndOption(1, own)), false), none},
		{"duplicate address detection from ::", e8, icmp6(t, own, "::", "ff02::1:ff00:2", 255, 135, nsBody("fd00:6::2"), false), none},
		{"advertisement of its own address", e8, icmp6(t, own, "fd00:6::2", "ff02::1", 255, 136, nsBody("fd00:6::2", ndOption(2, own)), false), none},
		{"advertisement of its own link-local address", e8, icmp6(t, own, ll8, "ff02::1", 255, 136, nsBody(ll8, ndOption(2, own)), false), none},
		{"advertisement of a neighbour's address", e8, icmp6(t, own, "fd00:6::2", "ff02::1", 255, 136, nsBody("fd00:6::3", ndOption(2, own)), false), spoof},
		{"advertisement of a neighbour's link-local address", e8, icmp6(t, own, ll8, "ff02::1", 255, 136, nsBody(ll9, ndOption(2, own)), false), spoof},
		{"advertisement with another MAC", e8, icmp6(t, own, "fd00:6::2", "ff02::1", 255, 136, nsBody("fd00:6::2", ndOption(2, mac(w.eps["e9"].mac))), false), spoof},
		{"advertisement from ::", e8, icmp6(t, own, "::", "ff02::1", 255, 136, nsBody("fd00:6::2", ndOption(2, own)), false), spoof},
		{"solicitation from a neighbour's address", e8, icmp6(t, own, "fd00:6::3", "ff02::1:ff00:1", 255, 135, nsBody("fd00:6::1", ndOption(1, own)), false), spoof},
		{"solicitation into another network", e8, icmp6(t, own, "fd00:6::2", "fd00:7::2", 255, 135, nsBody("fd00:7::2", ndOption(1, own)), false), unsupported},
		{"router advertisement", e8, icmp6(t, own, ll8, "ff02::1", 255, 134, make([]byte, 12), false), router},
		{"router advertisement in a first fragment", e8, frame6(t, own, ll8, "ff02::1", layers.IPProtocolIPv6Fragment, fragHeader(icmp, 0, true), []byte{134, 0, 0, 0}, make([]byte, 12)), router},
		{"redirect", e8, icmp6(t, own, ll8, ll9, 255, 137, make([]byte, 36), false), router},
		{"MLDv2 report", e8, icmp6(t, own, ll8, "ff02::16", 1, 143, mld2, true), none},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w.expect(t, w.coll.FromContainer, tc.from.ifindex, tc.from.ifindex, fromC, true, tc.frame, tc.reason)
		})
	}
}

// TestIPv6NeighbourDelivered: a neighbour solicitation for another
// endpoint of the sender's network, and an advertisement to one, go
// straight into that endpoint (TC_ACT_REDIRECT, counted on its
// to_container), not through the bridge, whose bridge netfilter would
// hand them to ip6tables' FORWARD. What is for the host, for nobody, for
// the sender itself, to a link-local address, or for an endpoint it may
// not reach (icc off) takes the bridge as before (TC_ACT_OK).
func TestIPv6NeighbourDelivered(t *testing.T) {
	w := newWorld(t, nil)
	w.addDualStack(t)
	e8, e9, e10, e13 := w.eps["e8"], w.eps["e9"], w.eps["e10"], w.eps["e13"]
	const ll8 = "fe80::42:c6ff:fe12:602"
	for _, tc := range []struct {
		name  string
		from  *testEP
		frame []byte
		to    *testEP // nil: the bridge
	}{
		{"solicitation for a neighbour", e8, icmp6(t, mac(e8.mac), "fd00:6::2", "ff02::1:ff00:3", 255, 135, nsBody("fd00:6::3", ndOption(1, mac(e8.mac))), false), e9},
		{"unicast solicitation for a neighbour", e8, icmp6(t, mac(e8.mac), "fd00:6::2", "fd00:6::3", 255, 135, nsBody("fd00:6::3"), false), e9},
		{"advertisement to a neighbour", e9, icmp6(t, mac(e9.mac), "fd00:6::3", "fd00:6::2", 255, 136, nsBody("fd00:6::3", ndOption(2, mac(e9.mac))), false), e8},
		{"advertisement to a neighbour's link-local address", e9, icmp6(t, mac(e9.mac), "fd00:6::3", ll8, 255, 136, nsBody("fd00:6::3", ndOption(2, mac(e9.mac))), false), nil},
		{"solicitation for its gateway", e8, icmp6(t, mac(e8.mac), "fd00:6::2", "ff02::1:ff00:1", 255, 135, nsBody("fd00:6::1", ndOption(1, mac(e8.mac))), false), nil},
		{"duplicate address detection", e8, icmp6(t, mac(e8.mac), "::", "ff02::1:ff00:2", 255, 135, nsBody("fd00:6::2"), false), nil},
		{"icc off: solicitation for a neighbour", e10, icmp6(t, mac(e10.mac), "fd00:7::2", "ff02::1:ff00:3", 255, 135, nsBody("fd00:7::3", ndOption(1, mac(e10.mac))), false), nil},
		{"icc off: advertisement to a neighbour", e13, icmp6(t, mac(e13.mac), "fd00:7::3", "fd00:7::2", 255, 136, nsBody("fd00:7::3", ndOption(2, mac(e13.mac))), false), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var before [bpf.BpfnetFamilyFAMILY_MAX]counts
			if tc.to != nil {
				before = w.familyCounters(t, tc.to.ifindex, toC)
			}
			ret, _ := w.run(t, w.coll.FromContainer, tc.from.ifindex, tc.frame)
			switch {
			case tc.to == nil && ret != actOK:
				t.Errorf("return code %d, want %d (the bridge)", ret, actOK)
			case tc.to != nil && ret != actRedirect:
				t.Errorf("return code %d, want %d (redirected into %s)", ret, actRedirect, tc.to.name)
			case tc.to != nil:
				after := w.familyCounters(t, tc.to.ifindex, toC)
				v6 := bpf.BpfnetFamilyFAMILY_IPV6
				if d := after[v6].Packets - before[v6].Packets; d != 1 {
					t.Errorf("%s's to_container IPv6 packets +%d, want +1", tc.to.name, d)
				}
			}
		})
	}
}

// TestIPv6ToContainer: what enters a container of a dual-stack network over
// IPv6. A frame bridged from a neighbour's veth (its source checked there)
// gets the icc and isolation verdicts; the host's own packets pass, from
// its addresses or its link-local ones; what the host routes in from
// elsewhere is the outside's: unsolicited unless it answers a tracked flow
// (nat6_test.go), and internal for an internal network.
func TestIPv6ToContainer(t *testing.T) {
	w := newWorld(t, nil)
	w.addDualStack(t)
	e8, e9, e10, e11 := w.eps["e8"], w.eps["e9"], w.eps["e10"], w.eps["e11"]
	icmp := layers.IPProtocolICMPv6
	host := hostMAC
	w.checkTo(t, "", []toCase{
		{"echo from a neighbour", e8, e9.ifindex, frame6(t, mac(e9.mac), "fd00:6::3", "fd00:6::2", icmp, echo6), none},
		{"from a neighbour's link-local address", e8, e9.ifindex, frame6(t, mac(e9.mac), "fe80::42:c6ff:fe12:603", "fe80::42:c6ff:fe12:602", icmp, echo6), none},
		{"solicitation from a neighbour's address", e8, e9.ifindex,
			icmp6(t, mac(e9.mac), "fd00:6::3", "ff02::1:ff00:2", 255, 135, nsBody("fd00:6::2", ndOption(1, mac(e9.mac))), false), none},
		{"bridged from another network's endpoint", e8, e10.ifindex, frame6(t, mac(e10.mac), "fd00:7::2", "fd00:6::2", icmp, echo6), isolation},
		{"bridged from an internal network's endpoint", e8, e11.ifindex, frame6(t, mac(e11.mac), "fd00:8::2", "fd00:6::2", icmp, echo6), internal},
		{"from the host: its gateway address", e8, 0, frame6(t, host, "fd00:6::1", "fd00:6::2", icmp, echo6), none},
		{"from the host: the uplink's address", e8, 0, frame6(t, host, "2001:db8:19::1", "fd00:6::2", layers.IPProtocolTCP, tcpSyn6), none},
		{"from the host: a router advertisement", e8, 0, icmp6(t, host, "fe80::1", "ff02::1", 255, 134, make([]byte, 12), false), none},
		{"from the host to an internal network", e11, 0, frame6(t, host, "fd00:8::1", "fd00:8::2", icmp, echo6), none},
		{"routed in from the uplink", e8, w.uplink, frame6(t, host, "2001:db8:19::2", "fd00:6::2", layers.IPProtocolTCP, tcpSyn6), unsolicited},
		{"routed in with a host address as source", e8, w.uplink, frame6(t, host, "fd00:6::1", "fd00:6::2", icmp, echo6), unsolicited},
		{"routed in to an internal network", e11, w.uplink, frame6(t, host, "2001:db8:19::2", "fd00:8::2", icmp, echo6), internal},
		{"routed in: a later fragment", e8, w.uplink, frame6(t, host, "2001:db8:19::2", "fd00:6::2", layers.IPProtocolIPv6Fragment, fragHeader(icmp, 8, false), make([]byte, 16)), fragment},
		{"an extension header longer than the packet", e8, e9.ifindex, frame6(t, mac(e9.mac), "fd00:6::3", "fd00:6::2", layers.IPProtocolIPv6HopByHop, []byte{58, 8, 1, 4, 0, 0, 0, 0}), malformed},
	})
}
