package datapath

import (
	"bytes"
	"net"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/bpfnet/bpfnet/bpf"
	"github.com/bpfnet/bpfnet/network"
)

// Published-port translations, checked byte for byte against frames
// gopacket builds (fresh checksums) from the addresses and ports Docker's
// DNAT (and its hairpin MASQUERADE) would give.

// publish adds a published port of endpoint ep (and marks ep as
// publishing, as the enforcer does).
func (w *world) publish(t *testing.T, ep string, m network.PortMapping, gateway string) {
	t.Helper()
	e := w.eps[ep]
	must(t, w.coll.Ports.Put(portKey(m), bpf.BpfnetPortBackend{Addr: be32(netip.MustParseAddr(e.ip)), Port: port(m.Port),
		Ifindex: uint32(e.ifindex), NetId: uint32(w.nets[e.net]), Gateway: be32(netip.MustParseAddr(gateway)), Slot: e.slot}))
	var info bpf.BpfnetEndpointInfo
	must(t, w.coll.EpByIfindex.Lookup(uint32(e.ifindex), &info))
	info.Flags |= uint8(bpf.BpfnetEndpointFlagEP_F_PUBLISHES)
	must(t, w.coll.EpByIfindex.Put(uint32(e.ifindex), info))
}

// routed is a frame as the host's router delivers it into endpoint ep:
// the bridge's MAC as source, TTL 63.
func (w *world) routed(t *testing.T, ep, src, dst string, p l4, opts ...ipOpt) []byte {
	return serialize(t, append([]gopacket.SerializableLayer{eth(bridgeMAC, mac(w.eps[ep].mac), layers.EthernetTypeIPv4)},
		ipPacket(t, src, dst, p, append(opts, func(ip *layers.IPv4) { ip.TTL = 63 })...)...)...)
}

// redirected runs prog on frame at ifindex and checks that it is
// redirected as want, counted once on the receiver's to_container.
func (w *world) redirected(t *testing.T, prog *ebpf.Program, ifindex int, frame, want []byte, to *testEP) {
	t.Helper()
	before := w.counters(t, to.ifindex, toC)
	ret, _, out := w.runData(t, prog, ifindex, frame)
	if ret != actRedirect {
		t.Fatalf("return code %d, want TC_ACT_REDIRECT", ret)
	}
	if !bytes.Equal(out, want) {
		t.Errorf("delivered\n got %x\nwant %x", out, want)
	}
	if after := w.counters(t, to.ifindex, toC); after.Packets != before.Packets+1 {
		t.Errorf("to_container packets of the receiver +%d, want +1", after.Packets-before.Packets)
	}
}

func tcpSynAck(sport, dport uint16) l4 { p := tcp(sport, dport); p.ack = true; return p }

func pm(proto, hostIP string, hostPort, p uint16) network.PortMapping {
	return network.PortMapping{Proto: proto, HostIP: netip.MustParseAddr(hostIP), HostPort: hostPort, Port: p}
}

func TestPublishedPortFromOutside(t *testing.T) {
	w := newWorld(t, nil)
	e1, e7 := w.eps["e1"], w.eps["e7"]
	w.publish(t, "e1", pm("tcp", "0.0.0.0", 8080, 80), gw1)
	w.publish(t, "e1", pm("udp", "0.0.0.0", 5353, 53), gw1)
	w.publish(t, "e1", pm("tcp", "127.0.0.1", 9090, 90), gw1)
	w.publish(t, "e7", pm("tcp", "0.0.0.0", 6060, 60), "198.18.5.1")
	in := func(dst string, p l4, opts ...ipOpt) []byte {
		return serialize(t, append([]gopacket.SerializableLayer{eth(mac("02:99:00:00:00:01"), mac("02:98:00:00:00:01"), layers.EthernetTypeIPv4)},
			ipPacket(t, outsideAddr, dst, p, opts...)...)...)
	}
	deliver := func(t *testing.T, frame, want []byte, ep *testEP) {
		t.Helper()
		w.redirected(t, w.coll.FromUplink, w.uplink, frame, want, ep)
	}
	reply := func(t *testing.T, frame, want []byte) {
		t.Helper()
		ret, out := w.outbound(t, frame)
		if ret != actUnspc || !bytes.Equal(out, want) {
			t.Errorf("reply: return %d\n got %x\nwant %x", ret, out, want)
		}
	}
	t.Run("tcp to the uplink address", func(t *testing.T) {
		deliver(t, in(uplinkAddr, tcp(40000, 8080)), w.routed(t, "e1", outsideAddr, e1.ip, tcp(40000, 80)), e1)
		deliver(t, in(uplinkAddr, tcpAck(40000, 8080)), w.routed(t, "e1", outsideAddr, e1.ip, tcpAck(40000, 80)), e1)
		reply(t, w.from(t, "e1", outsideAddr, tcpSynAck(80, 40000)), ipFrameFrom(t, e1, uplinkAddr, outsideAddr, tcpSynAck(8080, 40000)))
	})
	t.Run("udp to another host address", func(t *testing.T) {
		deliver(t, in(gw2, udp(40001, 5353)), w.routed(t, "e1", outsideAddr, e1.ip, udp(40001, 53)), e1)
		reply(t, w.from(t, "e1", outsideAddr, udp(53, 40001)), ipFrameFrom(t, e1, gw2, outsideAddr, udp(5353, 40001)))
	})
	t.Run("no-masquerade network", func(t *testing.T) {
		deliver(t, in(uplinkAddr, tcp(40002, 6060)), w.routed(t, "e7", outsideAddr, e7.ip, tcp(40002, 60)), e7)
		reply(t, w.from(t, "e7", outsideAddr, tcpSynAck(60, 40002)), ipFrameFrom(t, e7, uplinkAddr, outsideAddr, tcpSynAck(6060, 40002)))
	})
	t.Run("port bound to 127.0.0.1 is the host's", func(t *testing.T) {
		frame := in(uplinkAddr, tcp(40003, 9090))
		if ret, _, out := w.runData(t, w.coll.FromUplink, w.uplink, frame); ret != actUnspc || !bytes.Equal(out, frame) {
			t.Errorf("return %d, changed %v", ret, !bytes.Equal(out, frame))
		}
	})
	t.Run("unpublished port is the host's", func(t *testing.T) {
		frame := in(uplinkAddr, tcp(40004, 8081))
		if ret, _, out := w.runData(t, w.coll.FromUplink, w.uplink, frame); ret != actUnspc || !bytes.Equal(out, frame) {
			t.Errorf("return %d, changed %v", ret, !bytes.Equal(out, frame))
		}
	})
	t.Run("a fragmented datagram: its first fragment opens it, the later follows", func(t *testing.T) {
		w.slowIn(t, e1, in(uplinkAddr, udp(40006, 5353), firstFragment(0x55)), in(e1.ip, udp(40006, 53), firstFragment(0x55)))
		// A later fragment has no UDP header: only the IP destination
		// and checksum change.
		later := in(uplinkAddr, udp(40006, 5353), laterFragment(0x55))
		w.slowIn(t, e1, later, withDst(t, later, e1.ip))
	})
	t.Run("straight to the container port is still unsolicited", func(t *testing.T) {
		w.expect(t, w.coll.FromUplink, w.uplink, e1.ifindex, toC, false, ipFrame(t, outsideAddr, e1.ip, tcp(40005, 80)), unsolicited)
	})
}

// withDst is an IPv4 frame with its destination address replaced and its
// IP header checksum computed afresh; the rest is left byte for byte (a
// later fragment has no L4 header to fix).
func withDst(t *testing.T, frame []byte, dst string) []byte {
	return reheader(t, frame, func(_ *layers.Ethernet, ip *layers.IPv4) { ip.DstIP = net.ParseIP(dst).To4() })
}

// routedFragment is a later fragment as the host would route it into
// endpoint ep with source src and destination dst: the bridge's MAC as
// source, TTL one less, its data unchanged.
func (w *world) routedFragment(t *testing.T, frame []byte, ep, src, dst string) []byte {
	return reheader(t, frame, func(e *layers.Ethernet, ip *layers.IPv4) {
		e.SrcMAC, e.DstMAC = bridgeMAC, mac(w.eps[ep].mac)
		ip.SrcIP, ip.DstIP, ip.TTL = net.ParseIP(src).To4(), net.ParseIP(dst).To4(), ip.TTL-1
	})
}

// reheader is an IPv4 frame with its Ethernet and IP headers changed by
// edit and the IP header checksum computed afresh; the payload is kept.
func reheader(t *testing.T, frame []byte, edit func(*layers.Ethernet, *layers.IPv4)) []byte {
	t.Helper()
	var e layers.Ethernet
	var ip layers.IPv4
	if err := e.DecodeFromBytes(frame, gopacket.NilDecodeFeedback); err != nil {
		t.Fatal(err)
	}
	if err := ip.DecodeFromBytes(frame[14:], gopacket.NilDecodeFeedback); err != nil {
		t.Fatal(err)
	}
	edit(&e, &ip)
	return serialize(t, &e, &ip, gopacket.Payload(ip.Payload))
}

// ipFrameFrom is a frame endpoint e sent with the given addresses (after
// a source translation).
func ipFrameFrom(t *testing.T, e *testEP, src, dst string, p l4) []byte {
	return serialize(t, append([]gopacket.SerializableLayer{eth(mac(e.mac), hostMAC, layers.EthernetTypeIPv4)}, ipPacket(t, src, dst, p)...)...)
}

func TestPublishedPortHairpin(t *testing.T) {
	w := newWorld(t, nil)
	e1, e2, e3, e4, e5 := w.eps["e1"], w.eps["e2"], w.eps["e3"], w.eps["e4"], w.eps["e5"]
	w.publish(t, "e1", pm("tcp", "0.0.0.0", 8080, 80), gw1)
	w.publish(t, "e4", pm("tcp", "0.0.0.0", 4040, 40), gw2)
	w.publish(t, "e1", pm("udp", "0.0.0.0", 5353, 53), gw1)
	hop := func(t *testing.T, from *testEP, frame, want []byte, to *testEP) {
		t.Helper()
		w.redirected(t, w.coll.FromContainer, from.ifindex, frame, want, to)
	}
	// Datagrams in two fragments, each way: the first is translated as a
	// whole packet, the later follows it, both straight into the receiver.
	t.Run("a datagram in fragments, neighbour", func(t *testing.T) {
		first := w.from(t, "e2", gw1, udp(41010, 5353), firstFragment(0x66))
		later := w.from(t, "e2", gw1, udp(41010, 5353), laterFragment(0x66))
		hop(t, e2, first, w.routed(t, "e1", e2.ip, e1.ip, udp(41010, 53), firstFragment(0x66)), e1)
		hop(t, e2, later, w.routedFragment(t, later, "e1", e2.ip, e1.ip), e1)
		first = w.from(t, "e1", e2.ip, udp(53, 41010), firstFragment(0x67))
		later = w.from(t, "e1", e2.ip, udp(53, 41010), laterFragment(0x67))
		hop(t, e1, first, w.routed(t, "e2", gw1, e2.ip, udp(5353, 41010), firstFragment(0x67)), e2)
		hop(t, e1, later, w.routedFragment(t, later, "e2", gw1, e2.ip), e2)
	})
	t.Run("a datagram in fragments, own port", func(t *testing.T) {
		first := w.from(t, "e1", gw1, udp(41011, 5353), firstFragment(0x68))
		later := w.from(t, "e1", gw1, udp(41011, 5353), laterFragment(0x68))
		hop(t, e1, first, w.routed(t, "e1", gw1, e1.ip, udp(41011, 53), firstFragment(0x68)), e1)
		hop(t, e1, later, w.routedFragment(t, later, "e1", gw1, e1.ip), e1)
		first = w.from(t, "e1", gw1, udp(53, 41011), firstFragment(0x69))
		later = w.from(t, "e1", gw1, udp(53, 41011), laterFragment(0x69))
		hop(t, e1, first, w.routed(t, "e1", gw1, e1.ip, udp(5353, 41011), firstFragment(0x69)), e1)
		hop(t, e1, later, w.routedFragment(t, later, "e1", gw1, e1.ip), e1)
	})
	t.Run("a later fragment whose first went nowhere: the host's", func(t *testing.T) {
		w.expect(t, w.coll.FromContainer, e2.ifindex, e2.ifindex, fromC, true, w.from(t, "e2", gw1, udp(41012, 5353), laterFragment(0x6a)), none)
	})
	t.Run("neighbour through the gateway: source kept", func(t *testing.T) {
		hop(t, e2, w.from(t, "e2", gw1, tcp(41000, 8080)), w.routed(t, "e1", e2.ip, e1.ip, tcp(41000, 80)), e1)
		hop(t, e1, w.from(t, "e1", e2.ip, tcpSynAck(80, 41000)), w.routed(t, "e2", gw1, e2.ip, tcpSynAck(8080, 41000)), e2)
	})
	t.Run("neighbour through the uplink address", func(t *testing.T) {
		hop(t, e2, w.from(t, "e2", uplinkAddr, tcp(41001, 8080)), w.routed(t, "e1", e2.ip, e1.ip, tcp(41001, 80)), e1)
		hop(t, e1, w.from(t, "e1", e2.ip, tcpSynAck(80, 41001)), w.routed(t, "e2", uplinkAddr, e2.ip, tcpSynAck(8080, 41001)), e2)
	})
	t.Run("own port: source becomes the gateway", func(t *testing.T) {
		hop(t, e1, w.from(t, "e1", gw1, tcp(41002, 8080)), w.routed(t, "e1", gw1, e1.ip, tcp(41002, 80)), e1)
		hop(t, e1, w.from(t, "e1", gw1, tcpSynAck(80, 41002)), w.routed(t, "e1", gw1, e1.ip, tcpSynAck(8080, 41002)), e1)
	})
	t.Run("other network: isolation", func(t *testing.T) {
		w.expect(t, w.coll.FromContainer, e3.ifindex, e3.ifindex, fromC, true, w.from(t, "e3", gw2, tcp(41003, 8080)), isolation)
	})
	t.Run("internal network: internal", func(t *testing.T) {
		w.expect(t, w.coll.FromContainer, e5.ifindex, e5.ifindex, fromC, true, w.from(t, "e5", gw3, tcp(41004, 8080)), internal)
	})
	t.Run("icc off, neighbour's port: icc", func(t *testing.T) {
		w.expect(t, w.coll.FromContainer, e3.ifindex, e3.ifindex, fromC, true, w.from(t, "e3", gw2, tcp(41005, 4040)), icc)
	})
	t.Run("icc off, own port: icc (Docker's FORWARD -i br -o br DROP)", func(t *testing.T) {
		w.expect(t, w.coll.FromContainer, e4.ifindex, e4.ifindex, fromC, true, w.from(t, "e4", gw2, tcp(41006, 4040)), icc)
	})
	t.Run("unpublished port on a host address: the host's", func(t *testing.T) {
		w.expect(t, w.coll.FromContainer, e2.ifindex, e2.ifindex, fromC, true, w.from(t, "e2", gw1, tcp(41007, 8081)), none)
	})
}
