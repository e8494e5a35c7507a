// Package datapath is the eBPF enforcer: it turns networks and endpoints
// into entries of the BPF maps, attaches the programs of bpf/ (through
// loader/) to bridges, host-side veths and uplinks, and reads the
// counters. It never changes the host's topology.
package datapath

import (
	"cmp"
	"context"
	"encoding/json"
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
	"sync/atomic"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/bpfnet/bpfnet/bpf"
	"github.com/bpfnet/bpfnet/internal/forwarding"
	"github.com/bpfnet/bpfnet/internal/sysctl"
	"github.com/bpfnet/bpfnet/loader"
	"github.com/bpfnet/bpfnet/network"
)

// ForwardMark is the skb->mark bit the programs set on packets they pass;
// the single FORWARD rule of the eBPF mode accepts packets that carry it.
const ForwardMark = 0x00200000

// Config configures the enforcer.
type Config struct {
	// Root is the bpffs directory for pins (--bpffs).
	Root string
	// StateDir holds the enforcer's ledger (ebpf.json, tc-qdiscs/).
	StateDir string
	// AttachMode is loader.ModeAuto, ModeTCX or ModeTC (--tc-attach).
	AttachMode string
	// Uplinks are the interfaces towards the outside.
	Uplinks []string
	// NATPorts is the range of ports (and ICMP identifiers) translated
	// flows may use; zero means 1024-65535.
	NATPorts [2]uint16
	// Cgroup is the cgroup v2 directory whose sockets reach published
	// ports through the host's own addresses (127.0.0.1 included); empty:
	// the host itself cannot use published ports.
	Cgroup string
	// ForwardRule installs the FORWARD rule that accepts what the programs
	// passed (for traffic the fast paths cannot take on hosts whose FORWARD
	// policy is DROP); without it the eBPF mode installs no iptables rule.
	ForwardRule bool
}

// DefaultNATPorts is the port range of translations unless configured.
var DefaultNATPorts = [2]uint16{1024, 65535}

// ledger records what the enforcer changed outside the BPF objects, so
// Cleanup undoes exactly that.
type ledger struct {
	forwarding.Change
	ForwardRule bool `json:"forward_rule,omitempty"`
}

// Enforcer implements network.Enforcer with BPF programs and maps.
type Enforcer struct {
	log  *slog.Logger
	cfg  Config
	coll *loader.Collection
	att  *loader.Attacher
	path string
	led  ledger

	mu       sync.Mutex
	bridges  map[string]loader.Iface // network id → bridge (its ifindex is the BPF network id)
	veths    map[string]loader.Iface // endpoint id → host-side veth
	slots    map[string]uint32       // endpoint id → traffic slot (slots.go)
	lastMode string                  // attach mode of the last attachment
	gcNAT    atomic.Uint64           // entries the maintenance program collected

	// maintMu serialises runs of the maintenance program (they share its
	// argument map).
	maintMu sync.Mutex
}

// New loads the BPF collection (reusing maps pinned under cfg.Root) and
// returns the enforcer. Nothing is attached until Reconcile.
func New(log *slog.Logger, cfg Config) (*Enforcer, error) {
	if err := loader.ValidMode(cfg.AttachMode); err != nil {
		return nil, err
	}
	if on, _, err := loader.CheckBPFFS(cfg.Root); !on {
		return nil, fmt.Errorf("pins: %w", cmp.Or(err, fmt.Errorf("%s is not on a bpf filesystem", cfg.Root)))
	}
	if cfg.NATPorts == [2]uint16{} {
		cfg.NATPorts = DefaultNATPorts
	}
	if cfg.NATPorts[0] == 0 || cfg.NATPorts[1] < cfg.NATPorts[0] {
		return nil, fmt.Errorf("invalid NAT port range %d-%d", cfg.NATPorts[0], cfg.NATPorts[1])
	}
	var mark uint32
	if cfg.ForwardRule {
		mark = ForwardMark
	}
	if cfg.Cgroup != "" {
		if err := loader.CheckCgroup(cfg.Cgroup); err != nil {
			return nil, err
		}
	}
	cookie, err := netnsCookie()
	if err != nil {
		return nil, err
	}
	skip, err := hostEphemeralPorts()
	if err != nil {
		return nil, err
	}
	if skip[0] <= cfg.NATPorts[0] && cfg.NATPorts[1] <= skip[1] {
		return nil, fmt.Errorf("the masquerade ports %d-%d all lie in the host's ephemeral range %d-%d (net.ipv4.ip_local_port_range), which containers never get, so that the host's own connections never collide with theirs: choose ports outside it",
			cfg.NATPorts[0], cfg.NATPorts[1], skip[0], skip[1])
	}
	log.Info("masqueraded flows get ports outside the host's ephemeral range, so the host's own connections never collide with them",
		"nat_ports", fmt.Sprintf("%d-%d", cfg.NATPorts[0], cfg.NATPorts[1]), "host_ephemeral", fmt.Sprintf("%d-%d", skip[0], skip[1]))
	coll, err := loader.Load(loader.Options{Root: cfg.Root, ForwardMark: mark,
		Constants: map[string]any{"nat_port_min": cfg.NATPorts[0], "nat_port_max": cfg.NATPorts[1],
			"nat_skip_min": skip[0], "nat_skip_max": skip[1], "host_netns_cookie": cookie}})
	if err != nil {
		return nil, err
	}
	for _, m := range coll.Replaced {
		log.Warn("pinned BPF map replaced: an earlier version left it in another layout; endpoints and networks are refilled from the state, tracked flows and counters in it start over", "map", m)
	}
	qdiscs, err := qdiscLedger(cfg.StateDir)
	if err != nil {
		coll.Close()
		return nil, err
	}
	e := &Enforcer{log: log, cfg: cfg, coll: coll, path: filepath.Join(cfg.StateDir, "ebpf.json"),
		att:     &loader.Attacher{Root: cfg.Root, Mode: cfg.AttachMode, QdiscLedger: qdiscs},
		bridges: map[string]loader.Iface{}, veths: map[string]loader.Iface{}, slots: map[string]uint32{}}
	if err := e.readLedger(); err != nil {
		coll.Close()
		return nil, err
	}
	return e, nil
}

// hostAddrReserve is room in host_addrs for the host's addresses that are
// not a network's gateway (its uplinks, loopback, other interfaces).
const hostAddrReserve = 1024

// Limits implements network.Limits: as many networks and endpoints as the
// maps hold (a network needs an entry in networks and subnets and its
// gateway one in host_addrs; an endpoint one in each endpoint map and a
// traffic slot).
func (e *Enforcer) Limits() (networks, endpoints int) {
	c := e.coll
	networks = int(min(c.Networks.MaxEntries(), c.Subnets.MaxEntries(), c.HostAddrs.MaxEntries()-hostAddrReserve))
	endpoints = int(min(c.EpByIfindex.MaxEntries(), c.EpByIp.MaxEntries(), c.Traffic.MaxEntries()/2, c.EpFlows.MaxEntries()))
	return networks, endpoints
}

// Close releases the enforcer's file descriptors; attachments and pins stay.
func (e *Enforcer) Close() error { return e.coll.Close() }

// Name implements network.Enforcer.
func (e *Enforcer) Name() string { return "ebpf" }

// AttachMode returns the mode of the attachments ("tcx" or "tc"), or the
// configured mode when nothing is attached yet.
func (e *Enforcer) AttachMode() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.lastMode != "" {
		return e.lastMode
	}
	return e.cfg.AttachMode
}

func (e *Enforcer) readLedger() error {
	b, err := os.ReadFile(e.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &e.led); err != nil {
		return fmt.Errorf("read %s: %w", e.path, err)
	}
	return nil
}

func (e *Enforcer) saveLedger() error {
	b, _ := json.MarshalIndent(e.led, "", "  ")
	return network.WriteFileAtomic(e.path, append(b, '\n'), 0o600)
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

func (e *Enforcer) attach(ifc loader.Iface, hook loader.Hook, prog *ebpf.Program) error {
	mode, err := e.att.Attach(ifc, hook, prog)
	if err != nil {
		return err
	}
	e.lastMode = mode
	return nil
}

// Reconcile implements network.Enforcer: maps are made to hold exactly v,
// every interface gets its programs (pinned links are updated in place,
// so enforcement has no gap across restarts) and attachments to
// interfaces v no longer has are removed.
func (e *Enforcer) Reconcile(ctx context.Context, v network.View) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.prepareForwarding(); err != nil {
		return err
	}
	if err := e.syncHostAddrs(); err != nil {
		return err
	}
	nets := map[uint32]bpf.BpfnetNetworkInfo{}
	subnets := map[bpf.BpfnetSubnetKey]uint32{}
	e.bridges = map[string]loader.Iface{}
	for _, n := range v.Networks {
		ifc, mac, err := linkOf(n.Bridge)
		if err != nil {
			return err
		}
		id := uint32(ifc.Index)
		e.bridges[n.ID] = ifc
		nets[id] = networkInfo(n, mac)
		subnets[subnetKey(n.Subnet)] = id
	}
	if err := e.assignSlots(v); err != nil {
		return err
	}
	eps := map[uint32]bpf.BpfnetEndpointInfo{}
	ips := map[uint32]bpf.BpfnetIpEndpoint{}
	ports := map[bpf.BpfnetPortKey]bpf.BpfnetPortBackend{}
	e.veths = map[string]loader.Iface{}
	for _, ep := range v.Endpoints {
		ifc, info, ipEntry, err := e.endpointEntries(v, ep, e.slots[ep.ID])
		if err != nil {
			return err
		}
		e.veths[ep.ID] = ifc
		eps[uint32(ifc.Index)] = info
		ips[be32(ep.IP)] = ipEntry
		entries, err := e.portEntries(v, ep)
		if err != nil {
			return err
		}
		maps.Copy(ports, entries)
	}
	// Networks first, so an endpoint never points at a missing network.
	if err := errors.Join(syncMap(e.coll.Networks, nets), syncMap(e.coll.Subnets, subnets),
		syncMap(e.coll.EpByIfindex, eps), syncMap(e.coll.EpByIp, ips), syncMap(e.coll.Ports, ports)); err != nil {
		return err
	}
	wanted := map[string]bool{}
	for _, ifc := range e.bridges {
		if err := e.attach(ifc, loader.Egress, e.coll.ToNetwork); err != nil {
			return err
		}
		wanted[ifc.Name+":egress"] = true
	}
	for _, ifc := range e.veths {
		if err := errors.Join(e.attach(ifc, loader.Ingress, e.coll.FromContainer),
			e.attach(ifc, loader.Egress, e.coll.ToContainer)); err != nil {
			return err
		}
		wanted[ifc.Name+":ingress"], wanted[ifc.Name+":egress"] = true, true
	}
	if err := e.attachUplinks(wanted); err != nil {
		return err
	}
	if err := e.attachSockets(); err != nil {
		return err
	}
	if err := e.removeStaleLinks(wanted); err != nil {
		return err
	}
	return deleteKeys[bpf.BpfnetDropKey, []bpf.BpfnetDropCounts](e.coll.Drops, func(k bpf.BpfnetDropKey) bool {
		_, ep := eps[k.Ifindex]
		_, br := nets[k.Ifindex]
		return !ep && !br
	})
}

// attachUplinks puts from_uplink and to_uplink on every uplink and their
// masquerade addresses in the uplinks map. An uplink that does not exist
// (yet) is logged and skipped.
func (e *Enforcer) attachUplinks(wanted map[string]bool) error {
	if err := e.syncUplinks(); err != nil {
		return err
	}
	for _, name := range e.cfg.Uplinks {
		ifc, err := ifaceOf(name)
		if err != nil {
			e.log.Warn("uplink not attached", "uplink", name, "err", err)
			continue
		}
		if err := errors.Join(e.attach(ifc, loader.Ingress, e.coll.FromUplink), e.attach(ifc, loader.Egress, e.coll.ToUplink)); err != nil {
			return err
		}
		wanted[name+":ingress"], wanted[name+":egress"] = true, true
	}
	return nil
}

// removeStaleLinks detaches pinned links of interface hooks that are not
// wanted (their interface was removed while the daemon was down).
func (e *Enforcer) removeStaleLinks(wanted map[string]bool) error {
	var errs []error
	for _, pin := range e.att.PinnedLinks() {
		if wanted[pin] {
			continue
		}
		ifname, hook, _ := strings.Cut(pin, ":")
		ifc := loader.Iface{Name: ifname}
		if l, err := netlink.LinkByName(ifname); err == nil {
			ifc.Index = l.Attrs().Index
		}
		e.log.Info("removing stale attachment", "interface", ifname, "hook", hook)
		errs = append(errs, e.att.Detach(ifc, loader.Hook(hook)), os.Remove(filepath.Join(e.cfg.Root, "links", pin)))
	}
	return ignoreNotExist(errors.Join(errs...))
}

func ignoreNotExist(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// NetworkAdded implements network.Enforcer: one entry in networks and one
// in subnets, then the bridge's program.
func (e *Enforcer) NetworkAdded(ctx context.Context, v network.View, n *network.Network) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	ifc, mac, err := linkOf(n.Bridge)
	if err != nil {
		return err
	}
	id := uint32(ifc.Index)
	if err := e.coll.Networks.Put(id, networkInfo(n, mac)); err != nil {
		return fmt.Errorf("add network %s to map: %w", n.Name, err)
	}
	e.bridges[n.ID] = ifc
	if err := e.coll.Subnets.Put(subnetKey(n.Subnet), id); err != nil {
		return fmt.Errorf("add subnet %s to map: %w", n.Subnet, err)
	}
	// The gateway is a host address from now on. The address watcher would
	// add it too, but only once it runs and the kernel's notification
	// arrives; until then containers of other networks would be refused
	// the gateway (the default network is created before the watcher
	// starts).
	if err := e.coll.HostAddrs.Put(be32(n.Gateway), uint32(1)); err != nil {
		return fmt.Errorf("add gateway %s to host addresses: %w", n.Gateway, err)
	}
	return e.attach(ifc, loader.Egress, e.coll.ToNetwork)
}

// NetworkRemoved implements network.Enforcer.
func (e *Enforcer) NetworkRemoved(ctx context.Context, v network.View, n *network.Network) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	ifc, ok := e.bridges[n.ID]
	if !ok {
		return nil
	}
	id := uint32(ifc.Index)
	err := errors.Join(e.att.Detach(ifc, loader.Egress),
		del(e.coll.Subnets, subnetKey(n.Subnet)), del(e.coll.Networks, id), e.deleteDrops(id))
	if err == nil {
		delete(e.bridges, n.ID)
	}
	return err
}

// EndpointAdded implements network.Enforcer: the endpoint's two map
// entries are written before its programs are attached, so the programs
// know it from their first packet.
func (e *Enforcer) EndpointAdded(ctx context.Context, v network.View, ep *network.Endpoint) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	slot, err := e.newSlot()
	if err != nil {
		return err
	}
	ifc, info, ipEntry, err := e.endpointEntries(v, ep, slot)
	if err != nil {
		return err
	}
	e.veths[ep.ID] = ifc
	e.slots[ep.ID] = slot
	if err := e.coll.EpByIfindex.Put(uint32(ifc.Index), info); err != nil {
		return fmt.Errorf("add endpoint %s to map: %w", ep.Name, err)
	}
	if err := e.coll.EpByIp.Put(be32(ep.IP), ipEntry); err != nil {
		return fmt.Errorf("add endpoint %s to map: %w", ep.Name, err)
	}
	if err := e.putPorts(v, ep); err != nil {
		return err
	}
	return errors.Join(e.attach(ifc, loader.Ingress, e.coll.FromContainer), e.attach(ifc, loader.Egress, e.coll.ToContainer))
}

// endpointEntries returns an endpoint's veth and its entries in
// ep_by_ifindex and ep_by_ip with traffic slot `slot` (callers hold e.mu;
// the network's bridge must be known).
func (e *Enforcer) endpointEntries(v network.View, ep *network.Endpoint, slot uint32) (loader.Iface, bpf.BpfnetEndpointInfo, bpf.BpfnetIpEndpoint, error) {
	ifc, err := ifaceOf(ep.HostIf)
	if err != nil {
		return ifc, bpf.BpfnetEndpointInfo{}, bpf.BpfnetIpEndpoint{}, err
	}
	br, ok := e.bridges[ep.NetworkID]
	n := v.Network(ep.NetworkID)
	if !ok || n == nil {
		return ifc, bpf.BpfnetEndpointInfo{}, bpf.BpfnetIpEndpoint{}, fmt.Errorf("endpoint %s: network %s is not in the datapath", ep.Name, ep.NetworkID)
	}
	info, ipEntry, err := endpointInfo(ep, n, uint32(br.Index), uint32(ifc.Index), slot)
	return ifc, info, ipEntry, err
}

// EndpointRemoved implements network.Enforcer. The endpoint's map entries
// go first, so its veth's programs drop everything from then on (fail
// closed, even if the daemon dies half-way); then every tracked flow,
// translation and published-port connection that refers to its address,
// so none outlives it or follows its address to the next endpoint; then
// its programs.
func (e *Enforcer) EndpointRemoved(ctx context.Context, v network.View, ep *network.Endpoint) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	ifc, ok := e.veths[ep.ID]
	if !ok {
		return nil
	}
	index := ifc.Index
	ip := be32(ep.IP)
	err := errors.Join(e.deletePorts(ep), del(e.coll.EpByIfindex, uint32(index)), del(e.coll.EpByIp, ip))
	if err != nil {
		return err
	}
	if err := e.purge(ip); err != nil {
		return err
	}
	err = errors.Join(e.deleteDrops(uint32(index)), e.att.Detach(ifc, loader.Ingress), e.att.Detach(ifc, loader.Egress))
	if err == nil {
		delete(e.veths, ep.ID)
		delete(e.slots, ep.ID)
	}
	return err
}

func (e *Enforcer) deleteDrops(ifindex uint32) error {
	return errors.Join(
		del(e.coll.Drops, bpf.BpfnetDropKey{Ifindex: ifindex, Dir: uint32(bpf.BpfnetDirectionDIR_FROM_CONTAINER)}),
		del(e.coll.Drops, bpf.BpfnetDropKey{Ifindex: ifindex, Dir: uint32(bpf.BpfnetDirectionDIR_TO_CONTAINER)}))
}

// Cleanup implements network.Enforcer (see Cleanup).
func (e *Enforcer) Cleanup(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := Cleanup(e.log, e.cfg); err != nil {
		return err
	}
	e.led = ledger{}
	return nil
}

// Attachment is one program attached to an interface hook.
type Attachment struct {
	Interface string
	Hook      string
	Mode      string // "tcx" or "tc"; empty when missing
	Program   string
	ProgramID uint32
}

// Attachments lists what should be attached and how it is, for status.
func (e *Enforcer) Attachments() []Attachment {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []Attachment
	add := func(ifc loader.Iface, hook loader.Hook, prog string) {
		a := Attachment{Interface: ifc.Name, Hook: string(hook), Program: prog}
		if mode, id, ok := e.att.Query(ifc, hook); ok {
			a.Mode, a.ProgramID = mode, uint32(id)
		}
		out = append(out, a)
	}
	for _, name := range e.cfg.Uplinks {
		if ifc, err := ifaceOf(name); err == nil {
			add(ifc, loader.Ingress, "from_uplink")
			add(ifc, loader.Egress, "to_uplink")
		}
	}
	for _, ifc := range sortedIfaces(e.bridges) {
		add(ifc, loader.Egress, "to_network")
	}
	for _, ifc := range sortedIfaces(e.veths) {
		add(ifc, loader.Ingress, "from_container")
		add(ifc, loader.Egress, "to_container")
	}
	if e.cfg.Cgroup != "" {
		for _, h := range e.sockHooks() {
			a := Attachment{Interface: e.cfg.Cgroup, Hook: h.typ.String(), Program: h.name}
			if id, ok := e.att.QueryCgroup(h.typ); ok {
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

// Ifindexes returns the interface index of every endpoint's host-side veth
// and of every network's bridge, by endpoint and network id (the keys of
// Counters).
func (e *Enforcer) Ifindexes() (veths, bridges map[string]uint32) {
	e.mu.Lock()
	defer e.mu.Unlock()
	veths, bridges = map[string]uint32{}, map[string]uint32{}
	for id, ifc := range e.veths {
		veths[id] = uint32(ifc.Index)
	}
	for id, ifc := range e.bridges {
		bridges[id] = uint32(ifc.Index)
	}
	return veths, bridges
}

// hostEphemeralPorts is the host's net.ipv4.ip_local_port_range: the ports
// its stack picks for its own connections, which no container is given.
func hostEphemeralPorts() ([2]uint16, error) {
	v, err := sysctl.Read(sysctl.Root, "net/ipv4/ip_local_port_range")
	if err != nil {
		return [2]uint16{}, fmt.Errorf("read net.ipv4.ip_local_port_range: %w", err)
	}
	var lo, hi uint16
	if _, err := fmt.Sscanf(v, "%d %d", &lo, &hi); err != nil || lo > hi {
		return [2]uint16{}, fmt.Errorf("net.ipv4.ip_local_port_range %q: want two ports", v)
	}
	return [2]uint16{lo, hi}, nil
}
