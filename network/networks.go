package network

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/bpfnet/bpfnet/api"
	"github.com/bpfnet/bpfnet/internal/fault"
)

// CreateNetwork validates req, creates the bridge, has the enforcer apply
// the network's policy and persists it. On any error nothing is left.
func (m *Manager) CreateNetwork(ctx context.Context, req api.CreateNetworkRequest) (Network, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.planNetwork(req)
	if err != nil {
		return Network{}, err
	}
	if err := m.addNetwork(ctx, n); err != nil {
		return Network{}, err
	}
	return *n, nil
}

// planNetwork turns a request into a network, checking it against the
// state and the host. It changes nothing.
func (m *Manager) planNetwork(req api.CreateNetworkRequest) (*Network, error) {
	if !nameRE.MatchString(req.Name) {
		return nil, invalidf("invalid network name %q: use letters, digits, '_', '.', '-', starting with a letter or digit", req.Name)
	}
	id := req.ID
	if id == "" {
		id = newID()
	} else if !idRE.MatchString(id) {
		return nil, invalidf("invalid network id %q: want 64 hexadecimal digits", id)
	}
	for _, o := range m.st.Networks {
		if o.Name == req.Name {
			return nil, conflictf("network with name %s already exists", req.Name)
		}
		if o.ID == id {
			return nil, conflictf("network with id %s already exists (%s)", id, o.Name)
		}
	}
	if max := m.limits().networks; max > 0 && len(m.st.Networks) >= max {
		return nil, conflictf("the %s datapath holds at most %d networks, and %d exist", m.enf.Name(), max, len(m.st.Networks))
	}
	opts, err := parseOptions(req.Options)
	if err != nil {
		return nil, invalid(err)
	}
	for k := range req.Labels {
		if k == "" {
			return nil, invalidf("invalid label: the key is empty")
		}
	}
	n := &Network{
		ID: id, Name: req.Name, Created: time.Now().UTC(), Internal: req.Internal,
		ICC: opts.icc, Masquerade: opts.masquerade, HostBinding: opts.hostBinding,
		HostIPv4: opts.hostIPv4, MTU: opts.mtu, Bridge: opts.bridge, Options: req.Options,
		Labels: req.Labels, Attachable: req.Attachable,
	}
	if n.Bridge == "" {
		n.Bridge = "br-" + n.ID[:12]
	}
	var taken []netip.Prefix
	for _, o := range m.st.Networks {
		taken = append(taken, o.Subnet)
		if o.DualStack() {
			taken = append(taken, o.Subnet6)
		}
		if o.Bridge == n.Bridge {
			return nil, conflictf("bridge name %s is already used by network %s", n.Bridge, o.Name)
		}
	}
	if inUse, err := m.host.LinkInUse(n.Bridge); err != nil {
		return nil, err
	} else if inUse {
		return nil, conflictf("bridge name %s is already used by another interface", n.Bridge)
	}
	var routes []netip.Prefix
	if req.Subnet == "" {
		if routes, err = m.host.Routes(); err != nil {
			return nil, err
		}
	}
	if err := planAddresses(n, req, taken, routes); err != nil {
		return nil, invalid(err)
	}
	if err := m.checkIPv6(n); err != nil {
		return nil, err
	}
	return n, nil
}

// addNetwork realises a planned network: bridge, policy, state; it
// unwinds everything on error.
func (m *Manager) addNetwork(ctx context.Context, n *Network) error {
	err := apply(
		step{do: func() error { return m.host.EnsureBridge(n) }, undo: func() { m.logFailure("undo bridge", n.Bridge, m.host.DeleteBridge(n)) }},
		step{do: func() error {
			fault.Point("network-bridge")
			m.st.Networks = append(m.st.Networks, n)
			if err := m.enf.NetworkAdded(ctx, m.view(), n); err != nil {
				return fmt.Errorf("apply network %s: %w", n.Name, err)
			}
			return nil
		}, undo: func() {
			m.st.Networks = slices.DeleteFunc(m.st.Networks, func(o *Network) bool { return o == n })
			if err := m.enf.NetworkRemoved(ctx, m.view(), n); err != nil {
				m.log.Error("undo network rules", "network", n.Name, "err", err)
			}
		}, partial: true},
		step{do: func() error {
			fault.Point("network-enforced")
			return m.store.putNetwork(n)
		}},
	)
	if err != nil {
		return err
	}
	attrs := []any{"network", n.Name, "id", n.ID[:12], "subnet", n.Subnet, "bridge", n.Bridge}
	if n.DualStack() {
		attrs = append(attrs, "subnet6", n.Subnet6)
	}
	m.log.Info("network created", attrs...)
	return nil
}

// RemoveNetwork removes a network that has no endpoints.
func (m *Manager) RemoveNetwork(ctx context.Context, ref string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.findNetwork(ref)
	if err != nil {
		return err
	}
	if n.Default {
		return conflictf("%s is the default network and cannot be removed (turn it off in the daemon's configuration instead)", n.Name)
	}
	return m.removeNetwork(ctx, n)
}

func (m *Manager) removeNetwork(ctx context.Context, n *Network) error {
	count := 0
	for _, ep := range m.st.Endpoints {
		if ep.NetworkID == n.ID {
			count++
		}
	}
	if count > 0 {
		return conflictf("network %s has %d endpoint(s): remove them first", n.Name, count)
	}
	old := m.st.Networks
	m.st.Networks = slices.DeleteFunc(slices.Clone(old), func(o *Network) bool { return o == n })
	if err := m.enf.NetworkRemoved(ctx, m.view(), n); err != nil {
		m.st.Networks = old
		return fmt.Errorf("remove rules of network %s: %w", n.Name, err)
	}
	fault.Point("network-unenforced")
	if err := m.host.DeleteBridge(n); err != nil {
		m.log.Error("delete bridge", "bridge", n.Bridge, "err", err)
	}
	m.log.Info("network removed", "network", n.Name)
	return m.store.deleteNetwork(n.ID)
}

// defaultRequest is the request the default network is created from, and
// the gateway --bip asks for (invalid when it asks for none).
func defaultRequest(def DefaultNetworkConfig) (api.CreateNetworkRequest, netip.Prefix, error) {
	bridge := def.Bridge
	if bridge == "" {
		bridge = DefaultBridgeName
	}
	// The same options Docker shows for its default bridge.
	req := api.CreateNetworkRequest{Name: DefaultNetworkName, Options: map[string]string{OptBridgeName: bridge}}
	var bip netip.Prefix
	if def.BIP != "" {
		p, err := netip.ParsePrefix(def.BIP)
		if err != nil || !p.Addr().Is4() {
			return req, bip, invalidf("invalid default network address %q: want the gateway address with the prefix length, e.g. 172.17.0.1/16", def.BIP)
		}
		bip = p
		req.Subnet, req.Gateway = p.Masked().String(), p.Addr().String()
	}
	if def.FixedCIDRv6 != "" && !def.IPv6 {
		return req, bip, invalidf("--fixed-cidr-v6 needs --ipv6")
	}
	req.EnableIPv6, req.Subnet6 = def.IPv6, def.FixedCIDRv6
	return req, bip, nil
}

// currentDefault returns the default network of the state, and whether it
// already has the configured bridge and address.
func (m *Manager) currentDefault(req api.CreateNetworkRequest, bip netip.Prefix) (*Network, bool) {
	for _, n := range m.st.Networks {
		if n.Default {
			same := n.Bridge == req.Options[OptBridgeName] &&
				(!bip.IsValid() || (n.Gateway == bip.Addr() && n.Subnet.Bits() == bip.Bits())) &&
				n.DualStack() == req.EnableIPv6 && (req.Subnet6 == "" || n.Subnet6.String() == req.Subnet6)
			return n, same
		}
	}
	return nil, false
}

// planDefault plans the default network as if old (a default network
// being replaced, or nil) were gone. It changes nothing.
func (m *Manager) planDefault(req api.CreateNetworkRequest, old *Network) (*Network, error) {
	for _, o := range m.st.Networks {
		if o != old && o.Name == DefaultNetworkName {
			return nil, conflictf("a user network is named %s, the default network's name", DefaultNetworkName)
		}
	}
	saved := m.st.Networks
	m.st.Networks = slices.DeleteFunc(slices.Clone(saved), func(o *Network) bool { return o == old })
	n, err := m.planNetwork(req)
	m.st.Networks = saved
	if err != nil {
		return nil, err
	}
	n.Default = true
	n.Options = map[string]string{
		OptDefaultBridge: "true",
		OptICC:           strconv.FormatBool(n.ICC),
		OptMasquerade:    strconv.FormatBool(n.Masquerade),
		OptHostBinding:   n.HostBinding.String(),
		OptBridgeName:    n.Bridge,
		OptMTU:           strconv.Itoa(n.MTU),
	}
	return n, nil
}

// ensureDefault creates the default network unless the state has it with
// the configured bridge and address; a changed one is recreated if no
// endpoint uses it.
func (m *Manager) ensureDefault(ctx context.Context, def DefaultNetworkConfig) error {
	req, bip, err := defaultRequest(def)
	if err != nil {
		return err
	}
	old, same := m.currentDefault(req, bip)
	if same {
		return nil
	}
	n, err := m.planDefault(req, old)
	if err != nil {
		return err
	}
	if old != nil {
		m.log.Info("default network settings changed: recreating it", "bridge", req.Options[OptBridgeName], "bip", def.BIP, "ipv6", def.IPv6, "fixed_cidr_v6", def.FixedCIDRv6)
		if err := m.removeNetwork(ctx, old); err != nil {
			return err
		}
	}
	return m.addNetwork(ctx, n)
}

// PlanDefault says what Start would do about the default network, without
// changing anything: the network it keeps or would create.
func (m *Manager) PlanDefault(def DefaultNetworkConfig) (n Network, exists bool, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	req, bip, err := defaultRequest(def)
	if err != nil {
		return Network{}, false, err
	}
	old, same := m.currentDefault(req, bip)
	if same {
		return *old, true, nil
	}
	if old != nil {
		for _, ep := range m.st.Endpoints {
			if ep.NetworkID == old.ID {
				return Network{}, false, conflictf("the default network must be recreated for its new bridge or address, but endpoint %s uses it", ep.Name)
			}
		}
	}
	p, err := m.planDefault(req, old)
	if err != nil {
		return Network{}, false, err
	}
	return *p, false, nil
}
