package datapath

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/bpfnet/bpfnet/bpf"
	"github.com/bpfnet/bpfnet/network"
)

// TestDropEvents: a drop's event says what the packet was, as far as its
// headers go, whether the program parsed it (IPv4) or not (IPv6, ARP,
// other frames): the expected fields are read off the hand-built frames.
func TestDropEvents(t *testing.T) {
	w := newWorld(t, nil)
	e1 := w.eps["e1"]
	rd, err := ringbuf.NewReader(w.coll.Events)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	ap := netip.MustParseAddrPort
	noPort := func(a string) netip.AddrPort { return netip.AddrPortFrom(netip.MustParseAddr(a), 0) }
	ipv6 := func(next layers.IPProtocol, l ...gopacket.SerializableLayer) []byte {
		ip := &layers.IPv6{Version: 6, NextHeader: next, HopLimit: 64, SrcIP: net.ParseIP("fd00::2"), DstIP: net.ParseIP("fd00::3")}
		for _, x := range l {
			switch c := x.(type) {
			case *layers.UDP:
				c.SetNetworkLayerForChecksum(ip)
			case *layers.ICMPv6:
				c.SetNetworkLayerForChecksum(ip)
			}
		}
		return serialize(t, append([]gopacket.SerializableLayer{eth(mac(e1.mac), hostMAC, layers.EthernetTypeIPv6), ip}, l...)...)
	}
	for _, tc := range []struct {
		name  string
		frame []byte
		want  network.DropEvent
	}{
		{"tcp to another network", w.from(t, "e1", w.ip("e3"), tcp(40000, 80)),
			network.DropEvent{Reason: "isolation", Proto: "tcp", Src: ap(e1.ip + ":40000"), Dst: ap(w.ip("e3") + ":80")}},
		{"ping to another network", w.from(t, "e1", w.ip("e3"), echo(7)),
			network.DropEvent{Reason: "isolation", Proto: "icmp", Src: netip.AddrPortFrom(netip.MustParseAddr(e1.ip), 7), Dst: noPort(w.ip("e3")), ICMPType: "echo-request"}},
		{"udp over IPv6", ipv6(layers.IPProtocolUDP, &layers.UDP{SrcPort: 5353, DstPort: 53}, gopacket.Payload("bpfnet")),
			network.DropEvent{Reason: "unsupported", Proto: "udp", Src: ap("[fd00::2]:5353"), Dst: ap("[fd00::3]:53")}},
		{"ICMPv6 echo", ipv6(layers.IPProtocolICMPv6, &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(128, 0)}, gopacket.Payload("bpfnetbp")),
			network.DropEvent{Reason: "unsupported", Proto: "icmpv6", Src: noPort("fd00::2"), Dst: noPort("fd00::3"), ICMPType: "echo-request"}},
		{"MLD report behind a hop-by-hop header", ipv6(layers.IPProtocolIPv6HopByHop, gopacket.Payload(extHeader(layers.IPProtocolICMPv6)),
			&layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(143, 0)}, gopacket.Payload(make([]byte, 4))),
			network.DropEvent{Reason: "unsupported", Proto: "icmpv6", Src: noPort("fd00::2"), Dst: noPort("fd00::3"), ICMPType: "mldv2-report"}},
		{"ARP for another's address", serialize(t, eth(mac(e1.mac), layers.EthernetBroadcast, layers.EthernetTypeARP), &layers.ARP{
			AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
			Operation: layers.ARPRequest, SourceHwAddress: mac(e1.mac), SourceProtAddress: net.ParseIP(w.ip("e2")).To4(),
			DstHwAddress: make([]byte, 6), DstProtAddress: net.ParseIP(gw1).To4()}),
			network.DropEvent{Reason: "spoof", Proto: "arp", Src: noPort(w.ip("e2")), Dst: noPort(gw1)}},
		{"LLDP", serialize(t, eth(mac(e1.mac), mac("01:80:c2:00:00:0e"), layers.EthernetType(0x88cc)), gopacket.Payload(make([]byte, 46))),
			network.DropEvent{Reason: "unsupported", Proto: "ethertype 0x88cc"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if ret, _ := w.run(t, w.coll.FromContainer, e1.ifindex, tc.frame); ret != actShot {
				t.Fatalf("return code %d, want a drop", ret)
			}
			rd.SetDeadline(time.Now().Add(time.Second))
			rec, err := rd.Read()
			if err != nil {
				t.Fatalf("no event: %v", err)
			}
			var ev bpf.BpfnetDropEvent
			if err := decodeEvent(rec.RawSample, &ev); err != nil {
				t.Fatal(err)
			}
			if ev.Ifindex != uint32(e1.ifindex) {
				t.Errorf("counted at ifindex %d, want e1's %d", ev.Ifindex, e1.ifindex)
			}
			want := tc.want
			want.Direction, want.Length = "from_container", len(tc.frame)
			if got := dropEvent(&ev); got != want {
				t.Errorf("event\n got %+v\nwant %+v", got, want)
			}
		})
	}
}
