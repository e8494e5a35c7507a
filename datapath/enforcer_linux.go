package datapath

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/bpfnet/bpfnet/api"
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

// Enforcer implements network.Enforcer with BPF programs and maps. It is
// a composition of parts that each own their maps and their lock:
//
//   - policy (policy.go, slots.go, ports.go): the networks, endpoints and
//     published ports in the policy maps, and the programs' attachments;
//   - addrs (hostaddrs_linux.go): the host's own addresses and the
//     uplinks' masquerade addresses, kept in step by a watcher;
//   - nat (nat.go): the connection and translation tables, their listing
//     and garbage collection;
//   - counters (counters.go): traffic and drop counters, drop events;
//   - fwd (forward_linux.go): ip_forward and the one FORWARD rule.
//
// The manager serialises the network.Enforcer calls; the parts' locks
// guard them against the readers (status, metrics, monitor) and the
// background work of Run.
type Enforcer struct {
	log      *slog.Logger
	cfg      Config
	coll     *loader.Collection
	policy   *policy
	addrs    *hostAddrs
	nat      *natTable
	counters *counters
	fwd      *forward

	// updates are the address notifications subscribed to before the
	// state is applied (so none is missed), handed to the watcher by Run.
	updates <-chan netlink.AddrUpdate
	stop    context.CancelFunc
}

// GCInterval is how often Run collects expired translations.
const GCInterval = 30 * time.Second

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
	att := &loader.Attacher{Root: cfg.Root, Mode: cfg.AttachMode, QdiscLedger: qdiscLedger(cfg.StateDir)}
	p := &policy{log: log, coll: coll, att: att, root: cfg.Root, uplinks: cfg.Uplinks, cgroup: cfg.Cgroup,
		bridges: map[string]loader.Iface{}, veths: map[string]loader.Iface{}, slots: map[string]uint32{},
		vethOwner: map[uint32]string{}, bridgeOwner: map[uint32]string{}}
	return &Enforcer{log: log, cfg: cfg, coll: coll, policy: p,
		addrs:    &hostAddrs{log: log, coll: coll, uplinks: cfg.Uplinks},
		nat:      &natTable{log: log, coll: coll},
		counters: &counters{log: log, coll: coll, policy: p},
		fwd:      &forward{log: log, path: ledgerPath(cfg.StateDir), rule: cfg.ForwardRule},
		stop:     func() {},
	}, nil
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
	endpoints = int(min(c.EpByIfindex.MaxEntries(), c.EpByIp.MaxEntries(), slotCount(c), c.EpFlows.MaxEntries()))
	return networks, endpoints
}

// Close stops the background work and releases the enforcer's file
// descriptors; attachments and pins stay.
func (e *Enforcer) Close() error {
	e.stop()
	return e.coll.Close()
}

// Name implements network.Enforcer.
func (e *Enforcer) Name() string { return "ebpf" }

// Reconcile implements network.Enforcer: forwarding, the host's addresses
// (watched from now on, so none added by start-up is missed), then the
// policy maps and attachments.
func (e *Enforcer) Reconcile(ctx context.Context, v network.View) error {
	if err := e.fwd.prepare(); err != nil {
		return err
	}
	if slices.ContainsFunc(v.Networks, (*network.Network).DualStack) {
		if err := e.fwd.prepareIPv6(); err != nil {
			return err
		}
	}
	if e.updates == nil {
		watch, stop := context.WithCancel(context.Background())
		updates, err := e.addrs.subscribe(watch)
		if err != nil {
			stop()
			return err
		}
		e.updates, e.stop = updates, stop
	}
	if err := e.addrs.sync(); err != nil {
		return err
	}
	return e.policy.reconcile(v)
}

// SetUplinks implements network.UplinkFollower: the uplink programs and
// the uplinks' masquerade addresses move to names. Flows translated on a
// former uplink end with it; the new one translates from the next packet.
func (e *Enforcer) SetUplinks(names []string) error {
	return errors.Join(e.policy.setUplinks(names), e.addrs.setUplinks(names))
}

// NetworkAdded implements network.Enforcer: IPv6 forwarding for the
// first dual-stack network, the network's entries, and its gateways as
// host addresses.
func (e *Enforcer) NetworkAdded(ctx context.Context, v network.View, n *network.Network) error {
	if n.DualStack() {
		if err := e.fwd.prepareIPv6(); err != nil {
			return err
		}
	}
	if err := e.policy.addNetwork(n); err != nil {
		return err
	}
	if err := e.addrs.add(n.Gateway); err != nil {
		return err
	}
	if n.DualStack() {
		return e.addrs.add(n.Gateway6)
	}
	return nil
}

// EnforcesIPv6 implements network.IPv6Enforcer: the programs hold IPv6 to
// the IPv4 policy, translate it (NAT66) and publish ports over it.
func (e *Enforcer) EnforcesIPv6() bool { return true }

// NetworkRemoved implements network.Enforcer.
func (e *Enforcer) NetworkRemoved(ctx context.Context, v network.View, n *network.Network) error {
	return e.policy.removeNetwork(n)
}

// EndpointAdded implements network.Enforcer.
func (e *Enforcer) EndpointAdded(ctx context.Context, v network.View, ep *network.Endpoint) error {
	return e.policy.addEndpoint(v, ep)
}

// Preattach implements network.Preattacher.
func (e *Enforcer) Preattach(name string) (bool, error) { return e.policy.preattach(name) }

// Unattach implements network.Preattacher.
func (e *Enforcer) Unattach(name string) error { return e.policy.unattach(name) }

// EndpointPortsChanged implements network.Enforcer: the old ports' entries
// go, the new ones come (connections to a removed port expire with their
// translations).
func (e *Enforcer) EndpointPortsChanged(ctx context.Context, v network.View, ep *network.Endpoint, old []network.PortMapping) error {
	return e.policy.changePorts(v, ep, old)
}

// EndpointRemoved implements network.Enforcer. The endpoint's map entries
// go first, so its veth's programs drop everything from then on (fail
// closed, even if the daemon dies half-way); then every tracked flow,
// translation and published-port connection that refers to its address,
// so none outlives it or follows its address to the next endpoint; then
// its programs.
func (e *Enforcer) EndpointRemoved(ctx context.Context, v network.View, ep *network.Endpoint) error {
	known, err := e.policy.forgetEndpoint(ep)
	if err != nil || !known {
		return err
	}
	if err := e.nat.purge(ep.IP, ep.IP6); err != nil {
		return err
	}
	return e.policy.detachEndpoint(ep)
}

// Cleanup implements network.Enforcer (see Leftover).
func (e *Enforcer) Cleanup(ctx context.Context) error {
	return Leftover(e.log, e.cfg).Cleanup(ctx)
}

// Run implements network.Runner: the address watcher and the periodic
// collection of expired translations, until ctx ends.
func (e *Enforcer) Run(ctx context.Context) error {
	if e.updates == nil {
		return errors.New("run before reconcile")
	}
	go e.addrs.watch(ctx, e.updates)
	go e.nat.collectEvery(ctx, GCInterval)
	return nil
}

// Describe implements network.Describer.
func (e *Enforcer) Describe(s *api.Status) {
	s.Attach, s.BPFFS = e.policy.attachMode(e.cfg.AttachMode), e.cfg.Root
	st, err := e.nat.stats()
	if err != nil {
		e.log.Error("read datapath stats", "err", err)
	}
	s.Stats = st
}

// CheckEndpoint implements network.EndpointChecker.
func (e *Enforcer) CheckEndpoint(v network.View, ep *network.Endpoint) error {
	return e.policy.checkEndpoint(ep)
}

// Attachments implements network.AttachmentLister.
func (e *Enforcer) Attachments() []api.Attachment { return e.policy.attachments() }

// Counts implements network.Counter (see counters.Counts).
func (e *Enforcer) Counts(network.View) (network.Counts, error) { return e.counters.Counts() }

// Drops implements network.DropSource.
func (e *Enforcer) Drops(ctx context.Context) (<-chan network.DropEvent, error) {
	return e.counters.drops(ctx)
}

// NATEntries implements network.NATTable.
func (e *Enforcer) NATEntries() ([]api.NATEntry, error) { return e.nat.entries() }

// NATStats implements network.NATTable.
func (e *Enforcer) NATStats() (api.NATStats, error) {
	st, err := e.nat.stats()
	return api.NATStats{Entries: st["nat_entries"], Created: st["nat_created"], Exhausted: st["nat_exhausted"], Expired: st["nat_expired"]}, err
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
