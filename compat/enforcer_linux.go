package compat

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"

	"github.com/coreos/go-iptables/iptables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/bpfnet/bpfnet/api"
	"github.com/bpfnet/bpfnet/internal/forwarding"
	"github.com/bpfnet/bpfnet/internal/ledger"
	"github.com/bpfnet/bpfnet/internal/sysctl"
	"github.com/bpfnet/bpfnet/network"
)

// record is what the enforcer has installed (its ledger), persisted beside the state so
// that removal is exact (rules of other software are never touched) and a
// restart or --cleanup finds everything even after a crash.
type record struct {
	Chains []Chain   `json:"chains"`
	Rules  []ruleKey `json:"rules"`
	// Forwarding records that we turned net.ipv4.ip_forward on and,
	// because it was off, set the FORWARD policy to DROP (Docker 20.10
	// does both); --cleanup reverts them.
	forwarding.Change
	// IPv6Forwarding records the same for IPv6 (net.ipv6.conf.all.forwarding
	// and the ip6tables FORWARD policy), once a network has IPv6.
	IPv6Forwarding forwarding.Change `json:"ipv6_forwarding,omitzero"`
	// RouteLocalnet lists the bridges on which we set route_localnet=1
	// (hairpin mode); --cleanup sets it back on those still there.
	RouteLocalnet []string `json:"route_localnet,omitempty"`
}

// Enforcer is the iptables datapath.
type Enforcer struct {
	log *slog.Logger
	ipt client
	// ipt6 is ip6tables; nil, with ipt6Err saying why, on a host without
	// it (then no network may have IPv6).
	ipt6    client
	ipt6Err error
	prefix  string
	mode    Mode
	path    string // ledger file
	led     record
	// sysctl is the root of the sysctl tree (/proc/sys); tests may change it.
	sysctl string
	// synced is the rendering the last sync applied, by (table, chain);
	// nil until the first.
	synced map[chainKey][]Rule
	// chains are the chains of ours known to exist since the last
	// Reconcile (the IPv6 ones come with the first dual-stack network).
	chains map[Chain]bool
}

// New returns an iptables enforcer using the iptables binary in PATH (nft
// or legacy backend, whichever the host uses), keeping its ledger in
// stateDir.
func New(log *slog.Logger, prefix, stateDir string) (*Enforcer, error) {
	if err := ValidatePrefix(prefix); err != nil {
		return nil, err
	}
	ipt, err := iptables.New(iptables.IPFamily(iptables.ProtocolIPv4), iptables.Timeout(10))
	if err != nil {
		return nil, fmt.Errorf("iptables: %w", err)
	}
	e := &Enforcer{log: log, ipt: ipt, prefix: prefix, path: ledgerPath(stateDir), sysctl: sysctl.Root}
	if ipt6, err := iptables.New(iptables.IPFamily(iptables.ProtocolIPv6), iptables.Timeout(10)); err != nil {
		e.ipt6Err = fmt.Errorf("ip6tables: %w", err)
	} else {
		e.ipt6 = ipt6
	}
	if err := e.loadLedger(); err != nil {
		return nil, err
	}
	return e, nil
}

// EnforcesIPv6 implements network.IPv6Enforcer: with ip6tables, IPv6 is
// held to Docker's ip6tables layout.
func (e *Enforcer) EnforcesIPv6() bool { return e.ipt6 != nil }

// client is the iptables of a family.
func (e *Enforcer) client(ipv6 bool) (client, error) {
	if !ipv6 {
		return e.ipt, nil
	}
	if e.ipt6 == nil {
		return nil, e.ipt6Err
	}
	return e.ipt6, nil
}

// Name implements network.Enforcer.
func (e *Enforcer) Name() string { return "iptables" }

// Close implements the daemon's enforcer: iptables mode holds nothing
// open.
func (e *Enforcer) Close() error { return nil }

func ledgerPath(stateDir string) string { return filepath.Join(stateDir, "iptables.json") }

// ForwardPolicy is the FORWARD policy the iptables mode runs with on this
// host for a family, as its ledger in stateDir says: DROP when it turned
// IP forwarding on (as Docker does), else ACCEPT (for Save and Save6).
func ForwardPolicy(stateDir string, ipv6 bool) string {
	var led record
	if ledger.Load(ledgerPath(stateDir), &led) != nil {
		return "ACCEPT"
	}
	c := led.Change
	if ipv6 {
		c = led.IPv6Forwarding
	}
	if c.ForwardPolicySet {
		return "DROP"
	}
	return "ACCEPT"
}

func (e *Enforcer) loadLedger() error { return ledger.Load(e.path, &e.led) }

func (e *Enforcer) saveLedger() error { return ledger.Save(e.path, e.led) }

func (e *Enforcer) readSysctl(name string) (string, error) { return sysctl.Read(e.sysctl, name) }

func (e *Enforcer) writeSysctl(name, v string) error { return sysctl.Write(e.sysctl, name, v) }

// enableForwarding turns a family's forwarding on as Docker 20.10 does
// (only if it was off does it also set ipt's FORWARD policy to DROP),
// recording the change in led; it reports whether it turned it on.
func (e *Enforcer) enableForwarding(f forwarding.Family, ipt forwarding.Policy, led *forwarding.Change) (bool, error) {
	c, err := forwarding.Enable(e.sysctl, f, ipt, func(c forwarding.Change) error {
		*led = c
		return e.saveLedger()
	})
	if c.IPForwardSet {
		*led = c
	}
	return c.IPForwardSet, err
}

// prepareIPv6Forwarding does it for IPv6 once a network has IPv6, and
// warns about interfaces that then stop taking router advertisements.
func (e *Enforcer) prepareIPv6Forwarding() error {
	if e.led.IPv6Forwarding.IPForwardSet {
		return nil
	}
	set, err := e.enableForwarding(forwarding.IPv6, e.ipt6, &e.led.IPv6Forwarding)
	if links := forwarding.RouterAdvertised(); set && len(links) > 0 {
		e.log.Warn("IPv6 forwarding is now on, with which an interface whose accept_ra is 1 stops taking router advertisements: its IPv6 default route will expire (set accept_ra to 2 on it, as for Docker's --ipv6)", "interfaces", links)
	}
	return err
}

// Reconcile implements network.Enforcer.
func (e *Enforcer) Reconcile(ctx context.Context, v network.View) error {
	if _, err := e.enableForwarding(forwarding.IPv4, e.ipt, &e.led.Change); err != nil {
		return err
	}
	e.synced, e.chains = nil, nil
	return e.sync(v)
}

// NetworkAdded implements network.Enforcer.
func (e *Enforcer) NetworkAdded(ctx context.Context, v network.View, n *network.Network) error {
	return e.sync(v)
}

// NetworkRemoved implements network.Enforcer.
func (e *Enforcer) NetworkRemoved(ctx context.Context, v network.View, n *network.Network) error {
	return e.sync(v)
}

// EndpointAdded implements network.Enforcer: its published ports' rules,
// and its direct-access drop (an addition to 20.10's layout).
func (e *Enforcer) EndpointAdded(ctx context.Context, v network.View, ep *network.Endpoint) error {
	return e.sync(v)
}

// EndpointPortsChanged implements network.Enforcer: the DNAT rules follow
// the endpoint's ports.
func (e *Enforcer) EndpointPortsChanged(ctx context.Context, v network.View, ep *network.Endpoint, old []network.PortMapping) error {
	return e.sync(v)
}

// EndpointRemoved implements network.Enforcer. Besides its rules, the
// kernel's connection-tracking entries that refer to the
// endpoint's address go: a DNAT or masquerade entry that outlived it would
// otherwise keep translating a peer's packets to the next endpoint given
// its address (as Docker's bridge driver flushes them).
func (e *Enforcer) EndpointRemoved(ctx context.Context, v network.View, ep *network.Endpoint) error {
	for _, ip := range []netip.Addr{ep.IP, ep.IP6} {
		if err := flushConntrack(ip); err != nil {
			e.log.Warn("flush connection tracking of a removed endpoint", "ip", ip, "err", err)
		}
	}
	return e.sync(v)
}

// flushConntrack deletes the conntrack entries with ip as any address.
func flushConntrack(ip netip.Addr) error {
	if !ip.IsValid() {
		return nil
	}
	f := &netlink.ConntrackFilter{}
	if err := f.AddIP(netlink.ConntrackNatAnyIP, ip.AsSlice()); err != nil {
		return err
	}
	family := netlink.InetFamily(unix.AF_INET)
	if ip.Is6() {
		family = unix.AF_INET6
	}
	_, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, family, f)
	return err
}

// ensureRouteLocalnet sets route_localnet=1 on every bridge, as Docker's
// hairpin mode does, so the host's connections to 127.0.0.1:PORT can be
// DNATed into a network. A bridge that is not there (a rules-only test,
// or one deleted behind our back) is skipped.
func (e *Enforcer) ensureRouteLocalnet(v network.View) error {
	for _, n := range v.Networks {
		name := "net/ipv4/conf/" + n.Bridge + "/route_localnet"
		cur, err := e.readSysctl(name)
		if errors.Is(err, fs.ErrNotExist) || cur == "1" {
			continue
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", name, err)
		}
		if !slices.Contains(e.led.RouteLocalnet, n.Bridge) {
			e.led.RouteLocalnet = append(e.led.RouteLocalnet, n.Bridge)
			if err := e.saveLedger(); err != nil {
				return err
			}
		}
		if err := e.writeSysctl(name, "1"); err != nil {
			return err
		}
	}
	return nil
}

// sync converges the installed rules to the rendering of v: our chains
// exist, stale rules of ours are deleted, missing ones added in place.
func (e *Enforcer) sync(v network.View) error {
	rs := Render(v, e.prefix, e.mode)
	if rs.HasIPv6() {
		if e.ipt6 == nil {
			return fmt.Errorf("a network has IPv6, which needs %w", e.ipt6Err)
		}
		if err := e.prepareIPv6Forwarding(); err != nil {
			return err
		}
	}
	if e.mode == Hairpin {
		if err := e.ensureRouteLocalnet(v); err != nil {
			return err
		}
	}
	// icc=false is enforced in FORWARD, which bridged frames only reach
	// with bridge netfilter on; Docker sets it for such networks (for
	// ip6tables too when they have IPv6).
	noICC, noICC6 := false, false
	for _, n := range v.Networks {
		noICC = noICC || !n.ICC
		noICC6 = noICC6 || (!n.ICC && n.DualStack())
	}
	for tables, need := range map[string]bool{"iptables": noICC, "ip6tables": noICC6} {
		if !need {
			continue
		}
		if err := e.ensureBridgeNetfilter(tables); err != nil {
			return err
		}
	}
	want := map[ruleKey]bool{}
	for _, r := range rs.Rules {
		want[keyOf(r)] = true
	}
	// Record the union first: if we crash half-way, the next start still
	// knows every rule that may be installed.
	recorded := map[ruleKey]bool{}
	for _, k := range e.led.Rules {
		recorded[k] = true
	}
	union := slices.Clone(e.led.Rules)
	for _, r := range rs.Rules {
		if !recorded[keyOf(r)] {
			union = append(union, keyOf(r))
		}
	}
	for _, ch := range rs.Chains {
		if !slices.Contains(e.led.Chains, ch) {
			e.led.Chains = append(e.led.Chains, ch)
		}
	}
	e.led.Rules = union
	if err := e.saveLedger(); err != nil {
		return err
	}
	if e.chains == nil {
		e.chains = map[Chain]bool{}
	}
	for _, ch := range rs.Chains {
		if e.chains[ch] {
			continue
		}
		ipt, _ := e.client(ch.IPv6) // rs.HasIPv6 checked ip6tables
		ok, err := ipt.ChainExists(ch.Table, ch.Name)
		if err != nil {
			return fmt.Errorf("check chain %s: %w", ch.Name, err)
		}
		if !ok {
			if err := ipt.NewChain(ch.Table, ch.Name); err != nil {
				return fmt.Errorf("create chain %s %s: %w", ch.Table, ch.Name, err)
			}
		}
		e.chains[ch] = true
	}
	for _, k := range union {
		if !want[k] {
			ipt, err := e.client(k.IPv6)
			if err == nil {
				err = deleteRule(ipt, k)
			}
			if err != nil {
				return err
			}
		}
	}
	// Only chains whose rendering changed since the last sync are listed
	// and repaired: a change touches a handful of chains, however many
	// networks exist. The first sync since start checks them all.
	synced := map[chainKey][]Rule{}
	for _, g := range groups(rs.Rules) {
		at := chainKey{g[0].IPv6, g[0].Table, g[0].Chain}
		synced[at] = g
		if e.synced != nil && slices.Equal(e.synced[at], g) {
			continue
		}
		ipt, _ := e.client(at.ipv6)
		if err := syncChain(ipt, at.table, at.chain, g); err != nil {
			e.synced = nil
			return err
		}
	}
	e.synced = synced
	e.led.Rules = e.led.Rules[:0]
	for _, r := range rs.Rules {
		e.led.Rules = append(e.led.Rules, keyOf(r))
	}
	return e.saveLedger()
}

// ensureBridgeNetfilter turns bridge-nf-call-<tables> on.
func (e *Enforcer) ensureBridgeNetfilter(tables string) error {
	name := "net/bridge/bridge-nf-call-" + tables
	v, err := e.readSysctl(name)
	if err != nil {
		return fmt.Errorf("enable_icc=false needs bridge netfilter (br_netfilter): %w", err)
	}
	if v == "1" {
		return nil
	}
	return e.writeSysctl(name, "1")
}

// Cleanup implements network.Enforcer: it deletes every rule and chain in
// the ledger and reverts the forwarding settings it changed. A user chain
// that still holds rules of the user is kept (and said so in the log).
func (e *Enforcer) Cleanup(ctx context.Context) error {
	var errs []error
	for _, k := range e.led.Rules {
		ipt, err := e.client(k.IPv6)
		if err == nil {
			err = deleteRule(ipt, k)
		}
		errs = append(errs, err)
	}
	user := ChainNames(e.prefix).User
	for _, ch := range e.led.Chains {
		ipt, err := e.client(ch.IPv6)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ok, err := ipt.ChainExists(ch.Table, ch.Name)
		if err != nil || !ok {
			errs = append(errs, err)
			continue
		}
		if ch.Name == user && !ch.IPv6 {
			specs, err := listSpecs(ipt, ch.Table, ch.Name)
			if err == nil && len(specs) > 0 && (len(specs) != 1 || specs[0] != "-j RETURN") {
				e.log.Warn("keeping user chain: it holds rules of yours", "chain", ch.Name, "rules", len(specs))
				continue
			}
		}
		if err := ipt.ClearAndDeleteChain(ch.Table, ch.Name); err != nil {
			errs = append(errs, fmt.Errorf("delete chain %s: %w", ch.Name, err))
		}
	}
	errs = append(errs, forwarding.Restore(e.sysctl, forwarding.IPv4, e.ipt, e.led.Change),
		forwarding.Restore(e.sysctl, forwarding.IPv6, e.ipt6, e.led.IPv6Forwarding))
	for _, br := range e.led.RouteLocalnet {
		name := "net/ipv4/conf/" + br + "/route_localnet"
		if _, err := e.readSysctl(name); err == nil {
			errs = append(errs, e.writeSysctl(name, "0"))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	e.led = record{}
	return ledger.Remove(e.path)
}

// Describe implements network.Describer.
func (e *Enforcer) Describe(s *api.Status) { s.ChainPrefix = e.prefix }

// Leftover is what an earlier run in iptables mode left (rules, chains,
// sysctls), for another datapath to remove at start, or for --cleanup.
func Leftover(log *slog.Logger, prefix, stateDir string) network.Cleaner {
	return leftover{log: log, prefix: prefix, stateDir: stateDir}
}

type leftover struct {
	log              *slog.Logger
	prefix, stateDir string
}

func (l leftover) Leftovers() bool { return ledger.Exists(ledgerPath(l.stateDir)) }

func (l leftover) Cleanup(ctx context.Context) error {
	e, err := New(l.log, l.prefix, l.stateDir)
	if err != nil {
		return err
	}
	return e.Cleanup(ctx)
}
