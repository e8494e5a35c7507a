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
}

// forward is the eBPF datapath's part in the host's forwarding: ip_forward
// on, and the FORWARD rule when wanted, both recorded in the ledger at
// path before they are made.
type forward struct {
	log  *slog.Logger
	path string
	rule bool // install forwardRule (Config.ForwardRule)
	led  record
}

func (f *forward) save() error { return ledger.Save(f.path, f.led) }

// prepare turns IP forwarding on as Docker does (the FORWARD policy
// becomes DROP only if forwarding was off) and appends the FORWARD rule,
// after whatever is there, so chains the user (or ufw, or Docker's
// DOCKER-USER) put in FORWARD judge first. A host without iptables gets
// no rule and no policy (nothing there filters forwarding).
func (f *forward) prepare() error {
	if err := ledger.Load(f.path, &f.led); err != nil {
		return err
	}
	var ipt *iptables.IPTables
	if _, err := exec.LookPath("iptables"); err != nil {
		f.log.Warn("iptables not found: no FORWARD rule installed", "err", err)
	} else if ipt, err = iptables.New(); err != nil {
		return fmt.Errorf("iptables: %w", err)
	}
	var policy forwarding.Policy
	if ipt != nil {
		policy = ipt
	}
	c, err := forwarding.Enable(sysctl.Root, forwarding.IPv4, policy, func(c forwarding.Change) error {
		f.led.Change = c
		return f.save()
	})
	if err != nil {
		return err
	}
	if c.IPForwardSet {
		f.led.Change = c
	}
	if !f.rule || ipt == nil {
		if f.led.ForwardRule && ipt != nil {
			if err := ipt.DeleteIfExists("filter", "FORWARD", forwardRule...); err != nil {
				return fmt.Errorf("delete FORWARD rule: %w", err)
			}
			f.led.ForwardRule = false
			return f.save()
		}
		return nil
	}
	if !f.led.ForwardRule {
		f.led.ForwardRule = true
		if err := f.save(); err != nil {
			return err
		}
	}
	ok, err := ipt.Exists("filter", "FORWARD", forwardRule...)
	if err != nil {
		return fmt.Errorf("check FORWARD rule: %w", err)
	}
	if ok {
		return nil
	}
	if err := ipt.Append("filter", "FORWARD", forwardRule...); err != nil {
		return fmt.Errorf("append FORWARD rule: %w", err)
	}
	return nil
}

// restoreForwarding undoes what the ledger at path records, then removes
// it.
func restoreForwarding(path string) error {
	var led record
	if err := ledger.Load(path, &led); err != nil {
		return err
	}
	var ipt *iptables.IPTables
	if led.ForwardRule || led.ForwardPolicySet {
		var err error
		if ipt, err = iptables.New(); err != nil {
			return fmt.Errorf("iptables: %w", err)
		}
	}
	if led.ForwardRule {
		if err := ipt.DeleteIfExists("filter", "FORWARD", forwardRule...); err != nil {
			return fmt.Errorf("delete FORWARD rule: %w", err)
		}
	}
	var policy forwarding.Policy
	if ipt != nil {
		policy = ipt
	}
	if err := forwarding.Restore(sysctl.Root, forwarding.IPv4, policy, led.Change); err != nil {
		return err
	}
	return ledger.Remove(path)
}
