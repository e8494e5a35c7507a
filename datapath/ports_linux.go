package datapath

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/bpfnet/bpfnet/bpf"
	"github.com/bpfnet/bpfnet/network"
)

// Published ports: the ports map (bpf/include/ports.h) says where each
// published host port leads; the programs translate connections to it.

func protoNumber(name string) uint8 {
	if name == "udp" {
		return unix.IPPROTO_UDP
	}
	return unix.IPPROTO_TCP
}

// portKey is the ports map key of a mapping; 0.0.0.0 stays 0 (every host
// address).
func portKey(p network.PortMapping) bpf.BpfnetPortKey {
	return bpf.BpfnetPortKey{Addr: be32(p.HostIP), Port: port(p.HostPort), Proto: protoNumber(p.Proto)}
}

// port6Key is the ports6 map key of a mapping published over IPv6: 0.0.0.0
// (Docker publishes it on both versions) and :: are every address.
func port6Key(p network.PortMapping) bpf.BpfnetPort6Key {
	k := bpf.BpfnetPort6Key{Port: port(p.HostPort), Proto: protoNumber(p.Proto)}
	if !p.HostIP.IsUnspecified() {
		k.Addr = in6(p.HostIP)
	}
	return k
}

// publishedOn says whether a mapping is published over IPv4 and over IPv6
// (on an endpoint with an IPv6 address), as Docker does: 0.0.0.0 on both.
func publishedOn(p network.PortMapping, dualStack bool) (v4, v6 bool) {
	return p.HostIP.Is4(), dualStack && (p.HostIP.Is6() || p.HostIP == netip.IPv4Unspecified())
}

// portEntries returns the ports and ports6 map entries of an endpoint
// (callers hold p.mu; the endpoint's veth and network must be known).
func (p *policy) portEntries(v network.View, ep *network.Endpoint) (map[bpf.BpfnetPortKey]bpf.BpfnetPortBackend,
	map[bpf.BpfnetPort6Key]bpf.BpfnetPortBackend6, error) {
	out, out6 := map[bpf.BpfnetPortKey]bpf.BpfnetPortBackend{}, map[bpf.BpfnetPort6Key]bpf.BpfnetPortBackend6{}
	if len(ep.Ports) == 0 {
		return out, out6, nil
	}
	n := v.Network(ep.NetworkID)
	ifc, okv := p.veths[ep.ID]
	br, okb := p.bridges[ep.NetworkID]
	if n == nil || !okv || !okb {
		return nil, nil, fmt.Errorf("endpoint %s: not in the datapath", ep.Name)
	}
	for _, pm := range ep.Ports {
		v4, v6 := publishedOn(pm, ep.IP6.IsValid())
		if v4 {
			out[portKey(pm)] = bpf.BpfnetPortBackend{Addr: be32(ep.IP), Port: port(pm.Port), Ifindex: uint32(ifc.Index),
				NetId: uint32(br.Index), Gateway: be32(n.Gateway), Slot: p.slots[ep.ID]}
		}
		if v6 {
			out6[port6Key(pm)] = bpf.BpfnetPortBackend6{Addr: in6(ep.IP6), Port: port(pm.Port), Ifindex: uint32(ifc.Index),
				NetId: uint32(br.Index), Gateway: in6(n.Gateway6), Slot: p.slots[ep.ID]}
		}
	}
	return out, out6, nil
}

// putPorts writes an endpoint's published ports.
func (p *policy) putPorts(v network.View, ep *network.Endpoint) error {
	entries, entries6, err := p.portEntries(v, ep)
	if err != nil {
		return err
	}
	for k, b := range entries {
		if err := p.coll.Ports.Put(k, b); err != nil {
			return fmt.Errorf("publish %s of endpoint %s: %w", addrPortOf(k), ep.Name, err)
		}
	}
	for k, b := range entries6 {
		if err := p.coll.Ports6.Put(k, b); err != nil {
			return fmt.Errorf("publish [%s]:%d of endpoint %s: %w", addrOf6(k.Addr), port(k.Port), ep.Name, err)
		}
	}
	return nil
}

// deletePorts removes published ports (their connections expire with
// their NAT entries); an entry that is not there is no error.
func (p *policy) deletePorts(ports []network.PortMapping) error {
	var errs []error
	for _, pm := range ports {
		// As if dual-stack: an IPv6 entry that is not there is no error.
		v4, v6 := publishedOn(pm, true)
		if v4 {
			errs = append(errs, del(p.coll.Ports, portKey(pm)))
		}
		if v6 {
			errs = append(errs, del(p.coll.Ports6, port6Key(pm)))
		}
	}
	return errors.Join(errs...)
}

// changePorts replaces an endpoint's published ports old with ep.Ports,
// and its entries' flags with what they say now (EP_F_PUBLISHES: its
// replies may need translating back).
func (p *policy) changePorts(v network.View, ep *network.Endpoint, old []network.PortMapping) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	slot, ok := p.slots[ep.ID]
	if !ok {
		return fmt.Errorf("endpoint %s is not in the datapath", ep.Name)
	}
	ifc, info, ipEntry, err := p.endpointEntries(v, ep, slot)
	if err != nil {
		return err
	}
	if err := p.deletePorts(old); err != nil {
		return err
	}
	if err := p.coll.EpByIfindex.Put(uint32(ifc.Index), info); err != nil {
		return fmt.Errorf("update endpoint %s: %w", ep.Name, err)
	}
	if err := p.putIPs(ep, ipEntry); err != nil {
		return err
	}
	return p.putPorts(v, ep)
}

func addrPortOf(k bpf.BpfnetPortKey) netip.AddrPort {
	return netip.AddrPortFrom(addrOf(k.Addr), port(k.Port))
}

// endpointFlags are an endpoint's endpoint_info flags.
func endpointFlags(ep *network.Endpoint) uint8 {
	if len(ep.Ports) > 0 {
		return uint8(bpf.BpfnetEndpointFlagEP_F_PUBLISHES)
	}
	return 0
}

// sockHook is a socket program and where it attaches.
type sockHook struct {
	typ  ebpf.AttachType
	prog *ebpf.Program
	name string
}

func (p *policy) sockHooks() []sockHook {
	return []sockHook{
		{ebpf.AttachCGroupInet4Connect, p.coll.SockConnect4, "sock_connect4"},
		{ebpf.AttachCGroupUDP4Sendmsg, p.coll.SockSendmsg4, "sock_sendmsg4"},
		{ebpf.AttachCGroupUDP4Recvmsg, p.coll.SockRecvmsg4, "sock_recvmsg4"},
		{ebpf.AttachCgroupInet4GetPeername, p.coll.SockPeername4, "sock_peername4"},
		{ebpf.AttachCGroupInet6Connect, p.coll.SockConnect6, "sock_connect6"},
		{ebpf.AttachCGroupUDP6Sendmsg, p.coll.SockSendmsg6, "sock_sendmsg6"},
		{ebpf.AttachCGroupUDP6Recvmsg, p.coll.SockRecvmsg6, "sock_recvmsg6"},
		{ebpf.AttachCgroupInet6GetPeername, p.coll.SockPeername6, "sock_peername6"},
	}
}

// attachSockets puts the socket programs on the configured cgroup, or
// removes them when none is (callers hold p.mu).
func (p *policy) attachSockets() error {
	var errs []error
	for _, h := range p.sockHooks() {
		if p.cgroup == "" {
			errs = append(errs, p.att.DetachCgroup(h.typ))
			continue
		}
		errs = append(errs, p.att.AttachCgroup(p.cgroup, h.typ, h.prog))
	}
	return errors.Join(errs...)
}

// netnsCookie identifies the daemon's network namespace; the socket
// programs act only on sockets of this namespace.
func netnsCookie() (uint64, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("netns cookie: %w", err)
	}
	defer unix.Close(fd)
	c, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err != nil {
		return 0, fmt.Errorf("netns cookie (SO_NETNS_COOKIE, Linux 5.14+): %w", err)
	}
	return c, nil
}
