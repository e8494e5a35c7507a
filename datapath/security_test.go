package datapath

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/bpfnet/bpfnet/bpf"
)

// Program-level tests of the holes an adversarial review found (issue
// "Datapath security"); each names the item it shows. Expectations come
// from what the kernel's own stack and netfilter do (RFC 1122 martians,
// RFC 792 checksums, RFC 5961 in-window resets), not from the programs.

// outsideFrame is a frame arriving on the uplink from the outside.
func outsideFrame(t *testing.T, src, dst string, p l4) []byte {
	return serialize(t, append([]gopacket.SerializableLayer{eth(mac("02:99:00:00:00:01"), mac("02:98:00:00:00:01"), layers.EthernetTypeIPv4)},
		ipPacket(t, src, dst, p)...)...)
}

// Item 1: a port published on 127.0.0.1 is for the host's own processes.
// A packet from the LAN to 127.0.0.1 is a martian the kernel drops; it
// must not be DNATed first.
func TestLoopbackPortNotFromOutside(t *testing.T) {
	w := newWorld(t, nil)
	w.publish(t, "e1", pm("tcp", "127.0.0.1", 9090, 90), gw1)
	w.publish(t, "e1", pm("udp", "0.0.0.0", 5353, 53), gw1)
	for _, frame := range [][]byte{
		outsideFrame(t, outsideAddr, "127.0.0.1", tcp(40000, 9090)),
		outsideFrame(t, outsideAddr, "127.0.0.1", udp(40000, 5353)), // 0.0.0.0 covers the host's addresses, not loopback from outside
	} {
		ret, _, out := w.runData(t, w.coll.FromUplink, w.uplink, frame)
		if ret != actUnspc || !bytes.Equal(out, frame) {
			t.Errorf("to 127.0.0.1 from the outside: return %d, changed %v; want the kernel's (UNSPEC, untouched)", ret, !bytes.Equal(out, frame))
		}
	}
}

// Item 6: packets from the outside that claim a source the outside cannot
// have (a host address, loopback, a managed subnet: a sibling container)
// are dropped before any translation or delivery; and a bare TCP ACK
// opens no DNAT state.
func TestForgedSourcesFromOutside(t *testing.T) {
	w := newWorld(t, nil)
	e1, e2 := w.eps["e1"], w.eps["e2"]
	w.publish(t, "e1", pm("tcp", "0.0.0.0", 8080, 80), gw1)
	for _, tc := range []struct{ name, src string }{
		{"the gateway", gw1},
		{"the uplink address", uplinkAddr},
		{"a sibling container", e2.ip},
		{"loopback", "127.0.0.1"},
	} {
		t.Run("source "+tc.name+" to a published port", func(t *testing.T) {
			frame := outsideFrame(t, tc.src, uplinkAddr, tcp(40000, 8080))
			if ret, _ := w.run(t, w.coll.FromUplink, w.uplink, frame); ret != actShot {
				t.Errorf("return %d, want TC_ACT_SHOT", ret)
			}
			if n := w.natEntries(t); n != 0 {
				t.Errorf("%d translation entries opened", n)
			}
		})
	}
	t.Run("source a sibling container straight to a container", func(t *testing.T) {
		w.expect(t, w.coll.FromUplink, w.uplink, e1.ifindex, toC, false, outsideFrame(t, e2.ip, e1.ip, udp(53, 40000)), spoof)
	})
	t.Run("a bare ACK to a published port opens nothing", func(t *testing.T) {
		frame := outsideFrame(t, outsideAddr, uplinkAddr, tcpAck(40001, 8080))
		ret, _, out := w.runData(t, w.coll.FromUplink, w.uplink, frame)
		if ret != actUnspc || !bytes.Equal(out, frame) {
			t.Errorf("return %d, changed %v; want it left to the host", ret, !bytes.Equal(out, frame))
		}
		if n := w.natEntries(t); n != 0 {
			t.Errorf("%d translation entries opened by a bare ACK", n)
		}
	})
	t.Run("a SYN to a published port still opens it", func(t *testing.T) {
		if ret, _ := w.run(t, w.coll.FromUplink, w.uplink, outsideFrame(t, outsideAddr, uplinkAddr, tcp(40002, 8080))); ret != actRedirect {
			t.Errorf("return %d, want TC_ACT_REDIRECT", ret)
		}
	})
}

// natEntries counts the entries of nat_fwd and nat_rev.
func (w *world) natEntries(t *testing.T) int {
	t.Helper()
	n := 0
	var k bpf.BpfnetTuple
	var v bpf.BpfnetNatEntry
	for _, m := range []*ebpf.Map{w.coll.NatFwd, w.coll.NatRev} {
		it := m.Iterate()
		for it.Next(&k, &v) {
			n++
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

// Item 9: the translated echo reply of a masqueraded ping carries a valid
// ICMP checksum (the identifier is the "port" the checksum fix-up must
// account for), byte for byte what gopacket serialises.
func TestEchoReplyChecksum(t *testing.T) {
	w := newWorld(t, map[string]any{"nat_port_min": uint16(50000), "nat_port_max": uint16(50000)})
	e1 := w.eps["e1"]
	// Identifier 7 is taken by e2 first, so e1's echo gets another one.
	if ret, out := w.outbound(t, w.from(t, "e2", outsideAddr, echo(7))); ret != actUnspc || srcPort(out) != 7 {
		t.Fatalf("e2's echo: return %d, identifier %d", ret, srcPort(out))
	}
	ret, out := w.outbound(t, w.from(t, "e1", outsideAddr, echo(7)))
	id := srcPort(out)
	if ret != actUnspc || id == 7 {
		t.Fatalf("e1's echo: return %d, identifier %d (want another than 7)", ret, id)
	}
	w.run(t, w.coll.FromContainer, e1.ifindex, w.from(t, "e1", outsideAddr, echo(7)))
	reply := outsideFrame(t, outsideAddr, uplinkAddr, echoReply(id))
	want := serialize(t, append([]gopacket.SerializableLayer{eth(bridgeMAC, mac(e1.mac), layers.EthernetTypeIPv4)},
		ipPacket(t, outsideAddr, e1.ip, echoReply(7), func(ip *layers.IPv4) { ip.TTL = 63 })...)...)
	w.redirected(t, w.coll.FromUplink, w.uplink, reply, want, e1)
}

// Item 10: a RST or FIN from the outside ends a flow only inside the
// window the container advertised (RFC 5961 §3.2); one with a blind
// sequence number changes nothing.
func TestBlindResetIgnored(t *testing.T) {
	w := newWorld(t, nil)
	e1 := w.eps["e1"]
	// e1 opens a connection (window scale 7) and the peer answers.
	syn := w.from(t, "e1", outsideAddr, l4{proto: "tcp", sport: 40500, dport: 80, syn: true, seq: 1000, wscale: 7})
	w.run(t, w.coll.FromContainer, e1.ifindex, syn)
	w.outbound(t, syn)
	synAck := l4{proto: "tcp", sport: 80, dport: 40500, syn: true, ack: true, seq: 5000, ackN: 1001}
	if ret, _ := w.run(t, w.coll.FromUplink, w.uplink, outsideFrame(t, outsideAddr, uplinkAddr, synAck)); ret != actRedirect {
		t.Fatalf("SYN-ACK not delivered (%d)", ret)
	}
	// e1 acknowledges 5001 with a window of 100 << 7 = 12,800 bytes.
	ack := w.from(t, "e1", outsideAddr, l4{proto: "tcp", sport: 40500, dport: 80, ack: true, seq: 1001, ackN: 5001, win: 100})
	w.run(t, w.coll.FromContainer, e1.ifindex, ack)
	w.outbound(t, ack)
	fwdKey := bpf.BpfnetTuple{Saddr: be32(netip.MustParseAddr(e1.ip)), Daddr: be32(netip.MustParseAddr(outsideAddr)),
		Sport: port(40500), Dport: port(80), Proto: 6}
	closed := func() (nat, ct bool) {
		var f bpf.BpfnetNatEntry
		var c bpf.BpfnetCtEntry
		must(t, w.coll.NatFwd.Lookup(fwdKey, &f))
		must(t, w.coll.Conntrack.Lookup(fwdKey, &c))
		mask := uint32(bpf.BpfnetCtFlagCT_F_RST | bpf.BpfnetCtFlagCT_F_FIN)
		return f.Flags&mask != 0, c.Flags&mask != 0
	}
	for _, tc := range []struct {
		name string
		p    l4
	}{
		{"RST a million bytes ahead", l4{proto: "tcp", sport: 80, dport: 40500, rst: true, seq: 5001 + 1_000_000}},
		{"RST behind the window", l4{proto: "tcp", sport: 80, dport: 40500, rst: true, seq: 4000}},
		{"FIN far ahead", l4{proto: "tcp", sport: 80, dport: 40500, fin: true, ack: true, seq: 5001 + 200_000, ackN: 1001}},
	} {
		w.run(t, w.coll.FromUplink, w.uplink, outsideFrame(t, outsideAddr, uplinkAddr, tc.p))
		if nat, ct := closed(); nat || ct {
			t.Errorf("%s: believed (translation closed %v, flow closed %v)", tc.name, nat, ct)
		}
	}
	// Inside the scaled window (beyond the unscaled 64 KB it is not).
	w.run(t, w.coll.FromUplink, w.uplink, outsideFrame(t, outsideAddr, uplinkAddr, l4{proto: "tcp", sport: 80, dport: 40500, rst: true, seq: 5001 + 12000}))
	if nat, ct := closed(); !nat || !ct {
		t.Errorf("an in-window RST was not believed (translation %v, flow %v)", nat, ct)
	}
}

// Item 15: an ICMP error is let in only to the container whose flow it
// quotes (the outer destination is the quoted source).
func TestICMPErrorToItsFlowOnly(t *testing.T) {
	w := newWorld(t, nil)
	e7 := w.eps["e7"] // a no-masquerade network: errors come to its own address
	sent := w.from(t, "e7", outsideAddr, udp(40600, 9999))
	w.run(t, w.coll.FromContainer, e7.ifindex, sent)
	errTo := func(dst string) []byte {
		return serialize(t, eth(mac("02:99:00:00:00:01"), mac("02:98:00:00:00:01"), layers.EthernetTypeIPv4),
			&layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: net.ParseIP(outsideAddr).To4(), DstIP: net.ParseIP(dst).To4()},
			&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(3, 3)}, gopacket.Payload(sent[14:14+28]))
	}
	if ret, _ := w.run(t, w.coll.FromUplink, w.uplink, errTo(e7.ip)); ret != actRedirect {
		t.Errorf("the error to the flow's container: return %d, want TC_ACT_REDIRECT", ret)
	}
	// The same error sent to another container (e1, on a network the
	// outside can route to) is no reply of e1's.
	e1 := w.eps["e1"]
	w.expect(t, w.coll.FromUplink, w.uplink, e1.ifindex, toC, false, errTo(e1.ip), unsolicited)
}

// Fragment state expires (ipfrag_time is 30 s): a later fragment long
// after its first is not let in.
func TestFragmentStateExpires(t *testing.T) {
	w := newWorld(t, map[string]any{"frag_timeout": uint64(50 * time.Millisecond)})
	e7 := w.eps["e7"]
	w.run(t, w.coll.FromContainer, e7.ifindex, w.from(t, "e7", outsideAddr, udp(40700, 53)))
	// Routed into the network by the host (fragments take the slow path).
	w.expect(t, w.coll.ToContainer, e7.ifindex, e7.ifindex, toC, true, ipFrame(t, outsideAddr, e7.ip, udp(53, 40700), firstFragment(5)), none)
	w.expect(t, w.coll.ToContainer, e7.ifindex, e7.ifindex, toC, true, ipFrame(t, outsideAddr, e7.ip, udp(53, 40700), laterFragment(5)), none)
	time.Sleep(120 * time.Millisecond)
	w.expect(t, w.coll.ToContainer, e7.ifindex, e7.ifindex, toC, true, ipFrame(t, outsideAddr, e7.ip, udp(53, 40700), laterFragment(5)), fragment)
}

// An ICMP error about a masqueraded echo request, translated back: the
// quoted echo's identifier and its checksum are the container's, byte
// for byte what gopacket serialises.
func TestQuotedEchoTranslatedBack(t *testing.T) {
	w := newWorld(t, nil)
	e1 := w.eps["e1"]
	w.outbound(t, w.from(t, "e2", outsideAddr, echo(7))) // takes identifier 7
	sent := w.from(t, "e1", outsideAddr, echo(7))
	w.run(t, w.coll.FromContainer, e1.ifindex, sent)
	_, out := w.outbound(t, sent)
	if srcPort(out) == 7 {
		t.Fatal("e1's echo kept identifier 7; the test needs it changed")
	}
	icmpErr := func(src, dst string, quote []byte, ttl uint8, m net.HardwareAddr, m2 net.HardwareAddr) []byte {
		return serialize(t, eth(m, m2, layers.EthernetTypeIPv4),
			&layers.IPv4{Version: 4, IHL: 5, TTL: ttl, Protocol: layers.IPProtocolICMPv4, SrcIP: net.ParseIP(src).To4(), DstIP: net.ParseIP(dst).To4()},
			&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(11, 0)}, gopacket.Payload(quote))
	}
	in := icmpErr(outsideAddr, uplinkAddr, out[14:14+28], 64, mac("02:99:00:00:00:01"), mac("02:98:00:00:00:01"))
	want := icmpErr(outsideAddr, e1.ip, sent[14:14+28], 63, bridgeMAC, mac(e1.mac))
	w.redirected(t, w.coll.FromUplink, w.uplink, in, want, e1)
}

// An ICMP error the host itself sends to the outside about a packet it
// was forwarding to a masqueraded container quotes the translated address
// and port, not the container's.
func TestHostErrorDoesNotLeak(t *testing.T) {
	w := newWorld(t, nil)
	e1 := w.eps["e1"]
	sent := w.from(t, "e1", outsideAddr, udp(40800, 53))
	w.run(t, w.coll.FromContainer, e1.ifindex, sent)
	_, out := w.outbound(t, sent)
	natPort := srcPort(out)
	// The reply as the host forwarded it (translated back), quoted.
	fwdReply := serialize(t, ipPacket(t, outsideAddr, e1.ip, udp(53, 40800))...)
	theirs := serialize(t, ipPacket(t, outsideAddr, uplinkAddr, udp(53, natPort))...)
	hostErr := func(quote []byte) []byte {
		return serialize(t, eth(hostMAC, mac("02:99:00:00:00:01"), layers.EthernetTypeIPv4),
			&layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: net.ParseIP(uplinkAddr).To4(), DstIP: net.ParseIP(outsideAddr).To4()},
			&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(3, 4)}, gopacket.Payload(quote[:28]))
	}
	ret, got := w.outbound(t, hostErr(fwdReply))
	if want := hostErr(theirs); ret != actUnspc || !bytes.Equal(got, want) {
		t.Errorf("host's error: return %d\n got %x\nwant %x", ret, got, want)
	}
}
