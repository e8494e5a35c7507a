package compat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"

	"github.com/coreos/go-iptables/iptables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/bpfnet/bpfnet/internal/forwarding"
	"github.com/bpfnet/bpfnet/internal/sysctl"
	"github.com/bpfnet/bpfnet/network"
)

// ledger is what the enforcer has installed, persisted beside the state so
// that removal is exact (rules of other software are never touched) and a
// restart or --cleanup finds everything even after a crash.
type ledger struct {
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
	led    ledger
	// sysctl is the root of the sysctl tree (/proc/sys); tests may change it.
	sysctl string
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
	e := &Enforcer{log: log, ipt: ipt, prefix: prefix, path: filepath.Join(stateDir, "iptables.json"), sysctl: sysctl.Root}
	if err := e.loadLedger(); err != nil {
		return nil, err
	}
	return e, nil
}

// Name implements network.Enforcer.
func (e *Enforcer) Name() string { return "iptables" }

// Prefix is the chain prefix in use.
func (e *Enforcer) Prefix() string { return e.prefix }

// Leftovers reports whether the compat mode left rules or settings in
// stateDir's ledger (so another datapath must clean them up first).
func Leftovers(stateDir string) bool {
	_, err := os.Stat(filepath.Join(stateDir, "iptables.json"))
	return err == nil
}

func (e *Enforcer) loadLedger() error {
	b, err := os.ReadFile(e.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read iptables ledger: %w", err)
	}
	if err := json.Unmarshal(b, &e.led); err != nil {
		return fmt.Errorf("parse iptables ledger %s: %w", e.path, err)
	}
	return nil
}

func (e *Enforcer) saveLedger() error {
	b, err := json.MarshalIndent(e.led, "", "  ")
	if err != nil {
		return err
	}
	return network.WriteFileAtomic(e.path, append(b, '\n'), 0o600)
}

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

// EndpointAdded implements network.Enforcer. Only published ports add
// rules in Docker 20.10's layout.
func (e *Enforcer) EndpointAdded(ctx context.Context, v network.View, ep *network.Endpoint) error {
	if len(ep.Ports) == 0 {
		return nil
	}
	return e.sync(v)
}

// EndpointRemoved implements network.Enforcer. Besides its published
// ports' rules, the kernel's connection-tracking entries that refer to the
// endpoint's address go: a DNAT or masquerade entry that outlived it would
// otherwise keep translating a peer's packets to the next endpoint given
// its address (as Docker's bridge driver flushes them).
func (e *Enforcer) EndpointRemoved(ctx context.Context, v network.View, ep *network.Endpoint) error {
	if err := flushConntrack(ep.IP); err != nil {
		e.log.Warn("flush connection tracking of a removed endpoint", "ip", ep.IP, "err", err)
	}
	if len(ep.Ports) == 0 {
		return nil
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

// Render returns the rule set for v with this enforcer's prefix.
func (e *Enforcer) Render(v network.View) Ruleset { return Render(v, e.prefix, e.mode) }

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
	union := append([]ruleKey{}, e.led.Rules...)
	for _, r := range rs.Rules {
		if !containsKey(e.led.Rules, keyOf(r)) {
			union = append(union, keyOf(r))
		}
	}
	for _, ch := range rs.Chains {
		if !containsChain(e.led.Chains, ch) {
			e.led.Chains = append(e.led.Chains, ch)
		}
	}
	e.led.Rules = union
	if err := e.saveLedger(); err != nil {
		return err
	}
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
	for _, k := range union {
		if !want[k] {
			if err := deleteRule(e.ipt, k); err != nil {
				return err
			}
		}
	}
	for _, g := range groups(rs.Rules) {
		if err := syncChain(e.ipt, g[0].Table, g[0].Chain, g); err != nil {
			return err
		}
	}
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

func containsKey(list []ruleKey, k ruleKey) bool {
	for _, v := range list {
		if v == k {
			return true
		}
	}
	return false
}

func containsChain(list []Chain, c Chain) bool {
	for _, v := range list {
		if v == c {
			return true
		}
	}
	return false
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
			if err == nil && len(specs) > 0 && !(len(specs) == 1 && specs[0] == "-j RETURN") {
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
	e.led = ledger{}
	if err := os.Remove(e.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// ForwardPolicySet reports whether the enforcer set the FORWARD policy to DROP.
func (e *Enforcer) ForwardPolicySet() bool { return e.led.ForwardPolicySet }
