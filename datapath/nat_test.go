package datapath

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/bpfnet/bpfnet/bpf"
)

// Translation tests: the packet a program leaves is compared byte for
// byte with the packet gopacket serialises, with freshly computed
// checksums, from the addresses and ports the translation must give. The
// BPF side fixes checksums incrementally; gopacket computes them from
// scratch, so a wrong fix-up cannot go unnoticed.

const actRedirect = 7

// reframe decodes a frame and re-serialises it with recomputed checksums:
// the frame as it must be if its checksums are right (IPv4 or IPv6).
func reframe(t *testing.T, frame []byte) []byte {
	t.Helper()
	pkt := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	var ls []gopacket.SerializableLayer
	var ip gopacket.NetworkLayer
	for _, l := range pkt.Layers() {
		switch l := l.(type) {
		case *layers.IPv4:
			ip = l
		case *layers.IPv6:
			ip = l
		case *layers.TCP:
			must(t, l.SetNetworkLayerForChecksum(ip))
		case *layers.UDP:
			must(t, l.SetNetworkLayerForChecksum(ip))
		case *layers.ICMPv6:
			must(t, l.SetNetworkLayerForChecksum(ip))
		}
		if l, ok := l.(gopacket.SerializableLayer); ok {
			ls = append(ls, l)
		}
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// srcPort returns the source port (ICMP: identifier) of an IPv4 frame.
func srcPort(frame []byte) uint16 {
	ihl := int(frame[14]&0x0f) * 4
	if frame[14+9] == 1 {
		return binary.BigEndian.Uint16(frame[14+ihl+4:])
	}
	return binary.BigEndian.Uint16(frame[14+ihl:])
}

func srcIP(frame []byte) string { return net.IP(frame[14+12 : 14+16]).String() }

// outbound runs to_uplink on a frame a container sent (as routed to the
// uplink) and returns the translated frame.
func (w *world) outbound(t *testing.T, frame []byte) (uint32, []byte) {
	t.Helper()
	ret, _, out := w.runData(t, w.coll.ToUplink, w.uplink, frame)
	return ret, out
}

// slowIn runs from_uplink on a frame it must translate back (to want)
// and leave to the host's stack, marked (fragments take no fast path),
// then the receiver's to_container on the result, as the host routes it
// in, which must let it in.
func (w *world) slowIn(t *testing.T, to *testEP, frame, want []byte) {
	t.Helper()
	ret, mark, out := w.runData(t, w.coll.FromUplink, w.uplink, frame)
	if ret != actUnspc || mark&testMark == 0 || !bytes.Equal(out, want) {
		t.Fatalf("from_uplink %d (mark %#x)\n got %x\nwant %x", ret, mark, out, want)
	}
	w.ingress = w.uplink
	defer func() { w.ingress = 0 }()
	if ret, _ := w.run(t, w.coll.ToContainer, to.ifindex, out); ret != actOK {
		t.Errorf("to_container %d, want TC_ACT_OK", ret)
	}
}

func TestSourceTranslation(t *testing.T) {
	w := newWorld(t, nil)
	sent := func(ep string, p l4) []byte { return w.from(t, ep, outsideAddr, p) }
	// want builds the frame as translated: same as sent, with the source
	// address (and port) replaced, checksums computed from scratch.
	want := func(ep string, p l4, src string, port uint16) []byte {
		p2 := p
		if p.proto == "icmp" {
			p2.icmpID = port
		} else {
			p2.sport = port
		}
		e := w.eps[ep]
		return serialize(t, append([]gopacket.SerializableLayer{eth(mac(e.mac), hostMAC, layers.EthernetTypeIPv4)}, ipPacket(t, src, outsideAddr, p2)...)...)
	}
	check := func(t *testing.T, ep string, p l4, src string, port uint16) {
		t.Helper()
		ret, out := w.outbound(t, sent(ep, p))
		if ret != actUnspc {
			t.Fatalf("return code %d, want TC_ACT_UNSPEC", ret)
		}
		if exp := want(ep, p, src, port); !bytes.Equal(out, exp) {
			t.Errorf("translated packet\n got %x\nwant %x", out, exp)
		}
	}
	t.Run("tcp keeps its port", func(t *testing.T) { check(t, "e1", tcp(40000, 80), uplinkAddr, 40000) })
	t.Run("same flow, same translation", func(t *testing.T) { check(t, "e1", tcpAck(40000, 80), uplinkAddr, 40000) })
	t.Run("udp keeps its port", func(t *testing.T) { check(t, "e1", udp(40001, 53), uplinkAddr, 40001) })
	t.Run("icmp echo keeps its identifier", func(t *testing.T) { check(t, "e1", echo(777), uplinkAddr, 777) })
	t.Run("host_ipv4 network", func(t *testing.T) { check(t, "e6", tcp(40000, 80), extraAddr, 40000) })
	t.Run("the host's packet from a gateway address: masqueraded (Docker's -s SUBNET rule)", func(t *testing.T) {
		// No endpoint has the address: its network is the subnet's.
		frame := serialize(t, append([]gopacket.SerializableLayer{eth(hostMAC, mac("02:99:00:00:00:01"), layers.EthernetTypeIPv4)}, ipPacket(t, gw1, outsideAddr, udp(40050, 53))...)...)
		want := serialize(t, append([]gopacket.SerializableLayer{eth(hostMAC, mac("02:99:00:00:00:01"), layers.EthernetTypeIPv4)}, ipPacket(t, uplinkAddr, outsideAddr, udp(40050, 53))...)...)
		if ret, out := w.outbound(t, frame); ret != actUnspc || !bytes.Equal(out, want) {
			t.Errorf("return %d\n got %x\nwant %x", ret, out, want)
		}
	})
	t.Run("no-masquerade network is left alone", func(t *testing.T) {
		frame := sent("e7", tcp(40000, 80))
		if ret, out := w.outbound(t, frame); ret != actUnspc || !bytes.Equal(out, frame) {
			t.Errorf("return %d, packet changed: %x", ret, out)
		}
	})
	t.Run("colliding port gets another, valid checksums", func(t *testing.T) {
		// e2 uses the port e1 holds, to the same peer.
		ret, out := w.outbound(t, sent("e2", tcp(40000, 80)))
		if ret != actUnspc {
			t.Fatalf("return code %d", ret)
		}
		if srcIP(out) != uplinkAddr || srcPort(out) == 40000 || srcPort(out) < 1024 {
			t.Errorf("translated to %s:%d, want %s and a free port ≥ 1024", srcIP(out), srcPort(out), uplinkAddr)
		}
		if exp := reframe(t, out); !bytes.Equal(out, exp) {
			t.Errorf("checksums wrong:\n got %x\nwant %x", out, exp)
		}
	})
	t.Run("a port the host uses is not given to a container", func(t *testing.T) {
		host := ipFrame(t, uplinkAddr, outsideAddr, udp(45000, 53))
		if ret, out := w.outbound(t, host); ret != actUnspc || !bytes.Equal(out, host) {
			t.Fatalf("host packet changed or refused (%d)", ret)
		}
		ret, out := w.outbound(t, sent("e1", udp(45000, 53)))
		if ret != actUnspc || srcPort(out) == 45000 {
			t.Errorf("container got the host's port 45000 (return %d, port %d)", ret, srcPort(out))
		}
	})
}

func TestReverseTranslation(t *testing.T) {
	w := newWorld(t, nil)
	e1 := w.eps["e1"]
	// The container's flow goes out first and keeps its port.
	orig := w.from(t, "e1", outsideAddr, udp(40100, 53))
	if ret, out := w.outbound(t, orig); ret != actUnspc || srcPort(out) != 40100 {
		t.Fatalf("outbound: %d %x", ret, out)
	}
	// from_container records the flow (the conntrack entry replies need).
	if ret, _ := w.run(t, w.coll.FromContainer, e1.ifindex, orig); ret != actOK {
		t.Fatalf("from_container: %d", ret)
	}
	reply := func(p l4, opts ...ipOpt) []byte {
		return serialize(t, append([]gopacket.SerializableLayer{eth(mac("02:99:00:00:00:01"), mac("02:98:00:00:00:01"), layers.EthernetTypeIPv4)},
			ipPacket(t, outsideAddr, uplinkAddr, p, opts...)...)...)
	}
	t.Run("reply delivered straight into the container", func(t *testing.T) {
		before := w.counters(t, e1.ifindex, toC)
		ret, _, out := w.runData(t, w.coll.FromUplink, w.uplink, reply(udp(53, 40100)))
		if ret != actRedirect {
			t.Fatalf("return code %d, want TC_ACT_REDIRECT", ret)
		}
		// As the bridge delivers it: container MAC, gateway (bridge) MAC,
		// TTL one less, destination translated back.
		exp := serialize(t, append([]gopacket.SerializableLayer{eth(bridgeMAC, mac(e1.mac), layers.EthernetTypeIPv4)},
			ipPacket(t, outsideAddr, e1.ip, udp(53, 40100), func(ip *layers.IPv4) { ip.TTL = 63 })...)...)
		if !bytes.Equal(out, exp) {
			t.Errorf("delivered packet\n got %x\nwant %x", out, exp)
		}
		if after := w.counters(t, e1.ifindex, toC); after.Packets != before.Packets+1 {
			t.Errorf("to_container packets +%d, want +1", after.Packets-before.Packets)
		}
	})
	t.Run("ICMP error about the flow", func(t *testing.T) {
		// The peer's port unreachable quotes the datagram as it saw it
		// (translated); the container must get it quoting what it sent.
		translated := reply(udp(53, 40100)) // any frame; the quote is built below
		_ = translated
		_, sentOut := w.outbound(t, orig)
		quote := sentOut[14 : 14+28]
		errFrame := serialize(t, eth(mac("02:99:00:00:00:01"), mac("02:98:00:00:00:01"), layers.EthernetTypeIPv4),
			&layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: net.ParseIP(outsideAddr).To4(), DstIP: net.ParseIP(uplinkAddr).To4()},
			&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(3, 3)}, gopacket.Payload(quote))
		ret, _, out := w.runData(t, w.coll.FromUplink, w.uplink, errFrame)
		if ret != actRedirect {
			t.Fatalf("return code %d, want TC_ACT_REDIRECT", ret)
		}
		exp := serialize(t, eth(bridgeMAC, mac(e1.mac), layers.EthernetTypeIPv4),
			&layers.IPv4{Version: 4, IHL: 5, TTL: 63, Protocol: layers.IPProtocolICMPv4, SrcIP: net.ParseIP(outsideAddr).To4(), DstIP: net.ParseIP(e1.ip).To4()},
			&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(3, 3)}, gopacket.Payload(orig[14:14+28]))
		if !bytes.Equal(out, exp) {
			t.Errorf("delivered error\n got %x\nwant %x", out, exp)
		}
	})
	t.Run("unsolicited to the masquerade address: the host's", func(t *testing.T) {
		frame := reply(udp(53, 40999))
		ret, _, out := w.runData(t, w.coll.FromUplink, w.uplink, frame)
		if ret != actUnspc || !bytes.Equal(out, frame) {
			t.Errorf("return %d, changed %v", ret, !bytes.Equal(out, frame))
		}
	})
	t.Run("unsolicited to a container address", func(t *testing.T) {
		w.expect(t, w.coll.FromUplink, w.uplink, e1.ifindex, toC, false, ipFrame(t, outsideAddr, e1.ip, tcp(80, 40000)), unsolicited)
	})
	t.Run("spoofing a host address from the outside", func(t *testing.T) {
		// The uplink sees it before the kernel's martian check would.
		w.expect(t, w.coll.FromUplink, w.uplink, e1.ifindex, toC, false, ipFrame(t, uplinkAddr, e1.ip, tcp(80, 40000)), spoof)
		w.expect(t, w.coll.FromUplink, w.uplink, e1.ifindex, toC, false, ipFrame(t, gw1, e1.ip, udp(53, 40000)), spoof)
	})
	t.Run("to an internal network", func(t *testing.T) {
		e5 := w.eps["e5"]
		w.expect(t, w.coll.FromUplink, w.uplink, e5.ifindex, toC, false, ipFrame(t, outsideAddr, e5.ip, tcp(80, 40000)), internal)
	})
	t.Run("reply to a no-masquerade container", func(t *testing.T) {
		e7 := w.eps["e7"]
		if ret, _ := w.run(t, w.coll.FromContainer, e7.ifindex, w.from(t, "e7", outsideAddr, tcp(40200, 80))); ret != actOK {
			t.Fatalf("from_container: %d", ret)
		}
		ret, _ := w.run(t, w.coll.FromUplink, w.uplink, ipFrame(t, outsideAddr, e7.ip, tcpAck(80, 40200)))
		if ret != actRedirect {
			t.Errorf("return code %d, want TC_ACT_REDIRECT", ret)
		}
	})
}

// With a range of two ports, a third concurrent flow to the same peer is
// refused (nat_exhausted, counted on the sender); the first two keep theirs.
func TestPortExhaustion(t *testing.T) {
	w := newWorld(t, map[string]any{"nat_port_min": uint16(50000), "nat_port_max": uint16(50001)})
	e1 := w.eps["e1"]
	var ports []uint16
	for _, sport := range []uint16{1, 2} {
		ret, out := w.outbound(t, w.from(t, "e1", outsideAddr, udp(sport, 53)))
		if ret != actUnspc {
			t.Fatalf("flow %d refused (%d)", sport, ret)
		}
		ports = append(ports, srcPort(out))
	}
	if ports[0] == ports[1] || ports[0] < 50000 || ports[0] > 50001 || ports[1] < 50000 || ports[1] > 50001 {
		t.Errorf("ports %v, want 50000 and 50001", ports)
	}
	before := w.counters(t, e1.ifindex, fromC)
	if ret, _ := w.outbound(t, w.from(t, "e1", outsideAddr, udp(3, 53))); ret != actShot {
		t.Errorf("third flow: return %d, want TC_ACT_SHOT", ret)
	}
	after := w.counters(t, e1.ifindex, fromC)
	if d := after.Drops[bpf.BpfnetDropReasonREASON_NAT_EXHAUSTED] - before.Drops[bpf.BpfnetDropReasonREASON_NAT_EXHAUSTED]; d != 1 {
		t.Errorf("nat_exhausted +%d, want +1", d)
	}
	for i, sport := range []uint16{1, 2} {
		if ret, out := w.outbound(t, w.from(t, "e1", outsideAddr, udp(sport, 53))); ret != actUnspc || srcPort(out) != ports[i] {
			t.Errorf("existing flow %d: return %d, port %d, want %d", sport, ret, srcPort(out), ports[i])
		}
	}
}

// When the uplink's address changes, a flow's next packet (and any new
// flow) uses the new address.
func TestUplinkAddressChange(t *testing.T) {
	w := newWorld(t, nil)
	frame := w.from(t, "e1", outsideAddr, udp(40300, 53))
	if _, out := w.outbound(t, frame); srcIP(out) != uplinkAddr {
		t.Fatalf("translated to %s, want %s", srcIP(out), uplinkAddr)
	}
	must(t, w.coll.Uplinks.Put(uint32(w.uplink), bpf.BpfnetUplinkInfo{Addr: be32(netip.MustParseAddr("198.19.0.9"))}))
	if _, out := w.outbound(t, frame); srcIP(out) != "198.19.0.9" || srcPort(out) != 40300 {
		t.Errorf("after the change: %s:%d, want 198.19.0.9:40300", srcIP(out), srcPort(out))
	}
	if _, out := w.outbound(t, w.from(t, "e1", outsideAddr, tcp(40301, 80))); srcIP(out) != "198.19.0.9" {
		t.Errorf("new flow after the change: %s", srcIP(out))
	}
}

// An entry stamped by another CPU after this one read the clock has a
// last-seen time in the future: it is fresh, not expired. (Treating the
// wrapped difference as age once made replies of busy TCP streams look
// expired, and the host answered them with RSTs.)
func TestFutureStampIsFresh(t *testing.T) {
	w := newWorld(t, nil)
	e1 := w.eps["e1"]
	orig := w.from(t, "e1", outsideAddr, tcp(40400, 80))
	w.outbound(t, orig)
	w.run(t, w.coll.FromContainer, e1.ifindex, orig)
	var k bpf.BpfnetTuple
	var v bpf.BpfnetNatEntry
	it := w.coll.NatRev.Iterate()
	for it.Next(&k, &v) {
		v.LastSeen = monotonic() + 5e9
		must(t, w.coll.NatRev.Put(k, v))
	}
	reply := ipFrame(t, outsideAddr, uplinkAddr, tcpAck(80, 40400))
	if ret, _ := w.run(t, w.coll.FromUplink, w.uplink, reply); ret != actRedirect {
		t.Errorf("reply to an entry stamped in the future: return %d, want TC_ACT_REDIRECT", ret)
	}
}

// A reply's later fragment that arrives before its first carries no
// ports: it goes to the container whose translated flow the sender
// replied to last, translated back and left to the host's stack to
// reassemble. Once the sender has replied to two containers through the
// same address, such a fragment is nobody's, and stays untranslated.
// Every reply of a flow must count, not only the first of each second:
// the second container's first reply comes within the second of the
// first's.
func TestEarlyFragmentTranslatedBack(t *testing.T) {
	w := newWorld(t, map[string]any{"frag_timeout": uint64(300 * time.Millisecond)})
	e1, e2 := w.eps["e1"], w.eps["e2"]
	// open sends a container's UDP flow out and returns its translated
	// source port.
	open := func(ep string, sport uint16) uint16 {
		t.Helper()
		sent := w.from(t, ep, outsideAddr, udp(sport, 53))
		if ret, _ := w.run(t, w.coll.FromContainer, w.eps[ep].ifindex, sent); ret != actOK {
			t.Fatalf("from_container: %d", ret)
		}
		ret, out := w.outbound(t, sent)
		if ret != actUnspc || srcIP(out) != uplinkAddr {
			t.Fatalf("to_uplink %d, source %s", ret, srcIP(out))
		}
		return srcPort(out)
	}
	reply := func(port uint16, opts ...ipOpt) []byte {
		return serialize(t, append([]gopacket.SerializableLayer{eth(mac("02:99:00:00:00:01"), mac("02:98:00:00:00:01"), layers.EthernetTypeIPv4)},
			ipPacket(t, outsideAddr, uplinkAddr, udp(53, port), opts...)...)...)
	}
	// early is a later fragment (offset 1480) of datagram id, with its
	// destination dst: a fragment has no L4 header, so only the IP
	// header's destination and checksum may change on the way in.
	early := func(id uint16, dst string) []byte {
		return serialize(t, eth(mac("02:99:00:00:00:01"), mac("02:98:00:00:00:01"), layers.EthernetTypeIPv4),
			&layers.IPv4{Version: 4, IHL: 5, TTL: 64, Id: id, FragOffset: 185, Protocol: layers.IPProtocolUDP,
				SrcIP: net.ParseIP(outsideAddr).To4(), DstIP: net.ParseIP(dst).To4()},
			gopacket.Payload(bytes.Repeat([]byte{0xab}, 64)))
	}
	p1 := open("e1", 40910)
	if ret, _, _ := w.runData(t, w.coll.FromUplink, w.uplink, reply(p1)); ret != actRedirect {
		t.Fatalf("e1's reply: return %d, want TC_ACT_REDIRECT", ret)
	}
	toE1 := func(t *testing.T, id uint16) {
		t.Helper()
		w.slowIn(t, e1, early(id, uplinkAddr), early(id, e1.ip))
	}
	t.Run("after one container's replies: its own", func(t *testing.T) { toE1(t, 0x3001) })
	t.Run("the record lasts as long as the replies do", func(t *testing.T) {
		// frag_timeout is 300 ms here: the first reply's record is gone
		// after 1.2 s, and a reply then must make it again.
		time.Sleep(1200 * time.Millisecond)
		if ret, _, _ := w.runData(t, w.coll.FromUplink, w.uplink, reply(p1)); ret != actRedirect {
			t.Fatalf("e1's reply: return %d, want TC_ACT_REDIRECT", ret)
		}
		toE1(t, 0x3003)
	})
	t.Run("after replies to two containers: nobody's", func(t *testing.T) {
		p2 := open("e2", 40911)
		if ret, _, _ := w.runData(t, w.coll.FromUplink, w.uplink, reply(p2)); ret != actRedirect {
			t.Fatalf("e2's reply: return %d, want TC_ACT_REDIRECT", ret)
		}
		// e1's flow replies again, in the same second.
		if ret, _, _ := w.runData(t, w.coll.FromUplink, w.uplink, reply(p1)); ret != actRedirect {
			t.Fatalf("e1's reply: return %d, want TC_ACT_REDIRECT", ret)
		}
		frame := early(0x3002, uplinkAddr)
		ret, _, out := w.runData(t, w.coll.FromUplink, w.uplink, frame)
		if ret != actUnspc || !bytes.Equal(out, frame) {
			t.Fatalf("from_uplink %d, changed %v: want it left to the host untranslated", ret, !bytes.Equal(out, frame))
		}
		if e2.ip == e1.ip {
			t.Fatal("the test needs two containers")
		}
	})
}

// A later fragment passes only if its first did: a reply's first
// fragment translated back but refused (its flow has a translation and
// no connection-table entry: from_container never saw it) leaves nothing
// its later fragments could follow.
func TestFragmentOfARefusedFirst(t *testing.T) {
	w := newWorld(t, nil)
	e1 := w.eps["e1"]
	ret, out := w.outbound(t, w.from(t, "e1", outsideAddr, udp(40930, 53)))
	if ret != actUnspc || srcIP(out) != uplinkAddr {
		t.Fatalf("to_uplink %d, source %s", ret, srcIP(out))
	}
	in := func(opt ipOpt) []byte {
		return serialize(t, append([]gopacket.SerializableLayer{eth(mac("02:99:00:00:00:01"), mac("02:98:00:00:00:01"), layers.EthernetTypeIPv4)},
			ipPacket(t, outsideAddr, uplinkAddr, udp(53, srcPort(out)), opt)...)...)
	}
	w.expect(t, w.coll.FromUplink, w.uplink, e1.ifindex, toC, false, in(firstFragment(0x51)), unsolicited)
	w.expect(t, w.coll.FromUplink, w.uplink, e1.ifindex, toC, false, in(laterFragment(0x51)), fragment)
}
