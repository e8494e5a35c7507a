package network

import (
	"crypto/sha256"
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

// family is one IP version, for parsing and messages.
type family struct {
	name string // "IPv4", "IPv6"
	is6  bool
	// maxBits is the longest prefix that holds a gateway and an endpoint.
	maxBits int
}

var (
	ipv4 = family{name: "IPv4", maxBits: 30}
	ipv6 = family{name: "IPv6", is6: true, maxBits: 126}
)

func (f family) has(a netip.Addr) bool { return a.IsValid() && a.Is6() == f.is6 && !a.Is4In6() }

// parseSubnet parses a CIDR of family f that must be in canonical form.
func parseSubnet(f family, what, s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("invalid %s %q: %w", what, s, err)
	}
	if !f.has(p.Addr()) {
		return netip.Prefix{}, fmt.Errorf("invalid %s %q: want an %s prefix", what, s, f.name)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("invalid %s %q: host bits set, did you mean %s?", what, s, p.Masked())
	}
	if f.is6 && (p.Addr().IsLinkLocalUnicast() || p.Addr().IsMulticast() || p.Addr().IsLoopback() || p.Bits() < 8) {
		return netip.Prefix{}, fmt.Errorf("invalid %s %q: want a unicast prefix (a unique local fd00::/8 or a global one), not link-local, multicast or loopback", what, s)
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

// usable reports whether a is a host address of subnet: not the network
// address (IPv6's subnet-router anycast) nor, for IPv4, the broadcast.
func usable(subnet netip.Prefix, a netip.Addr) bool {
	if !subnet.Contains(a) || a == subnet.Addr() {
		return false
	}
	return a.Is6() || a != Broadcast(subnet)
}

// pool is one address family of a network: the subnet, the range its
// endpoints' addresses come from, and the gateway.
type pool struct {
	name            string // the network's, for messages
	subnet, ipRange netip.Prefix
	gateway         netip.Addr
}

func (n *Network) pool4() pool { return pool{n.Name, n.Subnet, n.IPRange, n.Gateway} }
func (n *Network) pool6() pool { return pool{n.Name, n.Subnet6, n.IPRange6, n.Gateway6} }

// ula6 is the IPv6 subnet of a network created with IPv6 on and no IPv6
// subnet: a unique local /64 (RFC 4193) whose global and subnet ids are
// taken from the network's id, so that it is random across networks and
// hosts, as the RFC asks, and the same whenever the network is planned.
func ula6(id string, taken []netip.Prefix) (netip.Prefix, error) {
	for i := 0; i < 16; i++ {
		h := sha256.Sum256([]byte(fmt.Sprintf("%s/%d", id, i)))
		var b [16]byte
		b[0] = 0xfd
		copy(b[1:8], h[:7])
		p := netip.PrefixFrom(netip.AddrFrom16(b), 64)
		if !overlapsAny(p, taken) {
			return p, nil
		}
	}
	return netip.Prefix{}, errors.New("no free unique local IPv6 /64 found for the network; give an IPv6 subnet")
}

// planAddresses fills the addresses of n (both families when the request
// asks for IPv6) from the request. taken lists subnets already in use by
// other networks; routes lists the host's routes, avoided only when the
// IPv4 subnet is picked automatically.
func planAddresses(n *Network, req api.CreateNetworkRequest, taken, routes []netip.Prefix) error {
	auto4 := func() (netip.Prefix, error) {
		return pickSubnet(append(append([]netip.Prefix{}, taken...), routes...))
	}
	p, rangeSet, err := planPool(ipv4, n.Name, req.Subnet, req.IPRange, req.Gateway, taken, auto4)
	if err != nil {
		return err
	}
	n.Subnet, n.IPRange, n.IPRangeSet, n.Gateway = p.subnet, p.ipRange, rangeSet, p.gateway
	switch {
	case req.EnableIPv6:
		auto6 := func() (netip.Prefix, error) { return ula6(n.ID, taken) }
		p, rangeSet, err := planPool(ipv6, n.Name, req.Subnet6, req.IPRange6, req.Gateway6, taken, auto6)
		if err != nil {
			return err
		}
		n.Subnet6, n.IPRange6, n.IPRange6Set, n.Gateway6 = p.subnet, p.ipRange, rangeSet, p.gateway
	case req.Subnet6 != "" || req.IPRange6 != "" || req.Gateway6 != "":
		return errors.New("an IPv6 subnet, range or gateway needs IPv6 on (--ipv6)")
	}
	return planAux(n, req.AuxAddresses)
}

// planPool plans one family of a network: the subnet asked for (checked
// against taken) or auto's, the range and the gateway (by default the
// first address of the range, as libnetwork's IPAM picks it).
func planPool(f family, name, subnet, ipRange, gateway string, taken []netip.Prefix, auto func() (netip.Prefix, error)) (p pool, rangeSet bool, err error) {
	p.name = name
	what := func(s string) string {
		if f.is6 {
			return "IPv6 " + s
		}
		return s
	}
	if subnet == "" {
		if ipRange != "" || gateway != "" {
			if f.is6 {
				return p, false, errors.New("an IPv6 range or gateway needs an IPv6 subnet")
			}
			return p, false, errors.New("an IP range or a gateway needs a subnet")
		}
		if p.subnet, err = auto(); err != nil {
			return p, false, err
		}
	} else {
		if p.subnet, err = parseSubnet(f, what("subnet"), subnet); err != nil {
			return p, false, err
		}
		if p.subnet.Bits() > f.maxBits {
			return p, false, fmt.Errorf("invalid %s %s: too small, need at least a /%d for a gateway and one endpoint", what("subnet"), p.subnet, f.maxBits)
		}
		for _, t := range taken {
			if p.subnet.Overlaps(t) {
				return p, false, fmt.Errorf("subnet %s overlaps subnet %s of another network", p.subnet, t)
			}
		}
	}
	p.ipRange = p.subnet
	if ipRange != "" {
		r, err := parseSubnet(f, what("ip-range"), ipRange)
		if err != nil {
			return p, false, err
		}
		if !p.subnet.Contains(r.Addr()) || r.Bits() < p.subnet.Bits() {
			return p, false, fmt.Errorf("%s %s is not inside subnet %s", what("ip-range"), r, p.subnet)
		}
		p.ipRange, rangeSet = r, true
	}
	if gateway == "" {
		p.gateway, err = firstFree(p, nil)
		return p, rangeSet, err
	}
	gw, err := netip.ParseAddr(gateway)
	if err != nil || !f.has(gw) {
		return p, false, fmt.Errorf("invalid %s %q: want an %s address", what("gateway"), gateway, f.name)
	}
	if !p.subnet.Contains(gw) {
		return p, false, fmt.Errorf("%s %s is not inside subnet %s", what("gateway"), gw, p.subnet)
	}
	if !usable(p.subnet, gw) {
		return p, false, fmt.Errorf("%s %s is the network or broadcast address of %s", what("gateway"), gw, p.subnet)
	}
	p.gateway = gw
	return p, rangeSet, nil
}

// planAux checks the reserved addresses: inside the IPv4 subnet or the
// IPv6 one, not its network or broadcast address, not a gateway, each once.
func planAux(n *Network, aux map[string]string) error {
	if len(aux) == 0 {
		return nil
	}
	n.AuxAddresses = map[string]netip.Addr{}
	seen := map[netip.Addr]string{}
	for name, s := range aux {
		a, err := netip.ParseAddr(s)
		subnet := n.Subnet
		if err == nil && a.Is6() && n.DualStack() {
			subnet = n.Subnet6
		}
		switch {
		case name == "":
			return fmt.Errorf("aux address %q has no name (want NAME=ADDRESS)", s)
		case err != nil || a.Zone() != "" || (!a.Is4() && !n.DualStack()):
			return fmt.Errorf("invalid aux address %s=%q: want an IPv4 address%s", name, s, map[bool]string{true: " or an IPv6 one"}[n.DualStack()])
		case !subnet.Contains(a):
			return fmt.Errorf("aux address %s=%s is not inside subnet %s", name, a, subnet)
		case !usable(subnet, a):
			return fmt.Errorf("aux address %s=%s is the network or broadcast address of %s", name, a, subnet)
		case a == n.Gateway || a == n.Gateway6:
			return fmt.Errorf("aux address %s=%s is the gateway", name, a)
		case seen[a] != "":
			return fmt.Errorf("aux addresses %s and %s are both %s", seen[a], name, a)
		}
		seen[a] = name
		n.AuxAddresses[name] = a
	}
	return nil
}

// firstFree returns the lowest usable address of p's range that is not
// the gateway and not in used.
func firstFree(p pool, used map[netip.Addr]bool) (netip.Addr, error) {
	for a := p.ipRange.Masked().Addr(); p.ipRange.Contains(a); a = a.Next() {
		if usable(p.subnet, a) && a != p.gateway && !used[a] {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("address pool of network %s exhausted: no free address in %s", p.name, p.ipRange)
}

// pickEndpointIP returns the requested address of family f after checking
// it against p, or the first free one.
func pickEndpointIP(f family, p pool, reserved map[netip.Addr]string, requested string, used map[netip.Addr]bool) (netip.Addr, error) {
	if requested == "" {
		for a := range reserved {
			used[a] = true
		}
		return firstFree(p, used)
	}
	a, err := netip.ParseAddr(requested)
	if err != nil || !f.has(a) || a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("invalid address %q: want an %s address", requested, f.name)
	}
	switch {
	case !p.ipRange.Contains(a):
		return netip.Addr{}, fmt.Errorf("address %s is outside the ip-range %s of network %s", a, p.ipRange, p.name)
	case !usable(p.subnet, a):
		return netip.Addr{}, fmt.Errorf("address %s is the network or broadcast address of %s", a, p.subnet)
	case a == p.gateway:
		return netip.Addr{}, fmt.Errorf("address %s is the gateway of network %s", a, p.name)
	case reserved[a] != "":
		return netip.Addr{}, fmt.Errorf("address %s is reserved (aux address %s) in network %s", a, reserved[a], p.name)
	case used[a]:
		return netip.Addr{}, fmt.Errorf("address %s is already in use in network %s", a, p.name)
	}
	return a, nil
}
