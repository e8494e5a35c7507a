package network

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/bpfnet/bpfnet/api"
	"github.com/bpfnet/bpfnet/internal/fault"
)

// CreateEndpoint attaches a container namespace to a network: veth pair,
// address, routes, policy and state. On any error nothing is left.
func (m *Manager) CreateEndpoint(ctx context.Context, req api.CreateEndpointRequest) (Endpoint, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if req.Network == "" {
		return Endpoint{}, invalidf("a network is required")
	}
	n, err := m.findNetwork(req.Network)
	if err != nil {
		return Endpoint{}, err
	}
	ep := &Endpoint{ID: req.ID, Name: req.Name, NetworkID: n.ID, Created: time.Now().UTC(), IfName: req.IfName,
		ContainerID: req.ContainerID, Runtime: req.Runtime, Labels: req.Labels}
	if ep.ID == "" {
		ep.ID = newID()
	} else if !idRE.MatchString(ep.ID) {
		return Endpoint{}, invalidf("invalid endpoint id %q: want 64 hexadecimal digits", ep.ID)
	}
	switch {
	case req.HandOff && (req.NetNS != "" || req.PID != 0):
		return Endpoint{}, invalidf("an endpoint handed off has no namespace yet: give neither a path nor a pid")
	case req.HandOff:
		if ep.IfName == "" {
			// The container side's name in the daemon's namespace until
			// the caller moves it: unique, as the id is.
			ep.IfName = "bpc" + ep.ID[:12]
		}
	default:
		if ep.NetNS, err = resolveNetNS(req.NetNS, req.PID); err != nil {
			return Endpoint{}, err
		}
		if !m.host.NetNSExists(ep.NetNS) {
			return Endpoint{}, invalidf("%s is not a network namespace", ep.NetNS)
		}
	}
	if ep.IfName == "" {
		ep.IfName = "eth0"
	}
	if req.MAC != "" {
		mac, err := net.ParseMAC(req.MAC)
		if err != nil || len(mac) != 6 || mac[0]&1 == 1 {
			return Endpoint{}, invalidf("invalid MAC address %q: want a unicast Ethernet address such as 02:42:c0:a8:01:02", req.MAC)
		}
		ep.MAC = mac.String()
	}
	if !ifnameRE.MatchString(ep.IfName) {
		return Endpoint{}, invalidf("invalid interface name %q: 1 to 15 characters of letters, digits, '_', '.', '-'", ep.IfName)
	}
	if ep.Name == "" {
		ep.Name = ep.ID[:12]
	} else if !nameRE.MatchString(ep.Name) {
		return Endpoint{}, invalidf("invalid endpoint name %q: use letters, digits, '_', '.', '-', starting with a letter or digit", ep.Name)
	}
	if max := m.limits().endpoints; max > 0 && len(m.st.Endpoints) >= max {
		return Endpoint{}, conflictf("the %s datapath holds at most %d endpoints, and %d exist", m.enf.Name(), max, len(m.st.Endpoints))
	}
	used := map[netip.Addr]bool{}
	for _, o := range m.st.Endpoints {
		if o.Name == ep.Name {
			return Endpoint{}, conflictf("endpoint with name %s already exists", ep.Name)
		}
		if o.ID == ep.ID {
			return Endpoint{}, conflictf("endpoint with id %s already exists (%s)", ep.ID, o.Name)
		}
		if o.NetworkID == n.ID {
			used[o.IP] = true
			if o.IP6.IsValid() {
				used[o.IP6] = true
			}
			if !ep.HandedOff() && o.NetNS == ep.NetNS && o.IfName == ep.IfName {
				return Endpoint{}, conflictf("interface %s of netns %s is already endpoint %s", ep.IfName, ep.NetNS, o.Name)
			}
		}
	}
	if ep.Ports, err = m.planPorts(n, req.Ports); err != nil {
		return Endpoint{}, err
	}
	if ep.IP, err = pickEndpointIP(ipv4, n.pool4(), n.reserved(), req.IP, used); err != nil {
		if req.IP == "" {
			return Endpoint{}, conflictf("%v", err)
		}
		return Endpoint{}, invalid(err)
	}
	switch {
	case n.DualStack():
		if ep.IP6, err = pickEndpointIP(ipv6, n.pool6(), n.reserved(), req.IP6, used); err != nil {
			if req.IP6 == "" {
				return Endpoint{}, conflictf("%v", err)
			}
			return Endpoint{}, invalid(err)
		}
	case req.IP6 != "":
		return Endpoint{}, invalidf("network %s has no IPv6 subnet: an IPv6 address needs a network created with --ipv6", n.Name)
	}
	if ep.MAC == "" {
		ep.MAC = MACFromIP(ep.IP).String()
	}
	spare := m.takeSpare(req.HandOff)
	if spare != "" {
		ep.HostIf = spare
	}
	// removeVeth undoes the pair: a spare's programs go with it, whether
	// or not the take got it marked as ep's.
	removeVeth := func() {
		if spare != "" {
			m.dropSpare(spare, ep)
			return
		}
		m.logFailure("undo veth", ep.HostIf, m.host.DeleteEndpoint(ep))
	}
	err = apply(
		step{do: func() error {
			if err := m.host.CreateEndpoint(n, ep); err != nil {
				if spare != "" {
					removeVeth() // a spare that cannot be taken is left to us
				}
				return invalid(err)
			}
			return nil
		}, undo: removeVeth},
		step{do: func() error {
			fault.Point("endpoint-veth")
			m.st.Endpoints = append(m.st.Endpoints, ep)
			if err := m.enf.EndpointAdded(ctx, m.view(), ep); err != nil {
				return fmt.Errorf("apply endpoint %s: %w", ep.Name, err)
			}
			return nil
		}, undo: func() {
			m.st.Endpoints = slices.DeleteFunc(m.st.Endpoints, func(o *Endpoint) bool { return o == ep })
			if err := m.enf.EndpointRemoved(ctx, m.view(), ep); err != nil {
				m.log.Error("undo endpoint policy", "endpoint", ep.Name, "err", err)
			}
		}, partial: true},
		// The veth comes up only once its policy is in place.
		step{do: func() error {
			fault.Point("endpoint-enforced")
			return m.host.EndpointUp(ep)
		}},
		step{do: func() error { return m.store.putEndpoint(ep) }},
	)
	if err != nil {
		return Endpoint{}, err
	}
	attrs := []any{"endpoint", ep.Name, "network", n.Name, "ip", ep.IP, "host_if", ep.HostIf}
	if ep.IP6.IsValid() {
		attrs = append(attrs, "ip6", ep.IP6)
	}
	m.log.Info("endpoint created", attrs...)
	return *ep, nil
}

// planPorts parses and checks an endpoint's -p specs: the host IP defaults
// to the network's host_binding_ipv4 and must be an address of the host,
// and no host port may be published twice for the same address.
func (m *Manager) planPorts(n *Network, specs []string) ([]PortMapping, error) {
	if len(specs) == 0 {
		return nil, nil
	}
	if n.Internal {
		// Docker accepts -p on an internal network and silently publishes
		// nothing; a request that cannot work is refused instead.
		return nil, invalidf("network %s is internal: its endpoints cannot publish ports", n.Name)
	}
	var out []PortMapping
	for _, spec := range specs {
		ports, err := ParsePortSpec(spec)
		if err != nil {
			return nil, invalid(err)
		}
		for _, p := range ports {
			p.HostIP = n.hostIP(p.HostIP)
			err := m.checkHostIP(n, p.HostIP)
			if err == nil {
				err = m.portTaken(p, out, nil)
			}
			if err != nil {
				return nil, fmt.Errorf("port mapping %q: %w", spec, err)
			}
			out = append(out, p)
		}
	}
	return out, nil
}

// CheckEndpoint reports whether an endpoint is whole: its plumbing as the
// host shows it and, when the enforcer can tell, its policy. The error
// (a conflict) says what is missing.
func (m *Manager) CheckEndpoint(ref string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	ep, err := m.findEndpoint(ref)
	if err != nil {
		return err
	}
	v := m.view()
	if err := m.host.CheckEndpoint(v.Network(ep.NetworkID), ep); err != nil {
		return conflictf("endpoint %s: %v", ep.Name, err)
	}
	if c, ok := m.enf.(EndpointChecker); ok {
		if err := c.CheckEndpoint(v, ep); err != nil {
			return conflictf("endpoint %s: the %s datapath: %v", ep.Name, m.enf.Name(), err)
		}
	}
	return nil
}

// RemoveEndpoint detaches an endpoint: policy, veth pair and state.
func (m *Manager) RemoveEndpoint(ctx context.Context, ref string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	ep, err := m.findEndpoint(ref)
	if err != nil {
		return err
	}
	if err := m.removeEndpoint(ctx, ep); err != nil {
		return err
	}
	m.log.Info("endpoint removed", "endpoint", ep.Name)
	return nil
}

// removeEndpoint takes the endpoint's veth down first, so that nothing
// flows while its policy is removed (the programs or rules go before the
// veth does; a crash in between leaves it down, and the next start
// restores the endpoint whole).
func (m *Manager) removeEndpoint(ctx context.Context, ep *Endpoint) error {
	if err := m.host.EndpointDown(ep); err != nil {
		return err
	}
	old := m.st.Endpoints
	m.st.Endpoints = slices.DeleteFunc(slices.Clone(old), func(o *Endpoint) bool { return o == ep })
	if err := m.enf.EndpointRemoved(ctx, m.view(), ep); err != nil {
		m.st.Endpoints = old
		m.logFailure("set veth up again", ep.HostIf, m.host.EndpointUp(ep))
		return fmt.Errorf("remove policy of endpoint %s: %w", ep.Name, err)
	}
	fault.Point("endpoint-unenforced")
	if err := m.host.DeleteEndpoint(ep); err != nil {
		m.log.Error("delete veth", "iface", ep.HostIf, "err", err)
	}
	return m.store.deleteEndpoint(ep.ID)
}

// WatchEndpoints releases, until ctx ends, every endpoint whose veth the
// kernel deletes, which is what happens when its container's namespace
// dies: its address, published ports, policy and state go, with a log line
// and a count (Released), as Docker releases a dead container's network
// resources. Endpoints whose veth went missing before the watch began are
// released too.
func (m *Manager) WatchEndpoints(ctx context.Context) error {
	if err := m.host.WatchEndpointLinks(ctx, func(id string) { m.release(ctx, id) }); err != nil {
		return err
	}
	for _, ep := range m.View().Endpoints {
		m.release(ctx, ep.ID)
	}
	return nil
}

// Released is the number of endpoints released because their interface
// disappeared.
func (m *Manager) Released() uint64 { return m.released.Load() }

// release removes endpoint id if its veth is gone.
func (m *Manager) release(ctx context.Context, id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	i := slices.IndexFunc(m.st.Endpoints, func(e *Endpoint) bool { return e.ID == id })
	if i < 0 {
		return // removed through the API (its veth went with it)
	}
	ep := m.st.Endpoints[i]
	if n := m.view().Network(ep.NetworkID); n != nil {
		if present, err := m.host.EndpointPresent(n, ep); err != nil || present {
			return
		}
	}
	if err := m.removeEndpoint(ctx, ep); err != nil {
		m.log.Error("release endpoint whose interface is gone", "endpoint", ep.Name, "err", err)
		return
	}
	m.released.Add(1)
	m.log.Info("endpoint released: its interface is gone (its container's network namespace was deleted)",
		"endpoint", ep.Name, "ip", ep.IP, "host_if", ep.HostIf, "netns", ep.NetNS)
}
