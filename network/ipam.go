package network

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/bpfnet/bpfnet/api"
)

// DefaultPools lists the subnets tried, in order, for a network created
// without --subnet: Docker's default address pools (172.17.0.0/16 to
// 172.31.0.0/16, then 192.168.0.0/16 in /20 steps).
func DefaultPools() []netip.Prefix {
	var pools []netip.Prefix
	for b := 17; b <= 31; b++ {
		pools = append(pools, netip.PrefixFrom(netip.AddrFrom4([4]byte{172, byte(b), 0, 0}), 16))
	}
	for c := 0; c < 256; c += 16 {
		pools = append(pools, netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, byte(c), 0}), 20))
	}
	return pools
}

// ErrPoolsExhausted is returned when no default pool is free. Front-ends
// add how their user names a subnet (--subnet, --bip, a CNI conf field).
var ErrPoolsExhausted = errors.New("no free subnet in the default address pools (172.17-31.0.0/16, 192.168.0.0/20 steps overlap other networks or the host's routes); choose a subnet")

// pickSubnet returns the first default pool overlapping none of taken.
func pickSubnet(taken []netip.Prefix) (netip.Prefix, error) {
	for _, p := range DefaultPools() {
		if !overlapsAny(p, taken) {
			return p, nil
		}
	}
	return netip.Prefix{}, ErrPoolsExhausted
}

func overlapsAny(p netip.Prefix, list []netip.Prefix) bool {
	for _, q := range list {
		if p.Overlaps(q) {
			return true
		}
	}
	return false
}

// parseSubnet parses an IPv4 CIDR that must be in canonical form.
func parseSubnet(what, s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("invalid %s %q: %w", what, s, err)
	}
	if !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("invalid %s %q: only IPv4 is supported", what, s)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("invalid %s %q: host bits set, did you mean %s?", what, s, p.Masked())
	}
	return p, nil
}

// Broadcast returns the last address of an IPv4 prefix.
func Broadcast(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := (uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// usable reports whether a is a host address of subnet (not the network or
// broadcast address).
func usable(subnet netip.Prefix, a netip.Addr) bool {
	return subnet.Contains(a) && a != subnet.Addr() && a != Broadcast(subnet)
}

// planAddresses fills Subnet, IPRange and Gateway of n from the request.
// taken lists subnets already in use by other networks; routes lists the
// host's routes, avoided only when the subnet is picked automatically.
func planAddresses(n *Network, req api.CreateNetworkRequest, taken, routes []netip.Prefix) error {
	var err error
	if req.Subnet == "" {
		if req.IPRange != "" || req.Gateway != "" {
			return errors.New("an IP range or a gateway needs a subnet")
		}
		if n.Subnet, err = pickSubnet(append(append([]netip.Prefix{}, taken...), routes...)); err != nil {
			return err
		}
	} else {
		if n.Subnet, err = parseSubnet("subnet", req.Subnet); err != nil {
			return err
		}
		if n.Subnet.Bits() > 30 {
			return fmt.Errorf("invalid subnet %s: too small, need at least a /30 for a gateway and one endpoint", n.Subnet)
		}
		for _, t := range taken {
			if n.Subnet.Overlaps(t) {
				return fmt.Errorf("subnet %s overlaps subnet %s of another network", n.Subnet, t)
			}
		}
	}
	n.IPRange = n.Subnet
	if req.IPRange != "" {
		r, err := parseSubnet("ip-range", req.IPRange)
		if err != nil {
			return err
		}
		if !n.Subnet.Contains(r.Addr()) || r.Bits() < n.Subnet.Bits() {
			return fmt.Errorf("ip-range %s is not inside subnet %s", r, n.Subnet)
		}
		n.IPRange, n.IPRangeSet = r, true
	}
	if req.Gateway != "" {
		gw, err := netip.ParseAddr(req.Gateway)
		if err != nil || !gw.Is4() {
			return fmt.Errorf("invalid gateway %q: want an IPv4 address", req.Gateway)
		}
		if !n.Subnet.Contains(gw) {
			return fmt.Errorf("gateway %s is not inside subnet %s", gw, n.Subnet)
		}
		if !usable(n.Subnet, gw) {
			return fmt.Errorf("gateway %s is the network or broadcast address of %s", gw, n.Subnet)
		}
		n.Gateway = gw
	} else if n.Gateway, err = firstFree(n, nil); err != nil {
		// As libnetwork's IPAM does, the gateway is the first free address
		// of the allocation range.
		return err
	}
	return planAux(n, req.AuxAddresses)
}

// planAux checks the reserved addresses: IPv4, inside the subnet, not its
// network or broadcast address, not the gateway, each once.
func planAux(n *Network, aux map[string]string) error {
	if len(aux) == 0 {
		return nil
	}
	n.AuxAddresses = map[string]netip.Addr{}
	seen := map[netip.Addr]string{}
	for name, s := range aux {
		a, err := netip.ParseAddr(s)
		switch {
		case name == "":
			return fmt.Errorf("aux address %q has no name (want NAME=ADDRESS)", s)
		case err != nil || !a.Is4():
			return fmt.Errorf("invalid aux address %s=%q: want an IPv4 address", name, s)
		case !n.Subnet.Contains(a):
			return fmt.Errorf("aux address %s=%s is not inside subnet %s", name, a, n.Subnet)
		case !usable(n.Subnet, a):
			return fmt.Errorf("aux address %s=%s is the network or broadcast address of %s", name, a, n.Subnet)
		case a == n.Gateway:
			return fmt.Errorf("aux address %s=%s is the gateway", name, a)
		case seen[a] != "":
			return fmt.Errorf("aux addresses %s and %s are both %s", seen[a], name, a)
		}
		seen[a] = name
		n.AuxAddresses[name] = a
	}
	return nil
}

// firstFree returns the lowest usable address of n's IP range that is not
// the gateway and not in used.
func firstFree(n *Network, used map[netip.Addr]bool) (netip.Addr, error) {
	for a := n.IPRange.Masked().Addr(); n.IPRange.Contains(a); a = a.Next() {
		if usable(n.Subnet, a) && a != n.Gateway && !used[a] {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("address pool of network %s exhausted: no free address in %s", n.Name, n.IPRange)
}

// pickEndpointIP returns the requested address after checking it, or the
// first free one.
func pickEndpointIP(n *Network, requested string, used map[netip.Addr]bool) (netip.Addr, error) {
	reserved := n.reserved()
	if requested == "" {
		for a := range reserved {
			used[a] = true
		}
		return firstFree(n, used)
	}
	a, err := netip.ParseAddr(requested)
	if err != nil || !a.Is4() {
		return netip.Addr{}, fmt.Errorf("invalid address %q: want an IPv4 address", requested)
	}
	switch {
	case !n.IPRange.Contains(a):
		return netip.Addr{}, fmt.Errorf("address %s is outside the ip-range %s of network %s", a, n.IPRange, n.Name)
	case !usable(n.Subnet, a):
		return netip.Addr{}, fmt.Errorf("address %s is the network or broadcast address of %s", a, n.Subnet)
	case a == n.Gateway:
		return netip.Addr{}, fmt.Errorf("address %s is the gateway of network %s", a, n.Name)
	case reserved[a] != "":
		return netip.Addr{}, fmt.Errorf("address %s is reserved (aux address %s) in network %s", a, reserved[a], n.Name)
	case used[a]:
		return netip.Addr{}, fmt.Errorf("address %s is already in use in network %s", a, n.Name)
	}
	return a, nil
}
