package datapath

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/bpfnet/bpfnet/api"
	"github.com/bpfnet/bpfnet/bpf"
	"github.com/bpfnet/bpfnet/loader"
	"github.com/bpfnet/bpfnet/network"
)

// policy is the datapath's picture of the networks and endpoints: their
// entries in the policy maps (networks, subnets, ep_by_ifindex, ep_by_ip,
// ports), the programs attached to their interfaces and the uplinks', and
// each endpoint's traffic slot. Changes come one at a time from the
// manager; mu guards the interface and slot tables against the readers
// (status, counters, drop events) meanwhile.
type policy struct {
	log  *slog.Logger
	coll *loader.Collection
	att  *loader.Attacher
	// root is the bpffs root of the pinned links; uplinks and cgroup are
	// where the uplink and socket programs go.
	root    string
	uplinks []string
	cgroup  string

	mu       sync.Mutex
	bridges  map[string]loader.Iface // network id → bridge (its ifindex is the BPF network id)
	veths    map[string]loader.Iface // endpoint id → host-side veth
	slots    map[string]uint32       // endpoint id → traffic slot (slots.go)
	lastMode string                  // attach mode of the last attachment

	// The reverse of veths and bridges: whose an interface index is (what
	// names a counter or a drop event without a walk over all of them).
	vethOwner, bridgeOwner map[uint32]string
}

func ifaceOf(name string) (loader.Iface, error) {
	ifc, _, err := linkOf(name)
	return ifc, err
}

// linkOf returns an interface and its MAC address.
func linkOf(name string) (loader.Iface, net.HardwareAddr, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return loader.Iface{}, nil, fmt.Errorf("interface %s: %w", name, err)
	}
	return loader.Iface{Name: name, Index: l.Attrs().Index}, l.Attrs().HardwareAddr, nil
}

// attach attaches prog to ifc's hook (callers hold p.mu).
func (p *policy) attach(ifc loader.Iface, hook loader.Hook, prog *ebpf.Program) error {
	mode, err := p.att.Attach(ifc, hook, prog)
	if err != nil {
		return err
	}
	p.lastMode = mode
	return nil
}

// reconcile makes the maps hold exactly v, gives every interface its
// programs (pinned links are updated in place, so enforcement has no gap
// across restarts) and removes attachments to interfaces v no longer has.
func (p *policy) reconcile(v network.View) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	nets := map[uint32]bpf.BpfnetNetworkInfo{}
	subnets := map[bpf.BpfnetSubnetKey]uint32{}
	subnets6 := map[bpf.BpfnetSubnet6Key]uint32{}
	p.bridges, p.bridgeOwner = map[string]loader.Iface{}, map[uint32]string{}
	for _, n := range v.Networks {
		ifc, mac, err := linkOf(n.Bridge)
		if err != nil {
			return err
		}
		id := uint32(ifc.Index)
		p.bridges[n.ID], p.bridgeOwner[id] = ifc, n.ID
		nets[id] = networkInfo(n, mac)
		subnets[subnetKey(n.Subnet)] = id
		if n.DualStack() {
			subnets6[subnet6Key(n.Subnet6)] = id
		}
	}
	if err := p.assignSlots(v); err != nil {
		return err
	}
	eps := map[uint32]bpf.BpfnetEndpointInfo{}
	ips := map[uint32]bpf.BpfnetIpEndpoint{}
	ips6 := map[bpf.BpfnetIn6Key]bpf.BpfnetIpEndpoint{}
	ports := map[bpf.BpfnetPortKey]bpf.BpfnetPortBackend{}
	ports6 := map[bpf.BpfnetPort6Key]bpf.BpfnetPortBackend6{}
	p.veths, p.vethOwner = map[string]loader.Iface{}, map[uint32]string{}
	for _, ep := range v.Endpoints {
		ifc, info, ipEntry, err := p.endpointEntries(v, ep, p.slots[ep.ID])
		if err != nil {
			return err
		}
		p.veths[ep.ID], p.vethOwner[uint32(ifc.Index)] = ifc, ep.ID
		eps[uint32(ifc.Index)] = info
		ips[be32(ep.IP)] = ipEntry
		if ep.IP6.IsValid() {
			ips6[in6(ep.IP6)] = ipEntry
		}
		entries, entries6, err := p.portEntries(v, ep)
		if err != nil {
			return err
		}
		maps.Copy(ports, entries)
		maps.Copy(ports6, entries6)
	}
	// Networks first, so an endpoint never points at a missing network.
	c := p.coll
	if err := errors.Join(syncMap(c.Networks, nets), syncMap(c.Subnets, subnets), syncMap(c.Subnets6, subnets6),
		syncMap(c.EpByIfindex, eps), syncMap(c.EpByIp, ips), syncMap(c.EpByIp6, ips6),
		syncMap(c.Ports, ports), syncMap(c.Ports6, ports6)); err != nil {
		return err
	}
	wanted := map[string]bool{}
	// Bridges have no program: to_container judges what the host sends
	// into a network. Earlier builds attached one (to_network); an
	// upgrade's first reconcile removes it, in either attach mode.
	for _, ifc := range p.bridges {
		if err := p.att.Detach(ifc, loader.Egress); err != nil {
			return err
		}
	}
	for _, ifc := range p.veths {
		if err := errors.Join(p.attach(ifc, loader.Ingress, c.FromContainer), p.attach(ifc, loader.Egress, c.ToContainer)); err != nil {
			return err
		}
		wanted[ifc.Name+":ingress"], wanted[ifc.Name+":egress"] = true, true
	}
	for _, name := range p.uplinks {
		if err := p.attachUplink(name); err != nil {
			return err
		}
		wanted[name+":ingress"], wanted[name+":egress"] = true, true
	}
	if err := p.attachSockets(); err != nil {
		return err
	}
	if err := p.removeStaleLinks(wanted); err != nil {
		return err
	}
	return deleteKeys[bpf.BpfnetDropKey, []bpf.BpfnetDropCounts](c.Drops, func(k bpf.BpfnetDropKey) bool {
		_, ep := eps[k.Ifindex]
		_, br := nets[k.Ifindex]
		return !ep && !br
	})
}

// attachUplink gives uplink name its programs (callers hold p.mu); one
// that does not exist is skipped with a warning.
func (p *policy) attachUplink(name string) error {
	ifc, err := ifaceOf(name)
	if err != nil {
		p.log.Warn("uplink not attached", "uplink", name, "err", err)
		return nil
	}
	return errors.Join(p.attach(ifc, loader.Ingress, p.coll.FromUplink), p.attach(ifc, loader.Egress, p.coll.ToUplink))
}

// setUplinks makes names the uplinks: the uplink programs go on the new
// ones and come off those that no longer are (or their pins go, if the
// interface is gone and its links with it).
func (p *policy) setUplinks(names []string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for _, name := range p.uplinks {
		if slices.Contains(names, name) {
			continue
		}
		if ifc, err := ifaceOf(name); err == nil {
			errs = append(errs, p.att.Detach(ifc, loader.Ingress), p.att.Detach(ifc, loader.Egress))
		}
		// Detach unpinned them; a pin left holds a link to an interface
		// that is gone.
		for _, hook := range []loader.Hook{loader.Ingress, loader.Egress} {
			if err := os.Remove(filepath.Join(p.root, "links", name+":"+string(hook))); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	for _, name := range names {
		if !slices.Contains(p.uplinks, name) {
			errs = append(errs, p.attachUplink(name))
		}
	}
	p.uplinks = slices.Clone(names)
	return errors.Join(errs...)
}

// removeStaleLinks detaches pinned links of interface hooks that are not
// wanted (their interface was removed while the daemon was down).
func (p *policy) removeStaleLinks(wanted map[string]bool) error {
	var errs []error
	for _, pin := range p.att.PinnedLinks() {
		if wanted[pin] {
			continue
		}
		ifname, hook, _ := strings.Cut(pin, ":")
		ifc := loader.Iface{Name: ifname}
		if l, err := netlink.LinkByName(ifname); err == nil {
			ifc.Index = l.Attrs().Index
		}
		p.log.Info("removing stale attachment", "interface", ifname, "hook", hook)
		errs = append(errs, p.att.Detach(ifc, loader.Hook(hook)), os.Remove(filepath.Join(p.root, "links", pin)))
	}
	err := errors.Join(errs...)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// addNetwork writes a network's entries in networks and subnets. Its
// bridge gets no program (to_container judges what enters a container), so
// a network costs no attachment and no wait for the kernel's RCU grace
// period that each TCX attachment takes.
func (p *policy) addNetwork(n *network.Network) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	ifc, mac, err := linkOf(n.Bridge)
	if err != nil {
		return err
	}
	id := uint32(ifc.Index)
	if err := p.coll.Networks.Put(id, networkInfo(n, mac)); err != nil {
		return fmt.Errorf("add network %s to map: %w", n.Name, err)
	}
	p.bridges[n.ID], p.bridgeOwner[id] = ifc, n.ID
	if err := p.coll.Subnets.Put(subnetKey(n.Subnet), id); err != nil {
		return fmt.Errorf("add subnet %s to map: %w", n.Subnet, err)
	}
	if n.DualStack() {
		if err := p.coll.Subnets6.Put(subnet6Key(n.Subnet6), id); err != nil {
			return fmt.Errorf("add subnet %s to map: %w", n.Subnet6, err)
		}
	}
	return nil
}

// removeNetwork deletes a network's entries.
func (p *policy) removeNetwork(n *network.Network) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	ifc, ok := p.bridges[n.ID]
	if !ok {
		return nil
	}
	id := uint32(ifc.Index)
	err := errors.Join(del(p.coll.Subnets, subnetKey(n.Subnet)), p.forgetSubnet6(n), del(p.coll.Networks, id), p.deleteDrops(id))
	if err == nil {
		delete(p.bridges, n.ID)
		delete(p.bridgeOwner, id)
	}
	return err
}

// addEndpoint gives an endpoint a slot and writes its entries before its
// programs are attached, so the programs know it from their first packet.
func (p *policy) addEndpoint(v network.View, ep *network.Endpoint) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	slot, err := p.newSlot()
	if err != nil {
		return err
	}
	ifc, info, ipEntry, err := p.endpointEntries(v, ep, slot)
	if err != nil {
		return err
	}
	p.veths[ep.ID], p.vethOwner[uint32(ifc.Index)] = ifc, ep.ID
	p.slots[ep.ID] = slot
	if err := p.coll.EpByIfindex.Put(uint32(ifc.Index), info); err != nil {
		return fmt.Errorf("add endpoint %s to map: %w", ep.Name, err)
	}
	if err := p.putIPs(ep, ipEntry); err != nil {
		return err
	}
	if err := p.putPorts(v, ep); err != nil {
		return err
	}
	return errors.Join(p.attach(ifc, loader.Ingress, p.coll.FromContainer), p.attach(ifc, loader.Egress, p.coll.ToContainer))
}

// preattach attaches the endpoint programs to the host side of a spare
// veth pair (network.Preattacher): an endpoint that takes it later finds
// its links pinned and only has their programs replaced, which waits for
// nothing. It reports false, attaching nothing, where the attachments are
// legacy tc filters: those wait for nothing either.
func (p *policy) preattach(name string) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ifc, err := ifaceOf(name)
	if err != nil {
		return false, err
	}
	mode, err := p.att.Attach(ifc, loader.Ingress, p.coll.FromContainer)
	if err == nil && mode == loader.ModeTCX {
		_, err = p.att.Attach(ifc, loader.Egress, p.coll.ToContainer)
		if err == nil {
			return true, nil
		}
	}
	return false, errors.Join(err, p.att.Detach(ifc, loader.Ingress), p.att.Detach(ifc, loader.Egress))
}

// unattach removes what preattach attached to a spare that is deleted
// unused.
func (p *policy) unattach(name string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	ifc := loader.Iface{Name: name}
	if l, err := netlink.LinkByName(name); err == nil {
		ifc.Index = l.Attrs().Index
	}
	return errors.Join(p.att.Detach(ifc, loader.Ingress), p.att.Detach(ifc, loader.Egress))
}

// forgetEndpoint deletes an endpoint's published ports and map entries: its
// programs drop everything from then on (no_endpoint). It reports whether
// the endpoint was known.
func (p *policy) forgetEndpoint(ep *network.Endpoint) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ifc, ok := p.veths[ep.ID]
	if !ok {
		return false, nil
	}
	err := errors.Join(p.deletePorts(ep.Ports), del(p.coll.EpByIfindex, uint32(ifc.Index)), del(p.coll.EpByIp, be32(ep.IP)))
	if ep.IP6.IsValid() {
		err = errors.Join(err, del(p.coll.EpByIp6, in6(ep.IP6)))
	}
	return true, err
}

// putIPs writes an endpoint's ep_by_ip entry, and its ep_by_ip6 one on a
// dual-stack network.
func (p *policy) putIPs(ep *network.Endpoint, ipEntry bpf.BpfnetIpEndpoint) error {
	if err := p.coll.EpByIp.Put(be32(ep.IP), ipEntry); err != nil {
		return fmt.Errorf("add endpoint %s to map: %w", ep.Name, err)
	}
	if ep.IP6.IsValid() {
		if err := p.coll.EpByIp6.Put(in6(ep.IP6), ipEntry); err != nil {
			return fmt.Errorf("add endpoint %s to map: %w", ep.Name, err)
		}
	}
	return nil
}

// forgetSubnet6 deletes a dual-stack network's IPv6 subnet entry.
func (p *policy) forgetSubnet6(n *network.Network) error {
	if !n.DualStack() {
		return nil
	}
	return del(p.coll.Subnets6, subnet6Key(n.Subnet6))
}

// detachEndpoint removes a forgotten endpoint's drops and programs.
func (p *policy) detachEndpoint(ep *network.Endpoint) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	ifc, ok := p.veths[ep.ID]
	if !ok {
		return nil
	}
	err := errors.Join(p.deleteDrops(uint32(ifc.Index)), p.att.Detach(ifc, loader.Ingress), p.att.Detach(ifc, loader.Egress))
	if err == nil {
		delete(p.veths, ep.ID)
		delete(p.vethOwner, uint32(ifc.Index))
		delete(p.slots, ep.ID)
	}
	return err
}

// endpointEntries returns an endpoint's veth and its entries in
// ep_by_ifindex and ep_by_ip with traffic slot `slot` (callers hold p.mu;
// the network's bridge must be known).
func (p *policy) endpointEntries(v network.View, ep *network.Endpoint, slot uint32) (loader.Iface, bpf.BpfnetEndpointInfo, bpf.BpfnetIpEndpoint, error) {
	ifc, err := ifaceOf(ep.HostIf)
	if err != nil {
		return ifc, bpf.BpfnetEndpointInfo{}, bpf.BpfnetIpEndpoint{}, err
	}
	br, ok := p.bridges[ep.NetworkID]
	n := v.Network(ep.NetworkID)
	if !ok || n == nil {
		return ifc, bpf.BpfnetEndpointInfo{}, bpf.BpfnetIpEndpoint{}, fmt.Errorf("endpoint %s: network %s is not in the datapath", ep.Name, ep.NetworkID)
	}
	info, ipEntry, err := endpointInfo(ep, n, uint32(br.Index), uint32(ifc.Index), slot)
	return ifc, info, ipEntry, err
}

// deleteDrops deletes an interface's drop counters, of both directions
// and families.
func (p *policy) deleteDrops(ifindex uint32) error {
	var errs []error
	for _, dir := range []bpf.BpfnetDirection{bpf.BpfnetDirectionDIR_FROM_CONTAINER, bpf.BpfnetDirectionDIR_TO_CONTAINER} {
		for fam := range bpf.BpfnetFamilyFAMILY_MAX {
			errs = append(errs, del(p.coll.Drops, bpf.BpfnetDropKey{Ifindex: ifindex, Dir: uint32(dir), Family: uint32(fam)}))
		}
	}
	return errors.Join(errs...)
}

// checkEndpoint reports what of an endpoint the datapath lacks: its
// entries in ep_by_ifindex, ep_by_ip (and ep_by_ip6), and its two
// programs.
func (p *policy) checkEndpoint(ep *network.Endpoint) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	ifc, ok := p.veths[ep.ID]
	if !ok {
		return fmt.Errorf("endpoint %s is not in the datapath", ep.Name)
	}
	var info bpf.BpfnetEndpointInfo
	if err := p.coll.EpByIfindex.Lookup(uint32(ifc.Index), &info); err != nil {
		return fmt.Errorf("no ep_by_ifindex entry for %s: %w", ifc.Name, err)
	}
	var byIP bpf.BpfnetIpEndpoint
	if err := p.coll.EpByIp.Lookup(be32(ep.IP), &byIP); err != nil || byIP.Ifindex != uint32(ifc.Index) {
		return fmt.Errorf("no ep_by_ip entry of %s for %s", ep.IP, ifc.Name)
	}
	if ep.IP6.IsValid() {
		if err := p.coll.EpByIp6.Lookup(in6(ep.IP6), &byIP); err != nil || byIP.Ifindex != uint32(ifc.Index) {
			return fmt.Errorf("no ep_by_ip6 entry of %s for %s", ep.IP6, ifc.Name)
		}
	}
	for _, hook := range []loader.Hook{loader.Ingress, loader.Egress} {
		if _, _, ok := p.att.Query(ifc, hook); !ok {
			return fmt.Errorf("no program on %s %s", ifc.Name, hook)
		}
	}
	return nil
}

// attachMode returns the mode of the attachments ("tcx" or "tc"), or
// fallback when nothing is attached yet.
func (p *policy) attachMode(fallback string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lastMode != "" {
		return p.lastMode
	}
	return fallback
}

// attachments lists what should be attached and how it is, for status.
func (p *policy) attachments() []api.Attachment {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []api.Attachment
	add := func(ifc loader.Iface, hook loader.Hook, prog string) {
		a := api.Attachment{Interface: ifc.Name, Hook: string(hook), Program: prog}
		if mode, id, ok := p.att.Query(ifc, hook); ok {
			a.Mode, a.ProgramID = mode, uint32(id)
		}
		out = append(out, a)
	}
	for _, name := range p.uplinks {
		if ifc, err := ifaceOf(name); err == nil {
			add(ifc, loader.Ingress, "from_uplink")
			add(ifc, loader.Egress, "to_uplink")
		}
	}
	for _, ifc := range sortedIfaces(p.veths) {
		add(ifc, loader.Ingress, "from_container")
		add(ifc, loader.Egress, "to_container")
	}
	if p.cgroup != "" {
		for _, h := range p.sockHooks() {
			a := api.Attachment{Interface: p.cgroup, Hook: h.typ.String(), Program: h.name}
			if id, ok := p.att.QueryCgroup(h.typ); ok {
				a.Mode, a.ProgramID = "cgroup", uint32(id)
			}
			out = append(out, a)
		}
	}
	return out
}

func sortedIfaces(m map[string]loader.Iface) []loader.Iface {
	out := slices.Collect(maps.Values(m))
	slices.SortFunc(out, func(a, b loader.Iface) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// owners returns, by interface index, the endpoint (veths) and the network
// (bridges) behind each interface the datapath knows, and each endpoint's
// slot: what names the counters.
func (p *policy) owners() (veths map[uint32]string, bridges map[uint32]string, slots map[string]uint32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.vethOwner), maps.Clone(p.bridgeOwner), maps.Clone(p.slots)
}

// ownerOf returns the endpoint or the network an interface index belongs
// to (what names a drop event).
func (p *policy) ownerOf(ifindex uint32) (endpoint, network string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.vethOwner[ifindex], p.bridgeOwner[ifindex]
}
