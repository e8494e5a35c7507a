package datapath

import (
	"fmt"
	"os/exec"

	"github.com/coreos/go-iptables/iptables"

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

// prepareForwarding turns IP forwarding on and puts the FORWARD rule first;
// both are recorded in the ledger before the change. A host without
// iptables gets no rule (nothing there filters forwarding).
func (e *Enforcer) prepareForwarding() error {
	v, err := sysctl.Read(sysctl.Root, "net/ipv4/ip_forward")
	if err != nil {
		return fmt.Errorf("read net.ipv4.ip_forward: %w", err)
	}
	if v == "0" {
		e.led.IPForwardSet = true
		if err := e.saveLedger(); err != nil {
			return err
		}
		if err := sysctl.Write(sysctl.Root, "net/ipv4/ip_forward", "1"); err != nil {
			return err
		}
	}
	if !e.cfg.ForwardRule {
		if e.led.ForwardRule {
			if err := restoreForwarding(ledger{ForwardRule: true}); err != nil {
				return err
			}
			e.led.ForwardRule = false
			return e.saveLedger()
		}
		return nil
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		e.log.Warn("iptables not found: no FORWARD rule installed", "err", err)
		return nil
	}
	ipt, err := iptables.New()
	if err != nil {
		return fmt.Errorf("iptables: %w", err)
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
	if err := ipt.Insert("filter", "FORWARD", 1, forwardRule...); err != nil {
		return fmt.Errorf("insert FORWARD rule: %w", err)
	}
	return nil
}

// restoreForwarding undoes what prepareForwarding recorded.
func restoreForwarding(led ledger) error {
	if led.ForwardRule {
		ipt, err := iptables.New()
		if err != nil {
			return fmt.Errorf("iptables: %w", err)
		}
		if err := ipt.DeleteIfExists("filter", "FORWARD", forwardRule...); err != nil {
			return fmt.Errorf("delete FORWARD rule: %w", err)
		}
	}
	if led.IPForwardSet {
		return sysctl.Write(sysctl.Root, "net/ipv4/ip_forward", "0")
	}
	return nil
}
