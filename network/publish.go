package network

import (
	"context"
	"fmt"
	"slices"
)

// PublishPorts replaces an endpoint's published ports with reqs (none
// unpublishes them all), as Docker's engine asks for them once the
// container has joined (ProgramExternalConnectivity) and when it stops.
// Each request gets its host port, or the first free one of its range;
// a port another endpoint publishes is a conflict. On an internal network
// nothing is published, as Docker silently ignores -p there. Nothing
// changes on error.
func (m *Manager) PublishPorts(ctx context.Context, ref string, reqs []PortRequest) (Endpoint, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ep, err := m.findEndpoint(ref)
	if err != nil {
		return Endpoint{}, err
	}
	n := m.view().Network(ep.NetworkID)
	if n.Internal && len(reqs) > 0 {
		m.log.Info("ports not published: the network is internal", "endpoint", ep.Name, "network", n.Name)
		reqs = nil
	}
	ports, err := m.choosePorts(n, ep, reqs)
	if err != nil {
		return Endpoint{}, err
	}
	old := ep.Ports
	if slices.Equal(old, ports) {
		return *ep, nil
	}
	ep.Ports = ports
	if err := m.enf.EndpointPortsChanged(ctx, m.view(), ep, old); err != nil {
		ep.Ports = old
		m.logFailure("restore published ports", ep.Name, m.enf.EndpointPortsChanged(ctx, m.view(), ep, ports))
		return Endpoint{}, fmt.Errorf("publish ports of endpoint %s: %w", ep.Name, err)
	}
	if err := m.store.putEndpoint(ep); err != nil {
		ep.Ports = old
		m.logFailure("restore published ports", ep.Name, m.enf.EndpointPortsChanged(ctx, m.view(), ep, ports))
		return Endpoint{}, err
	}
	if len(ports) > 0 || len(old) > 0 {
		m.log.Info("endpoint ports published", "endpoint", ep.Name, "ports", len(ports))
	}
	return *ep, nil
}

// choosePorts turns requests into mappings, checking host addresses and
// conflicts with the other endpoints' ports and each other.
func (m *Manager) choosePorts(n *Network, ep *Endpoint, reqs []PortRequest) ([]PortMapping, error) {
	var out []PortMapping
	taken := func(p PortMapping) string {
		for _, q := range out {
			if p.Overlaps(q) {
				return "this endpoint"
			}
		}
		for _, o := range m.st.Endpoints {
			if o.ID == ep.ID {
				continue
			}
			for _, q := range o.Ports {
				if p.Overlaps(q) {
					return "endpoint " + o.Name
				}
			}
		}
		return ""
	}
	for _, r := range reqs {
		if r.Proto != "tcp" && r.Proto != "udp" {
			return nil, invalidf("cannot publish port %d/%s: only tcp and udp are supported", r.Port, r.Proto)
		}
		if r.Port == 0 {
			return nil, invalidf("cannot publish container port 0")
		}
		p := PortMapping{Proto: r.Proto, HostIP: r.HostIP, Port: r.Port}
		if !p.HostIP.IsValid() {
			p.HostIP = n.HostBinding
		}
		if !p.HostIP.Is4() {
			return nil, invalidf("cannot publish on %s: only IPv4 host addresses are supported", p.HostIP)
		}
		if !p.HostIP.IsUnspecified() {
			ok, err := m.host.HasAddr(p.HostIP)
			if err != nil {
				return nil, err
			}
			if !ok {
				return nil, invalidf("cannot publish on %s: not an address of this host", p.HostIP)
			}
		}
		lo, hi := r.candidates()
		var owner string
		for port := uint32(lo); port <= uint32(hi); port++ {
			p.HostPort = uint16(port)
			if owner = taken(p); owner == "" {
				break
			}
		}
		if owner != "" {
			if lo == hi {
				return nil, conflictf("port %s is already published by %s", p, owner)
			}
			return nil, conflictf("no free host port in %d-%d for %d/%s on %s", lo, hi, r.Port, r.Proto, p.HostIP)
		}
		out = append(out, p)
	}
	return out, nil
}
