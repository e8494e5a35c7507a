package server

import (
	"github.com/bpfnet/bpfnet/api"
	"github.com/bpfnet/bpfnet/network"
)

// Inspect renders a network and its endpoints (of any network; only its
// own are shown) the way `docker network inspect` does.
func Inspect(n network.Network, eps []*network.Endpoint) api.NetworkInspect {
	cfg := api.IPAMConfig{Subnet: n.Subnet.String(), Gateway: n.Gateway.String()}
	if n.IPRangeSet {
		cfg.IPRange = n.IPRange.String()
	}
	if len(n.AuxAddresses) > 0 {
		cfg.AuxiliaryAddresses = map[string]string{}
		for name, a := range n.AuxAddresses {
			cfg.AuxiliaryAddresses[name] = a.String()
		}
	}
	out := api.NetworkInspect{
		Name: n.Name, ID: n.ID, Created: n.Created, Scope: "local", Driver: "bridge",
		IPAM:     api.IPAM{Driver: "default", Options: map[string]string{}, Config: []api.IPAMConfig{cfg}},
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
		for _, p := range ep.Ports {
			ci.Ports = append(ci.Ports, portOf(p).String())
		}
		out.Containers[ep.ID] = ci
	}
	return out
}

// EndpointOf is an endpoint of network n as the API shows it.
func EndpointOf(ep network.Endpoint, n network.Network) api.Endpoint {
	out := api.Endpoint{ID: ep.ID, Name: ep.Name, NetworkID: ep.NetworkID, Created: ep.Created, NetNS: ep.NetNS,
		IfName: ep.IfName, HostIf: ep.HostIf, IP: ep.IP, MAC: ep.MAC, DefaultRoute: ep.DefaultRoute, Network: n.Name,
		ContainerID: ep.ContainerID, Runtime: ep.Runtime, Labels: ep.Labels}
	if n.ID != "" {
		out.Subnet, out.Gateway = n.Subnet.String(), n.Gateway.String()
	}
	for _, p := range ep.Ports {
		out.Ports = append(out.Ports, portOf(p))
	}
	return out
}

func portOf(p network.PortMapping) api.PortMapping {
	return api.PortMapping{Proto: p.Proto, HostIP: p.HostIP, HostPort: p.HostPort, Port: p.Port}
}
