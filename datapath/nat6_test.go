package datapath

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/bpfnet/bpfnet/api"
	"github.com/bpfnet/bpfnet/bpf"
	"github.com/bpfnet/bpfnet/network"
)

// IPv6 connection tracking and masquerade (NAT66 to the uplink's IPv6
// address), as translation_test.go's IPv4 tests: every translated packet
// is compared byte for byte with one gopacket builds, checksums computed
// from scratch, from the addresses and ports the translation must give.

// ip6Packet is ipPacket for IPv6 ("icmp" is ICMPv6: echo request 128,
// reply 129).
func ip6Packet(t testing.TB, src, dst string, p l4) []gopacket.SerializableLayer {
	ip := &layers.IPv6{Version: 6, HopLimit: 64, SrcIP: net.ParseIP(src), DstIP: net.ParseIP(dst)}
	payload := gopacket.Payload(append([]byte("bpfnet"), p.payload...))
	switch p.proto {
	case "tcp":
		ip.NextHeader = layers.IPProtocolTCP
		tl := &layers.TCP{SrcPort: layers.TCPPort(p.sport), DstPort: layers.TCPPort(p.dport), SYN: p.syn, ACK: p.ack, RST: p.rst, FIN: p.fin,
			Seq: p.seq, Ack: p.ackN, Window: 1000}
		tl.SetNetworkLayerForChecksum(ip)
		return []gopacket.SerializableLayer{ip, tl, payload}
	case "udp":
		ip.NextHeader = layers.IPProtocolUDP
		ul := &layers.UDP{SrcPort: layers.UDPPort(p.sport), DstPort: layers.UDPPort(p.dport)}
		ul.SetNetworkLayerForChecksum(ip)
		return []gopacket.SerializableLayer{ip, ul, payload}
	case "icmp":
		ip.NextHeader = layers.IPProtocolICMPv6
		ic := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(p.icmpType, 0)}
		ic.SetNetworkLayerForChecksum(ip)
		return []gopacket.SerializableLayer{ip, ic, &layers.ICMPv6Echo{Identifier: p.icmpID, SeqNumber: 1}, payload}
	}
	t.Fatalf("bad l4 %q", p.proto)
	return nil
}

// frame6From builds an IPv6 frame from src to dst (MACs: from → to).
func frame6From(t testing.TB, from, to net.HardwareAddr, src, dst string, p l4) []byte {
	return serialize(t, append([]gopacket.SerializableLayer{eth(from, to, layers.EthernetTypeIPv6)}, ip6Packet(t, src, dst, p)...)...)
}

// routed6 is a frame as the host delivers it into endpoint e: the
// bridge's MAC as source, hop limit 63 (which no checksum covers).
func routed6(t testing.TB, e *testEP, src, dst string, p l4) []byte {
	f := frame6From(t, bridgeMAC, mac(e.mac), src, dst, p)
	f[14+7] = 63
	return f
}

func echo6Req(id uint16) l4 { return l4{proto: "icmp", icmpType: 128, icmpID: id} }

// Source address and port (ICMPv6 echo: identifier) of an IPv6 frame
// without extension headers.
func srcIP6(frame []byte) string { return net.IP(frame[14+8 : 14+24]).String() }
func srcPort6(frame []byte) uint16 {
	if frame[14+6] == byte(layers.IPProtocolICMPv6) {
		return binary.BigEndian.Uint16(frame[14+40+4:])
	}
	return binary.BigEndian.Uint16(frame[14+40:])
}

// withPort is p with its source port (ICMPv6 echo: identifier) set.
func withPort(p l4, port uint16) l4 {
	if p.proto == "icmp" {
		p.icmpID = port
	} else {
		p.sport = port
	}
	return p
}

// TestIPv6Masquerade: a container's flows to the outside leave with the
// uplink's IPv6 address and, where free, their own port; a no-masquerade
// network's leave untouched; a port the host uses on that address is not
// given to a container.
func TestIPv6Masquerade(t *testing.T) {
	w := newWorld(t, nil)
	w.addDualStack(t)
	e8 := w.eps["e8"]
	sent := func(ep string, p l4) []byte {
		e := w.eps[ep]
		return frame6From(t, mac(e.mac), bridgeMAC, map[string]string{"e8": "fd00:6::2", "e9": "fd00:6::3", "e12": "fd00:9::2"}[ep], outsideAddr6, p)
	}
	check := func(t *testing.T, ep string, p l4, port uint16) {
		t.Helper()
		ret, out := w.outbound(t, sent(ep, p))
		if ret != actUnspc {
			t.Fatalf("return code %d, want TC_ACT_UNSPEC", ret)
		}
		if exp := frame6From(t, mac(w.eps[ep].mac), bridgeMAC, uplinkAddr6, outsideAddr6, withPort(p, port)); !bytes.Equal(out, exp) {
			t.Errorf("translated packet\n got %x\nwant %x", out, exp)
		}
	}
	t.Run("tcp keeps its port", func(t *testing.T) { check(t, "e8", tcp(40000, 80), 40000) })
	t.Run("same flow, same translation", func(t *testing.T) { check(t, "e8", tcpAck(40000, 80), 40000) })
	t.Run("udp keeps its port", func(t *testing.T) { check(t, "e8", udp(40001, 53), 40001) })
	t.Run("echo keeps its identifier", func(t *testing.T) { check(t, "e8", echo6Req(777), 777) })
	t.Run("colliding port gets another, valid checksums", func(t *testing.T) {
		ret, out := w.outbound(t, sent("e9", tcp(40000, 80)))
		if ret != actUnspc {
			t.Fatalf("return code %d", ret)
		}
		if srcIP6(out) != uplinkAddr6 || srcPort6(out) == 40000 || srcPort6(out) < 1024 {
			t.Errorf("translated to [%s]:%d, want %s and a free port ≥ 1024", srcIP6(out), srcPort6(out), uplinkAddr6)
		}
		if exp := reframe(t, out); !bytes.Equal(out, exp) {
			t.Errorf("checksums wrong:\n got %x\nwant %x", out, exp)
		}
	})
	t.Run("no-masquerade network is left alone", func(t *testing.T) {
		frame := sent("e12", tcp(40000, 80))
		if ret, out := w.outbound(t, frame); ret != actUnspc || !bytes.Equal(out, frame) {
			t.Errorf("return %d, packet changed: %x", ret, out)
		}
	})
	t.Run("a port the host uses is not given to a container", func(t *testing.T) {
		host := frame6From(t, hostMAC, bridgeMAC, uplinkAddr6, outsideAddr6, udp(45000, 53))
		if ret, out := w.outbound(t, host); ret != actUnspc || !bytes.Equal(out, host) {
			t.Fatalf("host packet changed or refused (%d)", ret)
		}
		ret, out := w.outbound(t, sent("e8", udp(45000, 53)))
		if ret != actUnspc || srcPort6(out) == 45000 {
			t.Errorf("container got the host's port 45000 (return %d, port %d)", ret, srcPort6(out))
		}
	})
	t.Run("no IPv6 address on the uplink", func(t *testing.T) {
		must(t, w.coll.Uplinks.Put(uint32(w.uplink), bpf.BpfnetUplinkInfo{Addr: be32(netip.MustParseAddr(uplinkAddr))}))
		defer func() {
			must(t, w.coll.Uplinks.Put(uint32(w.uplink), bpf.BpfnetUplinkInfo{Addr: be32(netip.MustParseAddr(uplinkAddr)), Addr6: in6(netip.MustParseAddr(uplinkAddr6))}))
		}()
		w.expect(t, w.coll.ToUplink, w.uplink, e8.ifindex, fromC, false, sent("e8", udp(40002, 53)), natExhausted)
	})
}

// TestIPv6ReverseTranslation: replies to a masqueraded flow, and ICMPv6
// errors about it, are translated back and let into the container that
// sent it; nothing else from the outside gets in.
func TestIPv6ReverseTranslation(t *testing.T) {
	w := newWorld(t, nil)
	w.addDualStack(t)
	e8, e11, e12 := w.eps["e8"], w.eps["e11"], w.eps["e12"]
	outside := mac("02:99:00:00:00:01")
	orig := frame6From(t, mac(e8.mac), bridgeMAC, "fd00:6::2", outsideAddr6, udp(40100, 53))
	if ret, _ := w.run(t, w.coll.FromContainer, e8.ifindex, orig); ret != actOK {
		t.Fatalf("from_container: %d", ret)
	}
	ret, translated := w.outbound(t, orig)
	if ret != actUnspc || srcPort6(translated) != 40100 {
		t.Fatalf("outbound: %d %x", ret, translated)
	}
	// deliver runs from_uplink on a frame from the outside, which must
	// deliver it straight into the container as want (fast path); want,
	// handed over by the host's router instead (the normal path), must
	// pass to_container too.
	deliver := func(t *testing.T, frame []byte, to *testEP, want []byte) {
		t.Helper()
		w.redirected(t, w.coll.FromUplink, w.uplink, frame, want, to)
		w.ingress = w.uplink
		defer func() { w.ingress = 0 }()
		if ret, _ := w.run(t, w.coll.ToContainer, to.ifindex, want); ret != actOK {
			t.Errorf("to_container (the normal path): %d, want TC_ACT_OK", ret)
		}
	}
	t.Run("reply translated back and delivered", func(t *testing.T) {
		deliver(t, frame6From(t, outside, hostMAC, outsideAddr6, uplinkAddr6, udp(53, 40100)), e8,
			routed6(t, e8, outsideAddr6, "fd00:6::2", udp(53, 40100)))
	})
	t.Run("listed by nat ls", func(t *testing.T) {
		entries, err := w.nat().entries()
		must(t, err)
		want := api.NATEntry{Kind: "masquerade", Proto: "udp", Container: "[fd00:6::2]:40100", Translated: "[2001:db8:19::1]:40100",
			Remote: "[2001:db8:19::2]:53", State: "replied"}
		for _, e := range entries {
			e.AgeSeconds, e.IdleSeconds = 0, 0
			if e == want {
				return
			}
		}
		t.Errorf("translations %+v, want one %+v", entries, want)
	})
	t.Run("ICMPv6 error about the flow", func(t *testing.T) {
		// A router's packet too big quotes the datagram as it saw it
		// (translated); the container must get it quoting what it sent.
		router := "2001:db8:19::fe"
		mtu := []byte{0, 0, 0x05, 0x00}
		errTo := func(e *layers.Ethernet, hop uint8, dst string, quote []byte) []byte {
			ip := &layers.IPv6{Version: 6, HopLimit: hop, NextHeader: layers.IPProtocolICMPv6, SrcIP: net.ParseIP(router), DstIP: net.ParseIP(dst)}
			ic := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(2, 0)}
			ic.SetNetworkLayerForChecksum(ip)
			return serialize(t, e, ip, ic, gopacket.Payload(append(append([]byte{}, mtu...), quote...)))
		}
		deliver(t, errTo(eth(outside, hostMAC, layers.EthernetTypeIPv6), 64, uplinkAddr6, translated[14:]), e8,
			errTo(eth(bridgeMAC, mac(e8.mac), layers.EthernetTypeIPv6), 63, "fd00:6::2", orig[14:]))
	})
	t.Run("the host's error about a reply it forwarded", func(t *testing.T) {
		// The host cannot deliver the translated-back reply (say, a smaller
		// MTU towards the container) and tells the remote: the quote must
		// be the reply as the remote sent it, to the uplink's address.
		errFrom := func(quote []byte) []byte {
			ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolICMPv6, SrcIP: net.ParseIP(uplinkAddr6), DstIP: net.ParseIP(outsideAddr6)}
			ic := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(2, 0)}
			ic.SetNetworkLayerForChecksum(ip)
			return serialize(t, eth(hostMAC, outside, layers.EthernetTypeIPv6), ip, ic, gopacket.Payload(append([]byte{0, 0, 0x05, 0x00}, quote...)))
		}
		forwarded := frame6From(t, outside, hostMAC, outsideAddr6, "fd00:6::2", udp(53, 40100))
		onWire := frame6From(t, outside, hostMAC, outsideAddr6, uplinkAddr6, udp(53, 40100))
		ret, out := w.outbound(t, errFrom(forwarded[14:]))
		if ret != actUnspc {
			t.Fatalf("return code %d", ret)
		}
		if exp := errFrom(onWire[14:]); !bytes.Equal(out, exp) {
			t.Errorf("host's error\n got %x\nwant %x", out, exp)
		}
	})
	t.Run("an error about the flow sent to another container", func(t *testing.T) {
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolICMPv6, SrcIP: net.ParseIP(outsideAddr6), DstIP: net.ParseIP("fd00:6::3")}
		ic := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(1, 4)}
		ic.SetNetworkLayerForChecksum(ip)
		frame := serialize(t, eth(outside, hostMAC, layers.EthernetTypeIPv6), ip, ic, gopacket.Payload(append(make([]byte, 4), orig[14:]...)))
		w.expect(t, w.coll.FromUplink, w.uplink, w.eps["e9"].ifindex, toC, false, frame, unsolicited)
	})
	t.Run("unsolicited to the masquerade address: the host's", func(t *testing.T) {
		frame := frame6From(t, outside, hostMAC, outsideAddr6, uplinkAddr6, udp(53, 40999))
		if ret, _, out := w.runData(t, w.coll.FromUplink, w.uplink, frame); ret != actUnspc || !bytes.Equal(out, frame) {
			t.Errorf("return %d, changed %v", ret, !bytes.Equal(out, frame))
		}
	})
	t.Run("a new connection is no reply", func(t *testing.T) {
		// A SYN to the masquerade address on the flow's port: not a reply
		// to a UDP flow, and left to the host.
		frame := frame6From(t, outside, hostMAC, outsideAddr6, uplinkAddr6, tcp(53, 40100))
		if ret, _, out := w.runData(t, w.coll.FromUplink, w.uplink, frame); ret != actUnspc || !bytes.Equal(out, frame) {
			t.Errorf("return %d, changed %v", ret, !bytes.Equal(out, frame))
		}
	})
	t.Run("unsolicited to a container address", func(t *testing.T) {
		frame := frame6From(t, outside, hostMAC, outsideAddr6, "fd00:6::2", tcp(80, 40000))
		w.expect(t, w.coll.FromUplink, w.uplink, e8.ifindex, toC, false, frame, unsolicited)
		w.ingress = w.uplink
		defer func() { w.ingress = 0 }()
		w.expect(t, w.coll.ToContainer, e8.ifindex, e8.ifindex, toC, true, frame, unsolicited)
	})
	t.Run("spoofed sources from the outside", func(t *testing.T) {
		for _, src := range []string{uplinkAddr6, "fd00:6::1", "fd00:7::2", "::1", "ff02::1"} {
			w.expect(t, w.coll.FromUplink, w.uplink, e8.ifindex, toC, false, frame6From(t, outside, hostMAC, src, "fd00:6::2", udp(53, 40100)), spoof)
		}
	})
	t.Run("to an internal network", func(t *testing.T) {
		w.expect(t, w.coll.FromUplink, w.uplink, e11.ifindex, toC, false, frame6From(t, outside, hostMAC, outsideAddr6, "fd00:8::2", tcp(80, 40000)), internal)
	})
	t.Run("reply to a no-masquerade container", func(t *testing.T) {
		if ret, _ := w.run(t, w.coll.FromContainer, e12.ifindex, frame6From(t, mac(e12.mac), bridgeMAC, "fd00:9::2", outsideAddr6, tcp(40200, 80))); ret != actOK {
			t.Fatalf("from_container: %d", ret)
		}
		deliver(t, frame6From(t, outside, hostMAC, outsideAddr6, "fd00:9::2", tcpAck(80, 40200)), e12,
			routed6(t, e12, outsideAddr6, "fd00:9::2", tcpAck(80, 40200)))
		w.expect(t, w.coll.FromUplink, w.uplink, e12.ifindex, toC, false, frame6From(t, outside, hostMAC, outsideAddr6, "fd00:9::2", tcpAck(80, 40201)), unsolicited)
	})
}

// TestIPv6PurgeEndpoint: removing an endpoint removes its IPv6 flows and
// translations, and only its.
func TestIPv6PurgeEndpoint(t *testing.T) {
	w := newWorld(t, nil)
	w.addDualStack(t)
	for _, ep := range []string{"e8", "e9"} {
		e := w.eps[ep]
		src := map[string]string{"e8": "fd00:6::2", "e9": "fd00:6::3"}[ep]
		frame := frame6From(t, mac(e.mac), bridgeMAC, src, outsideAddr6, udp(40300, 53))
		if ret, _ := w.run(t, w.coll.FromContainer, e.ifindex, frame); ret != actOK {
			t.Fatalf("%s from_container: %d", ep, ret)
		}
		if ret, _ := w.outbound(t, frame); ret != actUnspc {
			t.Fatalf("%s to_uplink: %d", ep, ret)
		}
	}
	count := func() (ct, fwd, rev map[string]int) {
		ct, fwd, rev = map[string]int{}, map[string]int{}, map[string]int{}
		var k bpf.BpfnetTuple6
		var c bpf.BpfnetCtEntry
		it := w.coll.Conntrack6.Iterate()
		for it.Next(&k, &c) {
			ct[addrOf6(k.Saddr).String()]++
		}
		must(t, it.Err())
		var n bpf.BpfnetNatEntry6
		it = w.coll.NatFwd6.Iterate()
		for it.Next(&k, &n) {
			fwd[addrOf6(k.Saddr).String()]++
		}
		must(t, it.Err())
		it = w.coll.NatRev6.Iterate()
		for it.Next(&k, &n) {
			rev[addrOf6(n.Addr).String()]++
		}
		must(t, it.Err())
		return
	}
	ct, fwd, rev := count()
	for _, a := range []string{"fd00:6::2", "fd00:6::3"} {
		if ct[a] != 1 || fwd[a] != 1 || rev[a] != 1 {
			t.Fatalf("before: %s has %d flows, %d+%d translation halves; want 1, 1+1", a, ct[a], fwd[a], rev[a])
		}
	}
	must(t, w.nat().purge(netip.MustParseAddr(w.eps["e8"].ip), netip.MustParseAddr("fd00:6::2")))
	ct, fwd, rev = count()
	if ct["fd00:6::2"]+fwd["fd00:6::2"]+rev["fd00:6::2"] != 0 {
		t.Errorf("after: fd00:6::2 still has %d flows, %d+%d translation halves", ct["fd00:6::2"], fwd["fd00:6::2"], rev["fd00:6::2"])
	}
	if ct["fd00:6::3"] != 1 || fwd["fd00:6::3"] != 1 || rev["fd00:6::3"] != 1 {
		t.Errorf("after: the neighbour's entries went too: %d flows, %d+%d halves", ct["fd00:6::3"], fwd["fd00:6::3"], rev["fd00:6::3"])
	}
}

// publish6 adds a port published over IPv6 (host address "::": every
// one) of a dual-stack endpoint, and marks it as publishing. Its network's
// gateway is ::1 of its /64.
func (w *world) publish6(t *testing.T, ep, addr6 string, m network.PortMapping, hostIP string) {
	t.Helper()
	e := w.eps[ep]
	a := netip.MustParseAddr(addr6)
	gateway := netip.PrefixFrom(a, 64).Masked().Addr().Next()
	key := bpf.BpfnetPort6Key{Addr: in6(netip.MustParseAddr(hostIP)), Port: port(m.HostPort), Proto: protoNumber(m.Proto)}
	must(t, w.coll.Ports6.Put(key, bpf.BpfnetPortBackend6{Addr: in6(a), Port: port(m.Port),
		Ifindex: uint32(e.ifindex), NetId: uint32(w.nets[e.net]), Slot: e.slot, Gateway: in6(gateway)}))
	var info bpf.BpfnetEndpointInfo
	must(t, w.coll.EpByIfindex.Lookup(uint32(e.ifindex), &info))
	info.Flags |= uint8(bpf.BpfnetEndpointFlagEP_F_PUBLISHES)
	must(t, w.coll.EpByIfindex.Put(uint32(e.ifindex), info))
}

// TestIPv6PublishedPortFromOutside: a connection from the outside to a
// port published over IPv6 reaches its endpoint (destination translated,
// Docker's DNAT), the endpoint's replies leave with the host address and
// port the peer used; an unpublished port stays the host's, and a
// container port is not reachable directly.
func TestIPv6PublishedPortFromOutside(t *testing.T) {
	w := newWorld(t, nil)
	w.addDualStack(t)
	e8 := w.eps["e8"]
	w.publish6(t, "e8", "fd00:6::2", pm("tcp", "::", 8080, 80), "::")
	w.publish6(t, "e8", "fd00:6::2", pm("udp", "::", 5353, 53), "::")
	w.publish6(t, "e8", "fd00:6::2", pm("tcp", "::", 8443, 443), uplinkAddr6)
	outside := mac("02:99:00:00:00:01")
	in := func(dst string, p l4) []byte { return frame6From(t, outside, hostMAC, outsideAddr6, dst, p) }
	// open sends p to dst:hostPort from the outside and checks that it is
	// translated to the endpoint's port and let in; its reply goes back as
	// from dst:hostPort.
	open := func(t *testing.T, dst string, p, inside, reply, out l4) {
		t.Helper()
		want := routed6(t, e8, outsideAddr6, "fd00:6::2", inside)
		w.redirected(t, w.coll.FromUplink, w.uplink, in(dst, p), want, e8)
		w.ingress = w.uplink
		ret2, _ := w.run(t, w.coll.ToContainer, e8.ifindex, want)
		w.ingress = 0
		if ret2 != actOK {
			t.Errorf("to_container (the normal path) %d, want TC_ACT_OK", ret2)
		}
		sent := frame6From(t, mac(e8.mac), bridgeMAC, "fd00:6::2", outsideAddr6, reply)
		if ret, _ := w.run(t, w.coll.FromContainer, e8.ifindex, sent); ret != actOK {
			t.Fatalf("reply: from_container %d", ret)
		}
		ret, back := w.outbound(t, sent)
		if exp := frame6From(t, mac(e8.mac), bridgeMAC, dst, outsideAddr6, out); ret != actUnspc || !bytes.Equal(back, exp) {
			t.Errorf("reply: to_uplink %d\n got %x\nwant %x", ret, back, exp)
		}
	}
	t.Run("tcp to the uplink address", func(t *testing.T) {
		open(t, uplinkAddr6, tcp(40000, 8080), tcp(40000, 80), tcpSynAck(80, 40000), tcpSynAck(8080, 40000))
	})
	t.Run("udp to another host address", func(t *testing.T) {
		open(t, extraAddr6, udp(40001, 5353), udp(40001, 53), udp(53, 40001), udp(5353, 40001))
	})
	t.Run("port published on one address", func(t *testing.T) {
		open(t, uplinkAddr6, tcp(40002, 8443), tcp(40002, 443), tcpSynAck(443, 40002), tcpSynAck(8443, 40002))
		frame := in(extraAddr6, tcp(40003, 8443)) // not published there: the host's
		if ret, _, out := w.runData(t, w.coll.FromUplink, w.uplink, frame); ret != actUnspc || !bytes.Equal(out, frame) {
			t.Errorf("return %d, changed %v", ret, !bytes.Equal(out, frame))
		}
	})
	t.Run("unpublished port is the host's", func(t *testing.T) {
		frame := in(uplinkAddr6, tcp(40004, 9999))
		if ret, _, out := w.runData(t, w.coll.FromUplink, w.uplink, frame); ret != actUnspc || !bytes.Equal(out, frame) {
			t.Errorf("return %d, changed %v", ret, !bytes.Equal(out, frame))
		}
	})
	t.Run("a bare ACK opens nothing", func(t *testing.T) {
		frame := in(uplinkAddr6, tcpAck(40005, 8080))
		if ret, _, out := w.runData(t, w.coll.FromUplink, w.uplink, frame); ret != actUnspc || !bytes.Equal(out, frame) {
			t.Errorf("return %d, changed %v", ret, !bytes.Equal(out, frame))
		}
	})
	t.Run("a fragmented datagram: its first fragment opens it, the later follows", func(t *testing.T) {
		rFirst, rLater := udpFragments6(t, outside, outsideAddr6, uplinkAddr6, 40007, 5353, 0x77)
		wFirst, wLater := udpFragments6(t, outside, outsideAddr6, "fd00:6::2", 40007, 53, 0x77)
		w.slowIn(t, e8, rFirst, wFirst)
		w.slowIn(t, e8, rLater, wLater)
	})
	t.Run("straight to the container port is still unsolicited", func(t *testing.T) {
		w.expect(t, w.coll.FromUplink, w.uplink, e8.ifindex, toC, false, in("fd00:6::2", tcp(40006, 80)), unsolicited)
	})
	t.Run("masquerade does not hand out a published port", func(t *testing.T) {
		e9 := w.eps["e9"]
		ret, out := w.outbound(t, frame6From(t, mac(e9.mac), bridgeMAC, "fd00:6::3", outsideAddr6, tcp(8080, 80)))
		if ret != actUnspc || srcPort6(out) == 8080 {
			t.Errorf("return %d, translated port %d (published: 8080)", ret, srcPort6(out))
		}
	})
}

// TestIPv6PublishedPortHairpin: a container reaching a port published
// over IPv6 on a host address gets the verdict Docker's FORWARD chain
// gives after DNAT, and the connection delivered straight into the
// endpoint (its replies straight back); reaching its own port, it is given
// its gateway as source, as Docker's hairpin MASQUERADE does.
func TestIPv6PublishedPortHairpin(t *testing.T) {
	w := newWorld(t, nil)
	w.addDualStack(t)
	e8, e9, e10, e11 := w.eps["e8"], w.eps["e9"], w.eps["e10"], w.eps["e11"]
	w.publish6(t, "e8", "fd00:6::2", pm("tcp", "::", 8080, 80), "::")
	w.publish6(t, "e10", "fd00:7::2", pm("tcp", "::", 7070, 70), "::")
	addr := map[*testEP]string{e8: "fd00:6::2", e9: "fd00:6::3", e10: "fd00:7::2", e11: "fd00:8::2"}
	from := func(e *testEP, dst string, p l4) []byte { return frame6From(t, mac(e.mac), bridgeMAC, addr[e], dst, p) }
	routed := func(e *testEP, src string, p l4) []byte { return routed6(t, e, src, addr[e], p) }
	hop := func(t *testing.T, src *testEP, frame, want []byte, to *testEP) {
		t.Helper()
		w.redirected(t, w.coll.FromContainer, src.ifindex, frame, want, to)
	}
	t.Run("neighbour through the gateway: source kept", func(t *testing.T) {
		hop(t, e9, from(e9, "fd00:6::1", tcp(41000, 8080)), routed(e8, "fd00:6::3", tcp(41000, 80)), e8)
		hop(t, e8, from(e8, "fd00:6::3", tcpSynAck(80, 41000)), routed(e9, "fd00:6::1", tcpSynAck(8080, 41000)), e9)
	})
	t.Run("neighbour through the uplink address", func(t *testing.T) {
		hop(t, e9, from(e9, uplinkAddr6, tcp(41001, 8080)), routed(e8, "fd00:6::3", tcp(41001, 80)), e8)
		hop(t, e8, from(e8, "fd00:6::3", tcpSynAck(80, 41001)), routed(e9, uplinkAddr6, tcpSynAck(8080, 41001)), e9)
	})
	t.Run("own port: source becomes the gateway", func(t *testing.T) {
		hop(t, e8, from(e8, "fd00:6::1", tcp(41002, 8080)), routed(e8, "fd00:6::1", tcp(41002, 80)), e8)
		hop(t, e8, from(e8, "fd00:6::1", tcpSynAck(80, 41002)), routed(e8, "fd00:6::1", tcpSynAck(8080, 41002)), e8)
	})
	t.Run("other network: isolation", func(t *testing.T) {
		w.expect(t, w.coll.FromContainer, e10.ifindex, e10.ifindex, fromC, true, from(e10, "fd00:7::1", tcp(41003, 8080)), isolation)
	})
	t.Run("internal network: internal", func(t *testing.T) {
		w.expect(t, w.coll.FromContainer, e11.ifindex, e11.ifindex, fromC, true, from(e11, "fd00:8::1", tcp(41004, 8080)), internal)
	})
	t.Run("icc off, own port: icc (Docker's FORWARD -i br -o br DROP)", func(t *testing.T) {
		w.expect(t, w.coll.FromContainer, e10.ifindex, e10.ifindex, fromC, true, from(e10, "fd00:7::1", tcp(41005, 7070)), icc)
	})
	t.Run("unpublished port on a host address: the host's", func(t *testing.T) {
		w.expect(t, w.coll.FromContainer, e9.ifindex, e9.ifindex, fromC, true, from(e9, "fd00:6::1", tcp(41006, 8081)), none)
	})
}

// TestIPv6FastLocal: a neighbour's IPv6 packet addressed to its MAC goes
// straight into its namespace unchanged, as the bridge would deliver it;
// one to another network's endpoint is still judged (isolation).
func TestIPv6FastLocal(t *testing.T) {
	w := newWorld(t, nil)
	w.addDualStack(t)
	e8, e9, e10 := w.eps["e8"], w.eps["e9"], w.eps["e10"]
	frame := frame6From(t, mac(e8.mac), mac(e9.mac), "fd00:6::2", "fd00:6::3", tcp(40000, 80))
	w.redirected(t, w.coll.FromContainer, e8.ifindex, frame, frame, e9)
	w.expect(t, w.coll.FromContainer, e8.ifindex, e8.ifindex, fromC, true,
		frame6From(t, mac(e8.mac), mac(e10.mac), "fd00:6::2", "fd00:7::2", tcp(40000, 80)), isolation)
}

// udpFragments6 is a UDP datagram from src to dst built whole by gopacket
// (its checksum over all of it), then cut in two fragments as the sender's
// kernel would: the first with the UDP header and 8 bytes, the later with
// the rest, both with fragment identification id.
func udpFragments6(t *testing.T, from net.HardwareAddr, src, dst string, sport, dport uint16, id uint32) (first, later []byte) {
	whole := frame6From(t, from, bridgeMAC, src, dst, l4{proto: "udp", sport: sport, dport: dport, payload: make([]byte, 40)})
	u := whole[14+40:]
	frag := func(offset uint16, more bool, chunk []byte) []byte {
		h := fragHeader(layers.IPProtocolUDP, offset, more)
		binary.BigEndian.PutUint32(h[4:], id)
		ip := &layers.IPv6{Version: 6, NextHeader: layers.IPProtocolIPv6Fragment, HopLimit: 64, SrcIP: net.ParseIP(src), DstIP: net.ParseIP(dst)}
		return serialize(t, eth(from, bridgeMAC, layers.EthernetTypeIPv6), ip, gopacket.Payload(append(h, chunk...)))
	}
	return frag(0, true, u[:16]), frag(2, false, u[16:])
}

// TestIPv6Fragments: a masqueraded datagram's later fragments follow its
// first, both ways: translated like it, let in like it; a later fragment
// that comes first follows the remote's last reply; one nobody asked for
// is dropped (fragment).
func TestIPv6Fragments(t *testing.T) {
	w := newWorld(t, nil)
	w.addDualStack(t)
	e8 := w.eps["e8"]
	own, outside := mac(e8.mac), mac("02:99:00:00:00:01")
	first, later := udpFragments6(t, own, "fd00:6::2", outsideAddr6, 40500, 53, 0x1001)
	t.Run("out: the later fragment translated like the first", func(t *testing.T) {
		if ret, _ := w.run(t, w.coll.FromContainer, e8.ifindex, first); ret != actOK {
			t.Fatalf("from_container: %d", ret)
		}
		wantFirst, wantLater := udpFragments6(t, own, uplinkAddr6, outsideAddr6, 40500, 53, 0x1001)
		for i, f := range [][2][]byte{{first, wantFirst}, {later, wantLater}} {
			ret, out := w.outbound(t, f[0])
			if ret != actUnspc || !bytes.Equal(out, f[1]) {
				t.Errorf("fragment %d: to_uplink %d\n got %x\nwant %x", i, ret, out, f[1])
			}
		}
	})
	t.Run("out: a later fragment without its first", func(t *testing.T) {
		_, stray := udpFragments6(t, own, "fd00:6::2", outsideAddr6, 40501, 53, 0x1002)
		w.expect(t, w.coll.ToUplink, w.uplink, e8.ifindex, fromC, false, stray, fragment)
	})
	in := func(t *testing.T, frame, want []byte) { t.Helper(); w.slowIn(t, e8, frame, want) }
	t.Run("in: the reply's later fragment follows its first", func(t *testing.T) {
		rFirst, rLater := udpFragments6(t, outside, outsideAddr6, uplinkAddr6, 53, 40500, 0x2001)
		wFirst, wLater := udpFragments6(t, outside, outsideAddr6, "fd00:6::2", 53, 40500, 0x2001)
		in(t, rFirst, wFirst)
		in(t, rLater, wLater)
	})
	t.Run("in: a later fragment before its first follows the last reply", func(t *testing.T) {
		_, rLater := udpFragments6(t, outside, outsideAddr6, uplinkAddr6, 53, 40500, 0x2002)
		_, wLater := udpFragments6(t, outside, outsideAddr6, "fd00:6::2", 53, 40500, 0x2002)
		in(t, rLater, wLater)
	})
	t.Run("in: a later fragment nobody asked for", func(t *testing.T) {
		_, stray := udpFragments6(t, outside, "2001:db8:19::77", "fd00:6::2", 53, 40500, 0x2003)
		w.expect(t, w.coll.FromUplink, w.uplink, e8.ifindex, toC, false, stray, fragment)
	})
}

// The same for IPv6 on a real host, where whole replies take the fast
// path into the container and nothing else records the peer: a reply's
// later fragment that comes first goes to the container the sender
// replied to (TestEarlyFragmentTranslatedBack for IPv4).
func TestIPv6EarlyFragmentAfterWholeReplies(t *testing.T) {
	w := newWorld(t, nil)
	w.addDualStack(t)
	e8 := w.eps["e8"]
	own, outside := mac(e8.mac), mac("02:99:00:00:00:01")
	sent := frame6From(t, own, bridgeMAC, "fd00:6::2", outsideAddr6, udp(40600, 53))
	if ret, _ := w.run(t, w.coll.FromContainer, e8.ifindex, sent); ret != actOK {
		t.Fatalf("from_container: %d", ret)
	}
	if ret, out := w.outbound(t, sent); ret != actUnspc || !bytes.Equal(out, frame6From(t, own, bridgeMAC, uplinkAddr6, outsideAddr6, udp(40600, 53))) {
		t.Fatalf("to_uplink %d, translated\n%x", ret, out)
	}
	if ret, _, _ := w.runData(t, w.coll.FromUplink, w.uplink, frame6From(t, outside, bridgeMAC, outsideAddr6, uplinkAddr6, udp(53, 40600))); ret != actRedirect {
		t.Fatalf("the reply: from_uplink %d, want TC_ACT_REDIRECT", ret)
	}
	_, rLater := udpFragments6(t, outside, outsideAddr6, uplinkAddr6, 53, 40600, 0x2101)
	_, wLater := udpFragments6(t, outside, outsideAddr6, "fd00:6::2", 53, 40600, 0x2101)
	w.slowIn(t, e8, rLater, wLater)
}
