package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/cilium/ebpf"

	"github.com/bpfnet/bpfnet/bpf"
	"github.com/bpfnet/bpfnet/network"
)

// Map entries in the layout of bpf/include/shared.h. Addresses are in
// network byte order in memory, which is what NativeEndian of the four
// address bytes gives.

func be32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.NativeEndian.Uint32(b[:])
}

func addrOf(v uint32) netip.Addr {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

// networkInfo is a network's map entry; mac is its bridge's address.
func networkInfo(n *network.Network, mac net.HardwareAddr) bpf.BpfnetNetworkInfo {
	var flags uint32
	if n.ICC {
		flags |= uint32(bpf.BpfnetNetworkFlagNET_F_ICC)
	}
	if n.Internal {
		flags |= uint32(bpf.BpfnetNetworkFlagNET_F_INTERNAL)
	}
	if n.Masquerade {
		flags |= uint32(bpf.BpfnetNetworkFlagNET_F_MASQUERADE)
	}
	info := bpf.BpfnetNetworkInfo{Flags: flags, Broadcast: be32(network.Broadcast(n.Subnet))}
	if n.HostIPv4.IsValid() {
		info.SnatIp = be32(n.HostIPv4)
	}
	copy(info.Mac[:], mac)
	return info
}

func subnetKey(p netip.Prefix) bpf.BpfnetSubnetKey {
	return bpf.BpfnetSubnetKey{Prefixlen: uint32(p.Bits()), Addr: be32(p.Masked().Addr())}
}

// in6 is an IPv6 address as the maps hold it (four words in network byte
// order in memory); the zero key for an invalid address.
func in6(a netip.Addr) bpf.BpfnetIn6Key {
	var k bpf.BpfnetIn6Key
	if !a.Is6() {
		return k
	}
	b := a.As16()
	for i := range k.A {
		k.A[i] = binary.NativeEndian.Uint32(b[4*i:])
	}
	return k
}

// addrOf6 is the address of an in6 key.
func addrOf6(k bpf.BpfnetIn6Key) netip.Addr {
	var b [16]byte
	for i, w := range k.A {
		binary.NativeEndian.PutUint32(b[4*i:], w)
	}
	return netip.AddrFrom16(b)
}

func subnet6Key(p netip.Prefix) bpf.BpfnetSubnet6Key {
	return bpf.BpfnetSubnet6Key{Prefixlen: uint32(p.Bits()), Addr: in6(p.Masked().Addr()).A}
}

// endpointInfo is an endpoint's entries in ep_by_ifindex (with its
// network's subnet and flags copied in) and ep_by_ip; netID is its
// bridge's ifindex, ifindex its host-side veth's, slot its traffic slot.
func endpointInfo(ep *network.Endpoint, n *network.Network, netID, ifindex, slot uint32) (bpf.BpfnetEndpointInfo, bpf.BpfnetIpEndpoint, error) {
	mac, err := net.ParseMAC(ep.MAC)
	if err != nil || len(mac) != 6 {
		return bpf.BpfnetEndpointInfo{}, bpf.BpfnetIpEndpoint{}, fmt.Errorf("endpoint %s: bad MAC %q", ep.Name, ep.MAC)
	}
	nw := networkInfo(n, nil)
	var mask [4]byte
	binary.BigEndian.PutUint32(mask[:], ^uint32(0)<<(32-n.Subnet.Bits()))
	info := bpf.BpfnetEndpointInfo{Ip: be32(ep.IP), NetId: netID, Subnet: be32(n.Subnet.Masked().Addr()),
		Mask: be32(netip.AddrFrom4(mask)), Broadcast: nw.Broadcast, NetFlags: nw.Flags, Flags: endpointFlags(ep), Slot: slot,
		Ip6: in6(ep.IP6).A}
	copy(info.Mac[:], mac)
	ipEntry := bpf.BpfnetIpEndpoint{Ifindex: ifindex, NetId: netID, Slot: slot}
	copy(ipEntry.Mac[:], mac)
	return info, ipEntry, nil
}

// syncMap makes m hold exactly want: missing and changed entries are
// written (in place, so the programs never see them absent), entries not
// in want are deleted, entries already right are left alone.
func syncMap[K, V comparable](m *ebpf.Map, want map[K]V) error {
	var stale []K
	have := map[K]V{}
	var k K
	var v V
	it := m.Iterate()
	for it.Next(&k, &v) {
		if _, ok := want[k]; !ok {
			stale = append(stale, k)
		} else {
			have[k] = v
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterate map %s: %w", name(m), err)
	}
	for _, k := range stale {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete from map %s: %w", name(m), err)
		}
	}
	for k, v := range want {
		if old, ok := have[k]; ok && old == v {
			continue
		}
		if err := m.Put(k, v); err != nil {
			return fmt.Errorf("update map %s: %w", name(m), err)
		}
	}
	return nil
}

// deleteKeys deletes the entries for which match is true.
func deleteKeys[K comparable, V any](m *ebpf.Map, match func(K) bool) error {
	var keys []K
	var k K
	var v V
	it := m.Iterate()
	for it.Next(&k, &v) {
		if match(k) {
			keys = append(keys, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterate map %s: %w", name(m), err)
	}
	for _, k := range keys {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete from map %s: %w", name(m), err)
		}
	}
	return nil
}

func name(m *ebpf.Map) string {
	if info, err := m.Info(); err == nil {
		return info.Name
	}
	return "?"
}

func del(m *ebpf.Map, k any) error {
	if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete from map %s: %w", name(m), err)
	}
	return nil
}
