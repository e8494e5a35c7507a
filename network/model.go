// Package network owns bpfnet's desired state: networks and endpoints, their
// addresses (IPAM), the host plumbing that realises them (bridges, veths,
// routes) and the Enforcer interface through which a datapath applies policy.
// It does not know which datapath runs.
package network

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"time"
)

// Docker's bridge-driver option keys accepted by `network create -o`.
const (
	OptICC         = "com.docker.network.bridge.enable_icc"
	OptMasquerade  = "com.docker.network.bridge.enable_ip_masquerade"
	OptBridgeName  = "com.docker.network.bridge.name"
	OptHostBinding = "com.docker.network.bridge.host_binding_ipv4"
	OptHostIPv4    = "com.docker.network.host_ipv4"
	OptMTU         = "com.docker.network.driver.mtu"
	// OptDefaultBridge marks the default network in inspect output, as Docker
	// does; it is set by the daemon, never accepted from users.
	OptDefaultBridge = "com.docker.network.bridge.default_bridge"
)

// DefaultMTU is the MTU of bridges and veths when the network sets none.
const DefaultMTU = 1500

// Network is one bridge network: a subnet, a Linux bridge holding its
// gateway address, and the policy knobs Docker's bridge driver offers.
type Network struct {
	ID      string       `json:"id"`
	Name    string       `json:"name"`
	Created time.Time    `json:"created"`
	Subnet  netip.Prefix `json:"subnet"`
	// IPRange limits endpoint allocation; it equals Subnet when unset by the user.
	IPRange    netip.Prefix `json:"ip_range"`
	IPRangeSet bool         `json:"ip_range_set,omitempty"`
	Gateway    netip.Addr   `json:"gateway"`
	// Subnet6, IPRange6 and Gateway6 are the network's IPv6 side, valid
	// only for a dual-stack network (`--ipv6`): as their IPv4 fields.
	Subnet6     netip.Prefix `json:"subnet6,omitzero"`
	IPRange6    netip.Prefix `json:"ip_range6,omitzero"`
	IPRange6Set bool         `json:"ip_range6_set,omitempty"`
	Gateway6    netip.Addr   `json:"gateway6,omitzero"`
	Internal    bool         `json:"internal,omitempty"`
	// Default is true for the daemon's default network ("bridge").
	Default bool   `json:"default,omitempty"`
	Bridge  string `json:"bridge"`
	ICC     bool   `json:"icc"`
	// Masquerade rewrites the source of traffic leaving the host.
	Masquerade bool `json:"masquerade"`
	// HostBinding is the default host IP of published ports.
	HostBinding netip.Addr `json:"host_binding"`
	// HostIPv4, when valid, is the SNAT source instead of masquerading.
	HostIPv4 netip.Addr `json:"host_ipv4,omitempty"`
	MTU      int        `json:"mtu"`
	// Options are the -o options as given by the user (shown by inspect).
	Options map[string]string `json:"options,omitempty"`
	// AuxAddresses are reserved addresses of the subnet, by name: never
	// given to an endpoint.
	AuxAddresses map[string]netip.Addr `json:"aux_addresses,omitempty"`
	// Labels are the user's metadata (`--label`), shown by inspect and
	// matched by `ls --filter label=`.
	Labels map[string]string `json:"labels,omitempty"`
	// Attachable is recorded as given (Docker's flag; bridge networks are
	// always attachable here).
	Attachable bool `json:"attachable,omitempty"`
}

// DualStack reports whether n has an IPv6 subnet besides its IPv4 one.
func (n *Network) DualStack() bool { return n.Subnet6.IsValid() }

// reserved returns the addresses of n no endpoint may have besides the
// gateway.
func (n *Network) reserved() map[netip.Addr]string {
	out := map[netip.Addr]string{}
	for name, a := range n.AuxAddresses {
		out[a] = name
	}
	return out
}

// Endpoint is one container interface attached to a network: a veth pair
// whose host side is a port of the network's bridge.
type Endpoint struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	NetworkID string    `json:"network_id"`
	Created   time.Time `json:"created"`
	// NetNS is the path of the container's network namespace; empty for
	// an endpoint handed off to a caller that moves its interface itself
	// (HandedOff).
	NetNS string `json:"netns"`
	// ContainerID, Runtime and Labels say whose the endpoint is (the
	// container engine's id, what attached it: "cni"; pod namespace and
	// name): shown by the CLI, used by a runtime's garbage collection.
	ContainerID string            `json:"container_id,omitempty"`
	Runtime     string            `json:"runtime,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	// IfName is the interface name inside the container (eth0, eth1, ...).
	IfName string `json:"ifname"`
	// HostIf is the host-side veth name (veth + 7 hex).
	HostIf string     `json:"host_if"`
	IP     netip.Addr `json:"ip"`
	// IP6 is the endpoint's IPv6 address on a dual-stack network.
	IP6 netip.Addr `json:"ip6,omitzero"`
	MAC string     `json:"mac"`
	// DefaultRoute records whether we installed the namespace's default route.
	DefaultRoute bool `json:"default_route,omitempty"`
	// Ports are the endpoint's published ports, one per host port.
	Ports []PortMapping `json:"ports,omitempty"`
}

// HandedOff reports whether the container side was left in the daemon's
// namespace for the caller (Docker's engine) to move: such an endpoint has
// no namespace of ours, and IfName is the container side's name there.
func (e *Endpoint) HandedOff() bool { return e.NetNS == "" }

// Prefix returns the endpoint address with the network's prefix length.
func (e *Endpoint) Prefix(n *Network) netip.Prefix {
	return netip.PrefixFrom(e.IP, n.Subnet.Bits())
}

// Prefix6 returns the endpoint's IPv6 address with the network's IPv6
// prefix length (invalid on an IPv4-only network).
func (e *Endpoint) Prefix6(n *Network) netip.Prefix {
	if !e.IP6.IsValid() {
		return netip.Prefix{}
	}
	return netip.PrefixFrom(e.IP6, n.Subnet6.Bits())
}

// MACFromIP derives a container MAC from its IPv4 address as Docker does:
// 02:42 followed by the four address bytes (locally administered, unicast).
func MACFromIP(ip netip.Addr) net.HardwareAddr {
	b := ip.As4()
	return net.HardwareAddr{0x02, 0x42, b[0], b[1], b[2], b[3]}
}

// idRE is the form of network and endpoint ids: 64 lowercase hex digits,
// as Docker's.
var idRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// nameRE is Docker's rule for network and container names.
var nameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// ifnameRE accepts what the kernel accepts for interface names, minus the
// characters that make shell use painful.
var ifnameRE = regexp.MustCompile(`^[a-zA-Z0-9_.-]{1,15}$`)

// options is the parsed form of a network's -o map.
type options struct {
	icc, masquerade bool
	bridge          string
	hostBinding     netip.Addr
	hostIPv4        netip.Addr
	mtu             int
}

// parseOptions validates the -o map: unknown keys and bad values are errors.
func parseOptions(in map[string]string) (options, error) {
	o := options{icc: true, masquerade: true, hostBinding: netip.IPv4Unspecified(), mtu: DefaultMTU}
	for k, v := range in {
		var err error
		switch k {
		case OptICC:
			o.icc, err = parseBool(k, v)
		case OptMasquerade:
			o.masquerade, err = parseBool(k, v)
		case OptBridgeName:
			if !ifnameRE.MatchString(v) {
				err = fmt.Errorf("invalid bridge name %q: 1 to 15 characters of letters, digits, '_', '.', '-'", v)
			}
			o.bridge = v
		case OptHostBinding:
			o.hostBinding, err = parseIPv4(k, v)
		case OptHostIPv4:
			o.hostIPv4, err = parseIPv4(k, v)
		case OptMTU:
			o.mtu, err = strconv.Atoi(v)
			if err != nil || o.mtu < 68 || o.mtu > 65535 {
				err = fmt.Errorf("invalid value %q for option %s: want an integer between 68 and 65535", v, k)
			}
		case OptDefaultBridge:
			err = fmt.Errorf("option %s is reserved for the default network", k)
		default:
			err = fmt.Errorf("unknown network option %q (known: %s, %s, %s, %s, %s, %s)",
				k, OptICC, OptMasquerade, OptBridgeName, OptHostBinding, OptHostIPv4, OptMTU)
		}
		if err != nil {
			return o, err
		}
	}
	return o, nil
}

func parseBool(key, v string) (bool, error) {
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("invalid value %q for option %s: want true or false", v, key)
	}
	return b, nil
}

func parseIPv4(key, v string) (netip.Addr, error) {
	a, err := netip.ParseAddr(v)
	if err != nil || !a.Is4() {
		return netip.Addr{}, fmt.Errorf("invalid value %q for option %s: want an IPv4 address", v, key)
	}
	return a, nil
}
