package datapath

import (
	"fmt"
	"os/exec"

	"github.com/coreos/go-iptables/iptables"

	"github.com/bpfnet/bpfnet/internal/forwarding"
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

// prepareForwarding turns IP forwarding on as Docker does (the FORWARD
// policy becomes DROP only if forwarding was off) and appends the FORWARD
// rule, after whatever is there, so chains the user (or ufw, or Docker's
// DOCKER-USER) put in FORWARD judge first; both are recorded in the ledger
// before the change. A host without iptables gets no rule and no policy
// (nothing there filters forwarding).
func (e *Enforcer) prepareForwarding() error {
	var ipt *iptables.IPTables
	if _, err := exec.LookPath("iptables"); err != nil {
		e.log.Warn("iptables not found: no FORWARD rule installed", "err", err)
	} else if ipt, err = iptables.New(); err != nil {
		return fmt.Errorf("iptables: %w", err)
	}
	var policy forwarding.Policy
	if ipt != nil {
		policy = ipt
	}
	c, err := forwarding.Enable(sysctl.Root, policy, func(c forwarding.Change) error {
		e.led.Change = c
		return e.saveLedger()
	})
	if err != nil {
		return err
	}
	if c.IPForwardSet {
		e.led.Change = c
	}
	if !e.cfg.ForwardRule || ipt == nil {
		if e.led.ForwardRule && ipt != nil {
			if err := ipt.DeleteIfExists("filter", "FORWARD", forwardRule...); err != nil {
				return fmt.Errorf("delete FORWARD rule: %w", err)
			}
			e.led.ForwardRule = false
			return e.saveLedger()
		}
		return nil
	}
	ok, err := ipt.Exists("filter", "FORWARD", forwardRule...)
	if err != nil {
		return fmt.Errorf("check FORWARD rule: %w", err)
	}
	if !e.led.ForwardRule {
		e.led.ForwardRule = true
		if err := e.saveLedger(); err != nil {
			return err
		}
	}
	if ok {
		return nil
	}
	if err := ipt.Append("filter", "FORWARD", forwardRule...); err != nil {
		return fmt.Errorf("append FORWARD rule: %w", err)
	}
	return nil
}

// restoreForwarding undoes what prepareForwarding recorded.
func restoreForwarding(led ledger) error {
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
	return forwarding.Restore(sysctl.Root, policy, led.Change)
}
