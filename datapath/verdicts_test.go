package datapath

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/bpfnet/bpfnet/bpf"
)

const (
	fromC = bpf.BpfnetDirectionDIR_FROM_CONTAINER
	toC   = bpf.BpfnetDirectionDIR_TO_CONTAINER
)

// TestFromContainer: what a container sends, judged at its veth's ingress.
// Expected verdicts are DESIGN §3's table (and the anti-spoofing
// and malformed-packet rules).
func TestFromContainer(t *testing.T) {
	w := newWorld(t, nil)
	e1 := w.eps["e1"]
	arp := func(senderMAC string, spa string) []byte {
		return serialize(t, eth(mac(e1.mac), layers.EthernetBroadcast, layers.EthernetTypeARP), &layers.ARP{
			AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
			Operation: layers.ARPRequest, SourceHwAddress: mac(senderMAC), SourceProtAddress: net.ParseIP(spa).To4(),
			DstHwAddress: make([]byte, 6), DstProtAddress: net.ParseIP("198.18.1.3").To4()})
	}
	ipv6 := func(src, dst string, next layers.IPProtocol, hop uint8, l ...gopacket.SerializableLayer) []byte {
		ip := &layers.IPv6{Version: 6, NextHeader: next, HopLimit: hop, SrcIP: net.ParseIP(src), DstIP: net.ParseIP(dst)}
		ls := append([]gopacket.SerializableLayer{eth(mac(e1.mac), hostMAC, layers.EthernetTypeIPv6), ip}, l...)
		for _, x := range l {
			if c, ok := x.(*layers.ICMPv6); ok {
				c.SetNetworkLayerForChecksum(ip)
			}
		}
		return serialize(t, ls...)
	}
	ns := func() gopacket.SerializableLayer {
		return &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeNeighborSolicitation, 0)}
	}
	truncate := func(b []byte, n int) []byte { return b[:n] }
	setByte := func(b []byte, off int, v byte) []byte { b[off] = v; return b }

	for _, tc := range []struct {
		name   string
		ep     string
		frame  []byte
		reason int
	}{
		{"same network, icc on", "e1", w.from(t, "e1", w.ip("e2"), tcp(40000, 80)), none},
		{"same network, icc off", "e3", w.from(t, "e3", w.ip("e4"), tcp(40000, 80)), icc},
		{"same network, icc off, udp", "e3", w.from(t, "e3", w.ip("e4"), udp(40000, 53)), icc},
		{"same network, icc off, ping", "e3", w.from(t, "e3", w.ip("e4"), echo(7)), icc},
		{"icc off → own gateway", "e3", w.from(t, "e3", gw2, tcp(40000, 80)), none},
		{"other network", "e1", w.from(t, "e1", w.ip("e3"), tcp(40000, 80)), isolation},
		{"other network, unused address", "e1", w.from(t, "e1", "198.18.2.200", udp(1, 2)), isolation},
		{"other network's gateway (host address)", "e1", w.from(t, "e1", gw2, tcp(40000, 80)), none},
		{"uplink address", "e1", w.from(t, "e1", uplinkAddr, udp(40000, 53)), none},
		{"into an internal network", "e1", w.from(t, "e1", w.ip("e5"), tcp(40000, 80)), internal},
		{"internal → other network", "e5", w.from(t, "e5", w.ip("e1"), tcp(40000, 80)), internal},
		{"internal → own gateway", "e5", w.from(t, "e5", gw3, tcp(40000, 80)), none},
		{"internal → other gateway", "e5", w.from(t, "e5", gw1, echo(1)), none},
		{"internal → uplink address", "e5", w.from(t, "e5", uplinkAddr, udp(1, 53)), none},
		{"internal → outside", "e5", w.from(t, "e5", outsideAddr, tcp(40000, 80)), internal},
		{"outside", "e1", w.from(t, "e1", outsideAddr, tcp(40000, 80)), none},
		{"multicast", "e1", w.from(t, "e1", "224.0.0.251", udp(5353, 5353)), none},
		{"subnet broadcast", "e3", w.from(t, "e3", "198.18.2.255", udp(68, 67)), none},
		{"spoofed source IP", "e1", w.from(t, "e1", w.ip("e2"), tcp(40000, 80), func(ip *layers.IPv4) { ip.SrcIP = net.ParseIP("198.18.1.99").To4() }), spoof},
		{"spoofed source IP of a neighbour", "e1", w.from(t, "e1", outsideAddr, udp(1, 2), func(ip *layers.IPv4) { ip.SrcIP = net.ParseIP("198.18.1.3").To4() }), spoof},
		{"spoofed source MAC", "e1", serialize(t, append([]gopacket.SerializableLayer{eth(mac("02:42:c6:12:01:03"), hostMAC, layers.EthernetTypeIPv4)}, ipPacket(t, e1.ip, w.ip("e2"), tcp(1, 2))...)...), spoof},
		{"ARP from the endpoint", "e1", arp(e1.mac, e1.ip), none},
		{"ARP probe (sender 0.0.0.0)", "e1", arp(e1.mac, "0.0.0.0"), none},
		{"ARP claiming another address", "e1", arp(e1.mac, "198.18.1.3"), spoof},
		{"ARP claiming another MAC", "e1", arp("02:42:c6:12:01:03", e1.ip), spoof},
		{"IPv6 neighbour solicitation, link-local", "e1", ipv6("fe80::1", "ff02::1:ff00:2", layers.IPProtocolICMPv6, 255, ns()), none},
		{"IPv6 DAD solicitation from ::", "e1", ipv6("::", "ff02::1:ff00:2", layers.IPProtocolICMPv6, 255, ns()), none},
		{"IPv6 neighbour solicitation, hop limit 64", "e1", ipv6("fe80::1", "ff02::1:ff00:2", layers.IPProtocolICMPv6, 64, ns()), unsupported},
		{"IPv6 neighbour solicitation, global source", "e1", ipv6("2001:db8::1", "ff02::1:ff00:2", layers.IPProtocolICMPv6, 255, ns()), unsupported},
		{"IPv6 echo", "e1", ipv6("fe80::1", "fe80::2", layers.IPProtocolICMPv6, 64, &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeEchoRequest, 0)}), unsupported},
		{"IPv6 TCP", "e1", ipv6("2001:db8::1", "2001:db8::2", layers.IPProtocolTCP, 64, gopacket.Payload(make([]byte, 20))), unsupported},
		{"other ethertype (LLDP)", "e1", serialize(t, eth(mac(e1.mac), hostMAC, layers.EthernetType(0x88cc)), gopacket.Payload(make([]byte, 40))), unsupported},
		{"VLAN tag", "e1", serialize(t, eth(mac(e1.mac), hostMAC, layers.EthernetTypeDot1Q), &layers.Dot1Q{VLANIdentifier: 7, Type: layers.EthernetTypeIPv4}, gopacket.Payload(w.from(t, "e1", w.ip("e3"), tcp(1, 2))[14:])), malformed},
		// BPF_PROG_TEST_RUN refuses frames shorter than an IPv4 header, so
		// a header that claims options beyond the frame stands in.
		{"truncated IPv4 header", "e1", setByte(truncate(w.from(t, "e1", w.ip("e2"), tcp(1, 2)), 14+20), 14, 0x4f), malformed},
		{"IPv4 header length 4", "e1", setByte(w.from(t, "e1", w.ip("e2"), tcp(1, 2)), 14, 0x44), malformed},
		{"IPv4 version 6 in an IPv4 frame", "e1", setByte(w.from(t, "e1", w.ip("e2"), tcp(1, 2)), 14, 0x65), malformed},
		{"IPv4 total length beyond the frame", "e1", truncate(w.from(t, "e1", w.ip("e2"), udp(1, 2)), 14+20+8+2), malformed},
		{"truncated TCP header", "e1", truncate(w.from(t, "e1", outsideAddr, tcp(1, 2)), 14+20+10), malformed},
		{"IP options, allowed destination", "e1", w.from(t, "e1", w.ip("e2"), tcp(40000, 80), withOptions), none},
		{"IP options, other network", "e1", w.from(t, "e1", w.ip("e3"), tcp(40000, 80), withOptions), isolation},
		{"IP options, spoofed", "e1", w.from(t, "e1", outsideAddr, tcp(1, 2), withOptions, func(ip *layers.IPv4) { ip.SrcIP = net.ParseIP("198.18.9.9").To4() }), spoof},
		{"first fragment, other network", "e1", w.from(t, "e1", w.ip("e3"), udp(1, 2), firstFragment(9)), isolation},
		{"later fragment, other network", "e1", w.from(t, "e1", w.ip("e3"), udp(1, 2), laterFragment(9)), isolation},
		{"later fragment, internal → outside", "e5", w.from(t, "e5", outsideAddr, udp(1, 2), laterFragment(9)), internal},
		{"later fragment, allowed", "e1", w.from(t, "e1", w.ip("e2"), udp(1, 2), laterFragment(9)), none},
	} {
		t.Run(tc.name, func(t *testing.T) {
			i := w.eps[tc.ep].ifindex
			w.expect(t, w.coll.FromContainer, i, i, fromC, true, tc.frame, tc.reason)
		})
	}
	t.Run("same network, addressed to the neighbour's MAC: straight into it", func(t *testing.T) {
		e2 := w.eps["e2"]
		frame := serialize(t, append([]gopacket.SerializableLayer{eth(mac(e1.mac), mac(e2.mac), layers.EthernetTypeIPv4)}, ipPacket(t, e1.ip, e2.ip, tcp(40000, 80))...)...)
		before := w.counters(t, e2.ifindex, toC)
		ret, _, out := w.runData(t, w.coll.FromContainer, e1.ifindex, frame)
		if ret != actRedirect {
			t.Errorf("return code %d, want TC_ACT_REDIRECT", ret)
		}
		if !bytes.Equal(out, frame) {
			t.Errorf("frame changed on the way: %x", out)
		}
		if after := w.counters(t, e2.ifindex, toC); after.Packets != before.Packets+1 || after.Bytes != before.Bytes+uint64(len(frame)) {
			t.Errorf("receiver's to_container counters +%d packets +%d bytes, want +1, +%d", after.Packets-before.Packets, after.Bytes-before.Bytes, len(frame))
		}
	})
	t.Run("icc off, addressed to the neighbour's MAC: still dropped", func(t *testing.T) {
		e3, e4 := w.eps["e3"], w.eps["e4"]
		frame := serialize(t, append([]gopacket.SerializableLayer{eth(mac(e3.mac), mac(e4.mac), layers.EthernetTypeIPv4)}, ipPacket(t, e3.ip, e4.ip, tcp(40000, 80))...)...)
		w.expect(t, w.coll.FromContainer, e3.ifindex, e3.ifindex, fromC, true, frame, icc)
	})
	t.Run("interface the maps do not know", func(t *testing.T) {
		w.expect(t, w.coll.FromContainer, w.stranger, w.stranger, fromC, false, w.from(t, "e1", w.ip("e2"), tcp(1, 2)), noEndpoint)
	})
}

// TestToContainer: what is about to enter a container, judged at its
// veth's egress: frames bridged from neighbours by their source endpoint.
func TestToContainer(t *testing.T) {
	w := newWorld(t, nil)
	for _, tc := range []struct {
		name     string
		to       string
		src, dst string
		p        l4
		reason   int
	}{
		{"bridged from same network, icc on", "e2", "e1", "e2", tcp(40000, 80), none},
		{"broadcast from same network, icc off", "e4", "e3", "198.18.2.255", udp(68, 67), icc},
		{"multicast from same network, icc off", "e4", "e3", "224.0.0.251", udp(5353, 5353), icc},
		{"multicast from another network", "e1", "e3", "224.0.0.251", udp(5353, 5353), isolation},
		{"from an internal network", "e1", "e5", "224.0.0.251", udp(5353, 5353), internal},
		{"from the host", "e1", "gw1", "e1", tcp(40000, 22), none},
		{"from the outside, routed in (more in TestToNetwork)", "e1", "outside", "e1", tcp(80, 40000), unsolicited},
	} {
		t.Run(tc.name, func(t *testing.T) {
			i := w.eps[tc.to].ifindex
			// A bridged frame comes in on its sender's veth; the host's
			// own, on none.
			w.ingress = 0
			if src, ok := w.eps[tc.src]; ok {
				w.ingress = src.ifindex
			}
			defer func() { w.ingress = 0 }()
			w.expect(t, w.coll.ToContainer, i, i, toC, true, ipFrame(t, w.ip(tc.src), w.ip(tc.dst), tc.p), tc.reason)
		})
	}
	t.Run("IPv6 other than neighbour discovery", func(t *testing.T) {
		ip := &layers.IPv6{Version: 6, NextHeader: layers.IPProtocolUDP, HopLimit: 64, SrcIP: net.ParseIP("2001:db8::1"), DstIP: net.ParseIP("2001:db8::2")}
		frame := serialize(t, eth(hostMAC, mac(w.eps["e1"].mac), layers.EthernetTypeIPv6), ip, gopacket.Payload(make([]byte, 16)))
		i := w.eps["e1"].ifindex
		w.expect(t, w.coll.ToContainer, i, i, toC, true, frame, unsupported)
	})
	t.Run("ARP", func(t *testing.T) {
		frame := serialize(t, eth(hostMAC, layers.EthernetBroadcast, layers.EthernetTypeARP), &layers.ARP{
			AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
			Operation: layers.ARPRequest, SourceHwAddress: hostMAC, SourceProtAddress: net.ParseIP(gw1).To4(),
			DstHwAddress: make([]byte, 6), DstProtAddress: net.ParseIP("198.18.1.2").To4()})
		i := w.eps["e1"].ifindex
		w.expect(t, w.coll.ToContainer, i, i, toC, true, frame, none)
	})
}

// TestToNetwork: what the host stack sends into a network (host-originated
// or routed in from the outside), judged by to_container: it came in on
// no endpoint's veth (skb->ingress_ifindex 0 when the host made it).
func TestToNetwork(t *testing.T) {
	w := newWorld(t, map[string]any{"ct_timeout_udp": uint64(300 * time.Millisecond), "ct_timeout_udp_stream": uint64(300 * time.Millisecond)})
	e1 := w.eps["e1"].ifindex
	toNet := func(t *testing.T, to int, frame []byte, reason int) {
		t.Helper()
		w.expect(t, w.coll.ToContainer, to, to, toC, true, frame, reason)
	}
	out := func(p l4, opts ...ipOpt) []byte { return ipFrame(t, outsideAddr, w.ip("e1"), p, opts...) }
	// A flow e1 starts (judged and recorded by from_container).
	start := func(p l4) {
		t.Helper()
		w.expect(t, w.coll.FromContainer, e1, e1, fromC, true, w.from(t, "e1", outsideAddr, p), none)
	}

	t.Run("host → container", func(t *testing.T) { toNet(t, e1, ipFrame(t, gw1, w.ip("e1"), tcp(40000, 22)), none) })
	t.Run("host address, looped back → container", func(t *testing.T) {
		w.ingress = 1 // lo
		defer func() { w.ingress = 0 }()
		toNet(t, e1, ipFrame(t, gw1, w.ip("e1"), tcp(40000, 22)), none)
	})
	// Another bridge's container, masqueraded to a host address by that
	// bridge's owner (Docker masquerades its networks' traffic to every
	// other interface) and routed in: judged as from the outside.
	t.Run("host address routed in from another interface → container: unsolicited", func(t *testing.T) {
		w.ingress = 4242 // not an interface of bpfnet's
		defer func() { w.ingress = 0 }()
		toNet(t, e1, ipFrame(t, gw1, w.ip("e1"), tcp(40000, 22)), unsolicited)
		// A reply to e1's own connection to a container there passes.
		const foreign = "198.18.30.2"
		w.expect(t, w.coll.FromContainer, e1, e1, fromC, true, w.from(t, "e1", foreign, tcp(40100, 7000)), none)
		toNet(t, e1, ipFrame(t, foreign, w.ip("e1"), tcpAck(7000, 40100)), none)
	})
	t.Run("host (uplink address) → internal container", func(t *testing.T) {
		toNet(t, w.eps["e5"].ifindex, ipFrame(t, uplinkAddr, w.ip("e5"), tcp(40000, 22)), none)
	})
	t.Run("outside → container, unsolicited tcp", func(t *testing.T) { toNet(t, e1, out(tcp(80, 40000)), unsolicited) })
	t.Run("outside → container, unsolicited udp", func(t *testing.T) { toNet(t, e1, out(udp(53, 40001)), unsolicited) })
	t.Run("outside → container, unsolicited ping", func(t *testing.T) { toNet(t, e1, out(echo(5)), unsolicited) })
	t.Run("outside → internal container", func(t *testing.T) {
		toNet(t, w.eps["e5"].ifindex, ipFrame(t, outsideAddr, w.ip("e5"), udp(53, 40000)), internal)
	})
	t.Run("tcp reply", func(t *testing.T) {
		start(tcp(40000, 80))
		toNet(t, e1, out(tcpAck(80, 40000)), none)
		toNet(t, e1, out(tcpAck(81, 40000)), unsolicited)
		toNet(t, e1, out(tcpAck(80, 40002)), unsolicited)
		toNet(t, e1, ipFrame(t, "198.19.0.9", w.ip("e1"), tcpAck(80, 40000)), unsolicited)
	})
	t.Run("udp reply, then expiry", func(t *testing.T) {
		start(udp(40010, 53))
		toNet(t, e1, out(udp(53, 40010)), none)
		time.Sleep(500 * time.Millisecond) // past ct_timeout_udp_stream (300 ms) without traffic
		toNet(t, e1, out(udp(53, 40010)), unsolicited)
		start(udp(40011, 53))
		time.Sleep(500 * time.Millisecond) // past ct_timeout_udp: never answered
		toNet(t, e1, out(udp(53, 40011)), unsolicited)
	})
	t.Run("echo reply", func(t *testing.T) {
		start(echo(4242))
		toNet(t, e1, out(echoReply(4242)), none)
		toNet(t, e1, out(echoReply(4243)), unsolicited)
		toNet(t, e1, out(echo(4242)), unsolicited) // a request is no reply
	})
	t.Run("ICMP error about a tracked flow", func(t *testing.T) {
		start(udp(40020, 9999))
		// Port unreachable quoting the datagram e1 sent.
		quoted := ipPacket(t, w.ip("e1"), outsideAddr, udp(40020, 9999))
		frag := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(3, 3)}
		inner := serialize(t, quoted...)
		frame := serialize(t, eth(hostMAC, mac(w.eps["e1"].mac), layers.EthernetTypeIPv4),
			&layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: net.ParseIP(outsideAddr).To4(), DstIP: net.ParseIP(w.ip("e1")).To4()},
			frag, gopacket.Payload(inner[:28]))
		toNet(t, e1, frame, none)
		// The same error about a flow nobody started.
		other := serialize(t, ipPacket(t, w.ip("e1"), outsideAddr, udp(40021, 9999))...)
		frame2 := serialize(t, eth(hostMAC, mac(w.eps["e1"].mac), layers.EthernetTypeIPv4),
			&layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: net.ParseIP(outsideAddr).To4(), DstIP: net.ParseIP(w.ip("e1")).To4()},
			&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(3, 3)}, gopacket.Payload(other[:28]))
		toNet(t, e1, frame2, unsolicited)
	})
	t.Run("fragmented reply", func(t *testing.T) {
		start(udp(40030, 53))
		toNet(t, e1, out(udp(53, 40030), firstFragment(77)), none)
		toNet(t, e1, out(udp(53, 40030), laterFragment(77)), none)
		// Another datagram's later fragment arriving before its first:
		// the sender replied to e1 just now, so it is e1's.
		toNet(t, e1, out(udp(53, 40030), laterFragment(78)), none)
		// From a sender that never replied to anyone here: unsolicited.
		toNet(t, e1, ipFrame(t, "198.19.0.77", w.ip("e1"), udp(53, 40030), laterFragment(79)), fragment)
	})
	t.Run("malformed from the outside", func(t *testing.T) {
		frame := out(tcp(80, 40000))[:14+20]
		frame[14] = 0x4f // header length 60 in a 20-byte packet
		toNet(t, e1, frame, malformed)
	})
	t.Run("IP options do not hide an unsolicited packet", func(t *testing.T) {
		toNet(t, e1, out(tcp(80, 40099), withOptions), unsolicited)
	})
}
