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
	// RouteLocalnet lists the bridges on which we set route_localnet=1
	// (hairpin mode); --cleanup sets it back on those still there.
	RouteLocalnet []string `json:"route_localnet,omitempty"`
}

// Enforcer is the iptables datapath.
type Enforcer struct {
	log    *slog.Logger
	ipt    client
	prefix string
	mode   Mode
	path   string // ledger file
	led    record
	// sysctl is the root of the sysctl tree (/proc/sys); tests may change it.
	sysctl string
	// synced is the rendering the last sync applied, by (table, chain);
	// nil until the first.
	synced map[[2]string][]Rule
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
	if err := e.loadLedger(); err != nil {
		return nil, err
	}
	return e, nil
}

// Name implements network.Enforcer.
func (e *Enforcer) Name() string { return "iptables" }

// Close implements the daemon's enforcer: iptables mode holds nothing
// open.
func (e *Enforcer) Close() error { return nil }

func ledgerPath(stateDir string) string { return filepath.Join(stateDir, "iptables.json") }

// ForwardPolicy is the FORWARD policy the iptables mode runs with on this
// host, as its ledger in stateDir says: DROP when it turned IP forwarding
// on (as Docker does), else ACCEPT (for Save).
func ForwardPolicy(stateDir string) string {
	var led record
	if ledger.Load(ledgerPath(stateDir), &led) == nil && led.ForwardPolicySet {
		return "DROP"
	}
	return "ACCEPT"
}

func (e *Enforcer) loadLedger() error { return ledger.Load(e.path, &e.led) }

func (e *Enforcer) saveLedger() error { return ledger.Save(e.path, e.led) }

func (e *Enforcer) readSysctl(name string) (string, error) { return sysctl.Read(e.sysctl, name) }

func (e *Enforcer) writeSysctl(name, v string) error { return sysctl.Write(e.sysctl, name, v) }

// prepareForwarding turns IP forwarding on as Docker 20.10 does: only if it
// was off does it also set the FORWARD policy to DROP.
func (e *Enforcer) prepareForwarding() error {
	c, err := forwarding.Enable(e.sysctl, e.ipt, func(c forwarding.Change) error {
		e.led.Change = c
		return e.saveLedger()
	})
	if c.IPForwardSet {
		e.led.Change = c
	}
	return err
}

// Reconcile implements network.Enforcer.
func (e *Enforcer) Reconcile(ctx context.Context, v network.View) error {
	if err := e.prepareForwarding(); err != nil {
		return err
	}
	e.synced = nil
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
	if err := flushConntrack(ep.IP); err != nil {
		e.log.Warn("flush connection tracking of a removed endpoint", "ip", ep.IP, "err", err)
	}
	return e.sync(v)
}

// flushConntrack deletes the conntrack entries with ip as any address.
func flushConntrack(ip netip.Addr) error {
	f := &netlink.ConntrackFilter{}
	if err := f.AddIP(netlink.ConntrackNatAnyIP, ip.AsSlice()); err != nil {
		return err
	}
	_, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, f)
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
	if e.mode == Hairpin {
		if err := e.ensureRouteLocalnet(v); err != nil {
			return err
		}
	}
	for _, n := range v.Networks {
		if !n.ICC {
			// icc=false is enforced in FORWARD, which bridged frames only
			// reach with bridge netfilter on; Docker sets it for such networks.
			if err := e.ensureBridgeNetfilter(); err != nil {
				return err
			}
			break
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
	if e.synced == nil { // the first sync since start: every chain
		for _, ch := range rs.Chains {
			ok, err := e.ipt.ChainExists(ch.Table, ch.Name)
			if err != nil {
				return fmt.Errorf("check chain %s: %w", ch.Name, err)
			}
			if !ok {
				if err := e.ipt.NewChain(ch.Table, ch.Name); err != nil {
					return fmt.Errorf("create chain %s %s: %w", ch.Table, ch.Name, err)
				}
			}
		}
	}
	for _, k := range union {
		if !want[k] {
			if err := deleteRule(e.ipt, k); err != nil {
				return err
			}
		}
	}
	// Only chains whose rendering changed since the last sync are listed
	// and repaired: a change touches a handful of chains, however many
	// networks exist. The first sync since start checks them all.
	synced := map[[2]string][]Rule{}
	for _, g := range groups(rs.Rules) {
		at := [2]string{g[0].Table, g[0].Chain}
		synced[at] = g
		if e.synced != nil && slices.Equal(e.synced[at], g) {
			continue
		}
		if err := syncChain(e.ipt, at[0], at[1], g); err != nil {
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

func (e *Enforcer) ensureBridgeNetfilter() error {
	const name = "net/bridge/bridge-nf-call-iptables"
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
		errs = append(errs, deleteRule(e.ipt, k))
	}
	user := ChainNames(e.prefix).User
	for _, ch := range e.led.Chains {
		ok, err := e.ipt.ChainExists(ch.Table, ch.Name)
		if err != nil || !ok {
			errs = append(errs, err)
			continue
		}
		if ch.Name == user {
			specs, err := listSpecs(e.ipt, ch.Table, ch.Name)
			if err == nil && len(specs) > 0 && (len(specs) != 1 || specs[0] != "-j RETURN") {
				e.log.Warn("keeping user chain: it holds rules of yours", "chain", ch.Name, "rules", len(specs))
				continue
			}
		}
		if err := e.ipt.ClearAndDeleteChain(ch.Table, ch.Name); err != nil {
			errs = append(errs, fmt.Errorf("delete chain %s: %w", ch.Name, err))
		}
	}
	errs = append(errs, forwarding.Restore(e.sysctl, e.ipt, e.led.Change))
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
