package datapath

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/bpfnet/bpfnet/bpf"
	"github.com/bpfnet/bpfnet/network"
)

// decodeEvent reads a record of the events ring buffer.
func decodeEvent(b []byte, ev *bpf.BpfnetDropEvent) error {
	if len(b) < binary.Size(ev) {
		return fmt.Errorf("drop event of %d bytes, want %d", len(b), binary.Size(ev))
	}
	_, err := binary.Decode(b, binary.NativeEndian, ev)
	return err
}

// dropEvent is what a drop event record says of its packet (not yet its
// time, endpoint or network).
func dropEvent(ev *bpf.BpfnetDropEvent) network.DropEvent {
	x := network.DropEvent{Reason: ReasonNames[ev.Reason%uint8(len(ReasonNames))], Direction: "from_container", Length: int(ev.Len)}
	if ev.Dir == uint8(bpf.BpfnetDirectionDIR_TO_CONTAINER) {
		x.Direction = "to_container"
	}
	var src, dst netip.Addr
	switch ethertype := port(ev.Ethertype); ethertype {
	case unix.ETH_P_IP:
		src, dst = addrOf(ev.Saddr), addrOf(ev.Daddr)
		x.Proto = protoName(ev.Proto)
		if ev.Proto == unix.IPPROTO_ICMP {
			x.ICMPType = icmpName(ev.IcmpType, icmp4Types)
		}
	case unix.ETH_P_IPV6:
		src, dst = netip.AddrFrom16(ev.Saddr6), netip.AddrFrom16(ev.Daddr6)
		x.Proto = protoName(ev.Proto)
		if ev.Proto == unix.IPPROTO_ICMPV6 {
			x.ICMPType = icmpName(ev.IcmpType, icmp6Types)
		}
	case unix.ETH_P_ARP:
		src, dst = addrOf(ev.Saddr), addrOf(ev.Daddr)
		x.Proto = "arp"
	case unix.ETH_P_8021Q, unix.ETH_P_8021AD:
		x.Proto = "vlan"
	case 0: // a record of an older object, or a frame too short to say
	default:
		x.Proto = fmt.Sprintf("ethertype 0x%04x", ethertype)
	}
	if src.IsValid() {
		x.Src, x.Dst = netip.AddrPortFrom(src, port(ev.Sport)), netip.AddrPortFrom(dst, port(ev.Dport))
	}
	return x
}

// ICMP types by name (IANA's ICMP and ICMPv6 parameter registries).
var (
	icmp4Types = map[uint8]string{0: "echo-reply", 3: "destination-unreachable", 5: "redirect", 8: "echo-request",
		11: "time-exceeded", 12: "parameter-problem"}
	icmp6Types = map[uint8]string{1: "destination-unreachable", 2: "packet-too-big", 3: "time-exceeded", 4: "parameter-problem",
		128: "echo-request", 129: "echo-reply", 130: "mld-query", 131: "mld-report", 132: "mld-done",
		133: "router-solicitation", 134: "router-advertisement", 135: "neighbor-solicitation",
		136: "neighbor-advertisement", 137: "redirect", 143: "mldv2-report"}
)

func icmpName(t uint8, names map[uint8]string) string {
	if n, ok := names[t]; ok {
		return n
	}
	return fmt.Sprintf("type %d", t)
}
