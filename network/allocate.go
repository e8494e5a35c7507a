package network

import (
	"fmt"
	"net/netip"
	"slices"
)

// The allocator's view for an external IPAM front-end (Docker's
// --ipam-driver bpfnet): subnets and addresses picked as bpfnet's own
// networks and endpoints get them, so one allocator serves networks made
// by Docker and by the CLI. Nothing is reserved here: the caller keeps
// what it handed out until the network or endpoint exists.

// FreeSubnet returns the first default pool that overlaps no network, no
// route of the host and none of pending (pools handed out for networks
// not made yet).
func (m *Manager) FreeSubnet(pending []netip.Prefix) (netip.Prefix, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	routes, err := m.host.Routes()
	if err != nil {
		return netip.Prefix{}, err
	}
	taken := append(append([]netip.Prefix{}, pending...), routes...)
	for _, n := range m.st.Networks {
		taken = append(taken, n.Subnet)
	}
	p, err := pickSubnet(taken)
	if err != nil {
		return p, conflictf("%v", err)
	}
	return p, nil
}

// FreeSubnet6 returns a unique local IPv6 /64 (RFC 4193, random) that
// overlaps no network and none of pending.
func (m *Manager) FreeSubnet6(pending []netip.Prefix) (netip.Prefix, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	taken := slices.Clone(pending)
	for _, n := range m.st.Networks {
		if n.DualStack() {
			taken = append(taken, n.Subnet6)
		}
	}
	p, err := ula6(newID(), taken)
	if err != nil {
		return p, conflictf("%v", err)
	}
	return p, nil
}

// CheckSubnet reports whether a subnet asked for overlaps a network.
func (m *Manager) CheckSubnet(p netip.Prefix) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, n := range m.st.Networks {
		for _, q := range []netip.Prefix{n.Subnet, n.Subnet6} {
			if q.IsValid() && q.Overlaps(p) {
				return conflictf("subnet %s overlaps subnet %s of network %s", p, q, n.Name)
			}
		}
	}
	return nil
}

// FreeAddress returns the first address of subnet's range (the subnet
// when the range is invalid) that is not its network's gateway, an aux
// address or an endpoint's, nor in pending; with no network of that
// subnet yet, only pending counts. subnet may be a network's IPv4 or IPv6
// one.
func (m *Manager) FreeAddress(subnet, ipRange netip.Prefix, pending map[netip.Addr]bool) (netip.Addr, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, used := m.usedIn(subnet)
	if ipRange.IsValid() {
		p.ipRange = ipRange
	}
	for a := range pending {
		used[a] = true
	}
	a, err := firstFree(p, used)
	if err != nil {
		return a, conflictf("%v", err)
	}
	return a, nil
}

// AddressInUse reports whether a of subnet cannot be given: the network's
// gateway, an aux address, an endpoint's, or not a host address of subnet.
func (m *Manager) AddressInUse(subnet netip.Prefix, a netip.Addr) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, used := m.usedIn(subnet)
	return used[a] || a == p.gateway || !usable(subnet, a)
}

// usedIn returns the pool of the network with subnet (a stand-in when
// there is none yet) and the addresses its endpoints and aux addresses
// hold (callers hold m.mu).
func (m *Manager) usedIn(subnet netip.Prefix) (pool, map[netip.Addr]bool) {
	p := pool{name: subnet.String(), subnet: subnet, ipRange: subnet}
	used := map[netip.Addr]bool{}
	for _, o := range m.st.Networks {
		switch subnet {
		case o.Subnet:
			p.gateway = o.Gateway
		case o.Subnet6:
			p.gateway = o.Gateway6
		default:
			continue
		}
		for a := range o.reserved() {
			used[a] = true
		}
		for _, ep := range m.st.Endpoints {
			if ep.NetworkID == o.ID {
				used[ep.IP] = true
				if ep.IP6.IsValid() {
					used[ep.IP6] = true
				}
			}
		}
	}
	return p, used
}

// FirstAddress is the first usable address of a range in subnet (a
// gateway's, as libnetwork's IPAM picks it).
func FirstAddress(subnet, ipRange netip.Prefix) (netip.Addr, error) {
	p := pool{name: subnet.String(), subnet: subnet, ipRange: subnet}
	if ipRange.IsValid() {
		p.ipRange = ipRange
	}
	a, err := firstFree(p, nil)
	if err != nil {
		return a, fmt.Errorf("no usable address in %s", p.ipRange)
	}
	return a, nil
}
