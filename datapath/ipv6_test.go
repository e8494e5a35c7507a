package datapath

import (
	"net"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
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
	for _, tc := range []struct {
		name    string
		to      *testEP
		ingress int
		frame   []byte
		reason  int
	}{
		{"router advertisement from the host", e1, 0, icmp6(t, hostMAC, "fe80::1", "ff02::1", 255, 134, make([]byte, 12), false), none},
		{"MLD query from the host", e1, 0, icmp6(t, hostMAC, "fe80::1", "ff02::1", 1, 130, make([]byte, 20), true), none},
		{"solicitation from a neighbour, icc on", e1, e2.ifindex, ns(e2), none},
		{"solicitation from a neighbour, icc off", e4, e3.ifindex, ns(e3), icc},
		{"solicitation from another network", e1, e3.ifindex, ns(e3), isolation},
		{"echo from the host", e1, 0, icmp6(t, hostMAC, "fe80::1", "fe80::2", 64, 128, make([]byte, 4), false), unsupported},
	} {
		t.Run("to a container: "+tc.name, func(t *testing.T) {
			w.ingress = tc.ingress
			defer func() { w.ingress = 0 }()
			w.expect(t, w.coll.ToContainer, tc.to.ifindex, tc.to.ifindex, toC, true, tc.frame, tc.reason)
		})
	}
}
