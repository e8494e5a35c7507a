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
	// in runs from_uplink, then (for a packet it passes) to_container on
	// the endpoint, as the host's routing would, and returns both verdicts
	// and the packet as delivered.
	in := func(t *testing.T, frame []byte, to *testEP) (uint32, uint32, uint32, []byte) {
		t.Helper()
		ret, mark, out := w.runData(t, w.coll.FromUplink, w.uplink, frame)
		if ret != actUnspc {
			return ret, mark, 0, out
		}
		w.ingress = w.uplink
		defer func() { w.ingress = 0 }()
		ret2, _ := w.run(t, w.coll.ToContainer, to.ifindex, out)
		return ret, mark, ret2, out
	}
	t.Run("reply translated back and let in", func(t *testing.T) {
		ret, mark, ret2, out := in(t, frame6From(t, outside, hostMAC, outsideAddr6, uplinkAddr6, udp(53, 40100)), e8)
		if ret != actUnspc || mark&testMark == 0 || ret2 != actOK {
			t.Fatalf("from_uplink %d (mark %#x), to_container %d; want TC_ACT_UNSPEC, marked, TC_ACT_OK", ret, mark, ret2)
		}
		if exp := frame6From(t, outside, hostMAC, outsideAddr6, "fd00:6::2", udp(53, 40100)); !bytes.Equal(out, exp) {
			t.Errorf("translated reply\n got %x\nwant %x", out, exp)
		}
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
		errTo := func(dst string, quote []byte) []byte {
			ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolICMPv6, SrcIP: net.ParseIP(router), DstIP: net.ParseIP(dst)}
			ic := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(2, 0)}
			ic.SetNetworkLayerForChecksum(ip)
			return serialize(t, eth(outside, hostMAC, layers.EthernetTypeIPv6), ip, ic, gopacket.Payload(append(append([]byte{}, mtu...), quote...)))
		}
		ret, _, ret2, out := in(t, errTo(uplinkAddr6, translated[14:]), e8)
		if ret != actUnspc || ret2 != actOK {
			t.Fatalf("from_uplink %d, to_container %d", ret, ret2)
		}
		if exp := errTo("fd00:6::2", orig[14:]); !bytes.Equal(out, exp) {
			t.Errorf("translated error\n got %x\nwant %x", out, exp)
		}
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
		reply := frame6From(t, outside, hostMAC, outsideAddr6, "fd00:9::2", tcpAck(80, 40200))
		if ret, mark, ret2, out := in(t, reply, e12); ret != actUnspc || mark&testMark == 0 || ret2 != actOK || !bytes.Equal(out, reply) {
			t.Errorf("from_uplink %d (mark %#x), to_container %d, changed %v", ret, mark, ret2, !bytes.Equal(out, reply))
		}
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
