package datapath

import (
	"bytes"
	"testing"

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
