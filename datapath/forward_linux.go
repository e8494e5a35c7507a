package datapath

import (
	"fmt"
	"log/slog"
	"os/exec"

	"github.com/coreos/go-iptables/iptables"

	"github.com/bpfnet/bpfnet/internal/forwarding"
	"github.com/bpfnet/bpfnet/internal/ledger"
	"github.com/bpfnet/bpfnet/internal/sysctl"
)

// forwardRule is the one iptables rule of the eBPF mode. Hosts where
// Docker runs have a FORWARD policy of DROP and br_netfilter makes even
// same-bridge IPv4 traffic walk FORWARD, so without it the traffic the
// programs pass would be dropped there. The programs set ForwardMark on
// what they pass (and on packets arriving on an uplink for a managed
// subnet, which to_network then judges).
var forwardRule = []string{"-m", "mark", "--mark", fmt.Sprintf("%#x/%#x", ForwardMark, ForwardMark),
	"-m", "comment", "--comment", "bpfnet: passed by the eBPF datapath", "-j", "ACCEPT"}

// record is the eBPF datapath's ledger (ebpf.json): what it changed on
// the host outside its BPF objects, so Cleanup undoes exactly that.
type record struct {
	forwarding.Change
	ForwardRule bool `json:"forward_rule,omitempty"`
	// The same for IPv6 (ip6tables), once a network is dual-stack.
	IPv6         forwarding.Change `json:"ipv6_forwarding"`
	ForwardRule6 bool              `json:"forward_rule6,omitempty"`
}

// family is one IP version's part of the ledger and its iptables.
type family struct {
	fwd    forwarding.Family
	tool   string // iptables or ip6tables
	proto  iptables.Protocol
	change func(*record) *forwarding.Change
	rule   func(*record) *bool
}

var (
	familyIPv4 = family{forwarding.IPv4, "iptables", iptables.ProtocolIPv4,
		func(r *record) *forwarding.Change { return &r.Change }, func(r *record) *bool { return &r.ForwardRule }}
	familyIPv6 = family{forwarding.IPv6, "ip6tables", iptables.ProtocolIPv6,
		func(r *record) *forwarding.Change { return &r.IPv6 }, func(r *record) *bool { return &r.ForwardRule6 }}
)

// client returns the family's iptables, nil (with a warning) if the host
// has none.
func (fam family) client(log *slog.Logger) (*iptables.IPTables, error) {
	if _, err := exec.LookPath(fam.tool); err != nil {
		log.Warn(fam.tool+" not found: no FORWARD rule installed", "err", err)
		return nil, nil
	}
	ipt, err := iptables.NewWithProtocol(fam.proto)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", fam.tool, err)
	}
	return ipt, nil
}

// forward is the eBPF datapath's part in the host's forwarding: forwarding
// on, and the FORWARD rule when wanted, both recorded in the ledger at
// path before they are made; for IPv4 at start, for IPv6 once a network
// is dual-stack.
type forward struct {
	log  *slog.Logger
	path string
	rule bool // install forwardRule (Config.ForwardRule)
	led  record
	ipv6 bool // IPv6 is prepared
}

func (f *forward) save() error { return ledger.Save(f.path, f.led) }

// prepare does it for IPv4 (see prepareFamily).
func (f *forward) prepare() error {
	if err := ledger.Load(f.path, &f.led); err != nil {
		return err
	}
	return f.prepareFamily(familyIPv4)
}

// prepareIPv6 does it for IPv6, once, and warns about interfaces that then
// stop taking router advertisements.
func (f *forward) prepareIPv6() error {
	if f.ipv6 {
		return nil
	}
	set := f.led.IPv6.IPForwardSet
	if err := f.prepareFamily(familyIPv6); err != nil {
		return err
	}
	if links := forwarding.RouterAdvertised(); !set && f.led.IPv6.IPForwardSet && len(links) > 0 {
		f.log.Warn("IPv6 forwarding is now on, with which an interface whose accept_ra is 1 stops taking router advertisements: its IPv6 default route will expire (set accept_ra to 2 on it, as for Docker's --ipv6)", "interfaces", links)
	}
	f.ipv6 = true
	return nil
}

// prepareFamily turns the family's forwarding on as Docker does (the
// FORWARD policy becomes DROP only if forwarding was off) and appends the
// FORWARD rule, after whatever is there, so chains the user (or ufw, or
// Docker's DOCKER-USER) put in FORWARD judge first. A host without the
// family's iptables gets no rule and no policy (nothing there filters
// forwarding).
func (f *forward) prepareFamily(fam family) error {
	ipt, err := fam.client(f.log)
	if err != nil {
		return err
	}
	var policy forwarding.Policy
	if ipt != nil {
		policy = ipt
	}
	change, ruleSet := fam.change(&f.led), fam.rule(&f.led)
	c, err := forwarding.Enable(sysctl.Root, fam.fwd, policy, func(c forwarding.Change) error {
		*change = c
		return f.save()
	})
	if err != nil {
		return err
	}
	if c.IPForwardSet {
		*change = c
	}
	if !f.rule || ipt == nil {
		if *ruleSet && ipt != nil {
			if err := ipt.DeleteIfExists("filter", "FORWARD", forwardRule...); err != nil {
				return fmt.Errorf("delete %s FORWARD rule: %w", fam.tool, err)
			}
			*ruleSet = false
			return f.save()
		}
		return nil
	}
	if !*ruleSet {
		*ruleSet = true
		if err := f.save(); err != nil {
			return err
		}
	}
	ok, err := ipt.Exists("filter", "FORWARD", forwardRule...)
	if err != nil {
		return fmt.Errorf("check %s FORWARD rule: %w", fam.tool, err)
	}
	if ok {
		return nil
	}
	if err := ipt.Append("filter", "FORWARD", forwardRule...); err != nil {
		return fmt.Errorf("append %s FORWARD rule: %w", fam.tool, err)
	}
	return nil
}

// restoreForwarding undoes what the ledger at path records, for both IP
// versions, then removes it.
func restoreForwarding(path string) error {
	var led record
	if err := ledger.Load(path, &led); err != nil {
		return err
	}
	for _, fam := range []family{familyIPv4, familyIPv6} {
		change, ruleSet := fam.change(&led), fam.rule(&led)
		var ipt *iptables.IPTables
		if *ruleSet || change.ForwardPolicySet {
			var err error
			if ipt, err = iptables.NewWithProtocol(fam.proto); err != nil {
				return fmt.Errorf("%s: %w", fam.tool, err)
			}
		}
		if *ruleSet {
			if err := ipt.DeleteIfExists("filter", "FORWARD", forwardRule...); err != nil {
				return fmt.Errorf("delete %s FORWARD rule: %w", fam.tool, err)
			}
		}
		var policy forwarding.Policy
		if ipt != nil {
			policy = ipt
		}
		if err := forwarding.Restore(sysctl.Root, fam.fwd, policy, *change); err != nil {
			return err
		}
	}
	return ledger.Remove(path)
}
