package network

import (
	"context"
	"fmt"
	"net/netip"
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

// choosePorts turns requests into mappings: each gets its host port, or
// the first of its range that neither another endpoint nor an earlier
// request takes.
func (m *Manager) choosePorts(n *Network, ep *Endpoint, reqs []PortRequest) ([]PortMapping, error) {
	var out []PortMapping
	for _, r := range reqs {
		if r.Proto != "tcp" && r.Proto != "udp" {
			return nil, invalidf("cannot publish port %d/%s: only tcp and udp are supported", r.Port, r.Proto)
		}
		if r.Port == 0 {
			return nil, invalidf("cannot publish container port 0")
		}
		p := PortMapping{Proto: r.Proto, HostIP: n.hostIP(r.HostIP), Port: r.Port}
		if err := m.checkHostIP(n, p.HostIP); err != nil {
			return nil, fmt.Errorf("cannot publish: %w", err)
		}
		lo, hi := r.candidates()
		var taken error
		for port := uint32(lo); port <= uint32(hi); port++ {
			p.HostPort = uint16(port)
			if taken = m.portTaken(p, out, ep); taken == nil {
				break
			}
		}
		switch {
		case taken != nil && lo == hi:
			return nil, taken
		case taken != nil:
			return nil, conflictf("no free host port in %d-%d for %d/%s on %s", lo, hi, r.Port, r.Proto, p.HostIP)
		}
		out = append(out, p)
	}
	return out, nil
}

// hostIP is a published port's host address: the one given, else the
// network's host_binding_ipv4.
func (n *Network) hostIP(a netip.Addr) netip.Addr {
	if a.IsValid() {
		return a
	}
	return n.HostBinding
}

// checkHostIP refuses a host address of a published port that is not the
// host's (the wildcards are fine: 0.0.0.0 publishes on every address of
// the network's families, :: on every IPv6 one), and IPv6 ones on a
// network without IPv6. ::1 is refused: Linux routes no packet with a
// loopback source out of lo over IPv6, so nothing could reach the port.
func (m *Manager) checkHostIP(n *Network, a netip.Addr) error {
	switch {
	case a.Is6() && !n.DualStack():
		return invalidf("network %s has no IPv6: publishing on %s needs a network created with --ipv6", n.Name, a)
	case a == netip.IPv6Loopback():
		return invalidf("cannot publish on ::1 (IPv6 has no route_localnet: a connection from ::1 cannot be forwarded to a container); publish on 127.0.0.1 or an address of the host")
	case a.IsUnspecified():
		return nil
	}
	ok, err := m.host.HasAddr(a)
	if err != nil {
		return err
	}
	if !ok {
		return invalidf("%s is not an address of this host", a)
	}
	return nil
}

// portTaken says whether p's host socket is one of chosen (the endpoint's
// other ports) or another endpoint's than skip.
func (m *Manager) portTaken(p PortMapping, chosen []PortMapping, skip *Endpoint) error {
	for _, q := range chosen {
		if p.Overlaps(q) {
			return invalidf("%s is requested twice", q)
		}
	}
	for _, o := range m.st.Endpoints {
		if o == skip {
			continue
		}
		for _, q := range o.Ports {
			if p.Overlaps(q) {
				return conflictf("%s is already published by endpoint %s", q, o.Name)
			}
		}
	}
	return nil
}
