// Package forwarding turns the host's IPv4 forwarding on as Docker's bridge
// driver does, for both datapaths, and undoes exactly what it changed.
package forwarding

import (
	"fmt"

	"github.com/bpfnet/bpfnet/internal/sysctl"
)

// Change records what Enable changed, for a datapath's ledger.
type Change struct {
	// IPForwardSet: net.ipv4.ip_forward was 0 and is now 1.
	IPForwardSet bool `json:"ip_forward_set,omitempty"`
	// ForwardPolicySet: the filter FORWARD policy was set to DROP.
	ForwardPolicySet bool `json:"forward_policy_set,omitempty"`
}

// Policy sets the policy of a built-in iptables chain (go-iptables'
// ChangePolicy).
type Policy interface {
	ChangePolicy(table, chain, target string) error
}

// Enable turns net.ipv4.ip_forward on below sysctl root. Only if it was off
// does it also set the FORWARD policy to DROP, as Docker does: a host that
// did not forward before must not start forwarding between its other
// interfaces because bpfnet needed forwarding. record is called with what
// will change before it changes, so a crash leaves a ledger that covers it;
// ipt may be nil on a host without iptables (nothing filters there).
func Enable(root string, ipt Policy, record func(Change) error) (Change, error) {
	v, err := sysctl.Read(root, "net/ipv4/ip_forward")
	if err != nil {
		return Change{}, fmt.Errorf("read net.ipv4.ip_forward: %w", err)
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
	return c, sysctl.Write(root, "net/ipv4/ip_forward", "1")
}

// Restore undoes c: forwarding off again, the FORWARD policy back to
// ACCEPT.
func Restore(root string, ipt Policy, c Change) error {
	if c.ForwardPolicySet && ipt != nil {
		if err := ipt.ChangePolicy("filter", "FORWARD", "ACCEPT"); err != nil {
			return fmt.Errorf("restore FORWARD policy: %w", err)
		}
	}
	if c.IPForwardSet {
		return sysctl.Write(root, "net/ipv4/ip_forward", "0")
	}
	return nil
}
