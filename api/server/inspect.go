package server

import (
	"net/netip"

	"github.com/bpfnet/bpfnet/api"
	"github.com/bpfnet/bpfnet/network"
)

// Inspect renders a network and its endpoints (of any network; only its
// own are shown) the way `docker network inspect` does.
func Inspect(n network.Network, eps []*network.Endpoint) api.NetworkInspect {
	configs := []api.IPAMConfig{ipamConfig(n.Subnet, n.IPRange, n.IPRangeSet, n.Gateway, n.AuxAddresses)}
	if n.DualStack() {
		configs = append(configs, ipamConfig(n.Subnet6, n.IPRange6, n.IPRange6Set, n.Gateway6, n.AuxAddresses))
	}
	out := api.NetworkInspect{
		Name: n.Name, ID: n.ID, Created: n.Created, Scope: "local", Driver: "bridge", EnableIPv6: n.DualStack(),
		IPAM:     api.IPAM{Driver: "default", Options: map[string]string{}, Config: configs},
		Internal: n.Internal, Attachable: n.Attachable, Containers: map[string]api.ContainerInspect{},
		Options: map[string]string{}, Labels: map[string]string{}, Bridge: n.Bridge,
	}
	for k, v := range n.Labels {
		out.Labels[k] = v
	}
	for k, v := range n.Options {
		out.Options[k] = v
	}
	for _, ep := range eps {
		if ep.NetworkID != n.ID {
			continue
		}
		ci := api.ContainerInspect{
			Name: ep.Name, EndpointID: ep.ID, MacAddress: ep.MAC, IPv4Address: ep.Prefix(&n).String(),
		}
		if ep.IP6.IsValid() {
			ci.IPv6Address = ep.Prefix6(&n).String()
		}
		for _, p := range ep.Ports {
			ci.Ports = append(ci.Ports, portOf(p).String())
		}
		out.Containers[ep.ID] = ci
	}
	return out
}

// ipamConfig is one subnet of a network as inspect shows it, with the aux
// addresses inside it.
func ipamConfig(subnet, ipRange netip.Prefix, rangeSet bool, gateway netip.Addr, aux map[string]netip.Addr) api.IPAMConfig {
	cfg := api.IPAMConfig{Subnet: subnet.String(), Gateway: gateway.String()}
	if rangeSet {
		cfg.IPRange = ipRange.String()
	}
	for name, a := range aux {
		if subnet.Contains(a) {
			if cfg.AuxiliaryAddresses == nil {
				cfg.AuxiliaryAddresses = map[string]string{}
			}
			cfg.AuxiliaryAddresses[name] = a.String()
		}
	}
	return cfg
}

// EndpointOf is an endpoint of network n as the API shows it.
func EndpointOf(ep network.Endpoint, n network.Network) api.Endpoint {
	out := api.Endpoint{ID: ep.ID, Name: ep.Name, NetworkID: ep.NetworkID, Created: ep.Created, NetNS: ep.NetNS,
		IfName: ep.IfName, HostIf: ep.HostIf, IP: ep.IP, IP6: ep.IP6, MAC: ep.MAC, DefaultRoute: ep.DefaultRoute, Network: n.Name,
		ContainerID: ep.ContainerID, Runtime: ep.Runtime, Labels: ep.Labels}
	if n.ID != "" {
		out.Subnet, out.Gateway = n.Subnet.String(), n.Gateway.String()
	}
	if n.DualStack() {
		out.Subnet6, out.Gateway6 = n.Subnet6.String(), n.Gateway6.String()
	}
	for _, p := range ep.Ports {
		out.Ports = append(out.Ports, portOf(p))
	}
	return out
}

func portOf(p network.PortMapping) api.PortMapping {
	return api.PortMapping{Proto: p.Proto, HostIP: p.HostIP, HostPort: p.HostPort, Port: p.Port}
}
