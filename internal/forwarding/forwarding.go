// Package forwarding turns the host's IP forwarding on as Docker's bridge
// driver does, for both datapaths and both IP versions, and undoes exactly
// what it changed.
package forwarding

import (
	"fmt"

	"github.com/bpfnet/bpfnet/internal/sysctl"
)

// Family is an IP version's forwarding switch.
type Family struct {
	// Sysctl is the switch below the sysctl root.
	Sysctl string
}

var (
	// IPv4 is net.ipv4.ip_forward.
	IPv4 = Family{Sysctl: "net/ipv4/ip_forward"}
	// IPv6 is net.ipv6.conf.all.forwarding (which sets every
	// interface's, as Docker's --ipv6 does).
	IPv6 = Family{Sysctl: "net/ipv6/conf/all/forwarding"}
)

// Change records what Enable changed, for a datapath's ledger.
type Change struct {
	// IPForwardSet: the family's forwarding was 0 and is now 1.
	IPForwardSet bool `json:"ip_forward_set,omitempty"`
	// ForwardPolicySet: the filter FORWARD policy was set to DROP.
	ForwardPolicySet bool `json:"forward_policy_set,omitempty"`
}

// Policy sets the policy of a built-in iptables chain (go-iptables'
// ChangePolicy).
type Policy interface {
	ChangePolicy(table, chain, target string) error
}

// Enable turns f's forwarding on below sysctl root. Only if it was off
// does it also set the FORWARD policy (of ipt: iptables for IPv4,
// ip6tables for IPv6) to DROP, as Docker does: a host that did not
// forward before must not start forwarding between its other interfaces
// because bpfnet needed forwarding. record is called with what will
// change before it changes, so a crash leaves a ledger that covers it;
// ipt may be nil on a host without iptables (nothing filters there).
func Enable(root string, f Family, ipt Policy, record func(Change) error) (Change, error) {
	v, err := sysctl.Read(root, f.Sysctl)
	if err != nil {
		return Change{}, fmt.Errorf("read %s: %w", f.Sysctl, err)
	}
	if v != "0" {
		return Change{}, nil
	}
	c := Change{IPForwardSet: true, ForwardPolicySet: ipt != nil}
	if err := record(c); err != nil {
		return Change{}, err
	}
	if ipt != nil {
		if err := ipt.ChangePolicy("filter", "FORWARD", "DROP"); err != nil {
			return c, fmt.Errorf("set FORWARD policy: %w", err)
		}
	}
	return c, sysctl.Write(root, f.Sysctl, "1")
}

// Restore undoes c: f's forwarding off again, the FORWARD policy back to
// ACCEPT.
func Restore(root string, f Family, ipt Policy, c Change) error {
	if c.ForwardPolicySet && ipt != nil {
		if err := ipt.ChangePolicy("filter", "FORWARD", "ACCEPT"); err != nil {
			return fmt.Errorf("restore FORWARD policy: %w", err)
		}
	}
	if c.IPForwardSet {
		return sysctl.Write(root, f.Sysctl, "0")
	}
	return nil
}
