package network

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/bpfnet/bpfnet/api"
)

// Manager owns the desired state and keeps the host, the enforcer and the
// state file in step with it. All mutations are serialised.
type Manager struct {
	mu    sync.Mutex
	log   *slog.Logger
	host  Host
	enf   Enforcer
	store *Store
	st    *state
	// released counts endpoints released because their veth disappeared.
	released atomic.Uint64
	// spare holds the veth pairs made ahead for hand-off endpoints
	// (spares.go).
	spare spares
}

// DefaultNetworkConfig describes the daemon's default network ("bridge").
type DefaultNetworkConfig struct {
	Enabled bool
	// Bridge is the bridge name (--bridge), "bpfnet0" when empty.
	Bridge string
	// BIP is the gateway address with the subnet's length (--bip), e.g.
	// 172.17.0.1/16; empty picks a subnet from the default pools.
	BIP string
	// IPv6 makes it dual-stack (--ipv6), with FixedCIDRv6 as its IPv6
	// subnet (--fixed-cidr-v6; empty: a unique local /64).
	IPv6        bool
	FixedCIDRv6 string
}

// DefaultBridgeName is the default network's bridge unless --bridge says otherwise.
const DefaultBridgeName = "bpfnet0"

// DefaultNetworkName is the name of the default network, as in Docker.
const DefaultNetworkName = "bridge"

// NewManager returns a manager; call Start before anything else.
func NewManager(log *slog.Logger, host Host, enf Enforcer, store *Store) *Manager {
	return &Manager{log: log, host: host, enf: enf, store: store}
}

func newID() string {
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// limits are the enforcer's (0: none).
func (m *Manager) limits() struct{ networks, endpoints int } {
	var l struct{ networks, endpoints int }
	if e, ok := m.enf.(Limits); ok {
		l.networks, l.endpoints = e.Limits()
	}
	return l
}

// checkIPv6 refuses a dual-stack network the enforcer cannot hold to its
// policy: its IPv6 traffic would flow unchecked, or not at all.
func (m *Manager) checkIPv6(n *Network) error {
	if !n.DualStack() || m.enf == nil { // no enforcer: planning only (preflight)
		return nil
	}
	if e, ok := m.enf.(IPv6Enforcer); ok && e.EnforcesIPv6() {
		return nil
	}
	return invalidf("network %s has IPv6 on, which the %s datapath cannot enforce on this host (the iptables datapath needs ip6tables)", n.Name, m.enf.Name())
}

// logFailure logs a best-effort step that failed (an undo, a cleanup):
// the operation it belongs to reports its own error.
func (m *Manager) logFailure(what, object string, err error) {
	if err != nil {
		m.log.Error(what, "object", object, "err", err)
	}
}

// view returns the current desired state (callers hold mu).
func (m *Manager) view() View {
	return View{Networks: m.st.Networks, Endpoints: m.st.Endpoints}
}

// Load reads the state file without touching the host (for --check and
// --cleanup).
func (m *Manager) Load() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	st, err := m.store.load()
	if err != nil {
		return err
	}
	m.st = st
	return nil
}

// Start loads the state and reconciles the host with it: bridges and veths
// that exist are adopted, missing ones are recreated, endpoints whose
// namespace is gone are dropped, interfaces of ours that the state no
// longer has are deleted, and the enforcer converges. Then the default
// network is ensured.
func (m *Manager) Start(ctx context.Context, def DefaultNetworkConfig) error {
	if err := m.store.create(); err != nil {
		return err
	}
	if err := m.Load(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, n := range m.st.Networks {
		if err := m.checkIPv6(n); err != nil {
			return err
		}
	}
	if err := m.reconcileHost(); err != nil {
		return err
	}
	if err := m.enf.Reconcile(ctx, m.view()); err != nil {
		return fmt.Errorf("reconcile %s datapath: %w", m.enf.Name(), err)
	}
	// Endpoints recreated above come up only now, with their policy.
	for _, ep := range m.st.Endpoints {
		if err := m.host.EndpointUp(ep); err != nil {
			return err
		}
	}
	if err := m.store.sync(m.st); err != nil {
		return err
	}
	if def.Enabled {
		if err := m.ensureDefault(ctx, def); err != nil {
			return fmt.Errorf("default network: %w", err)
		}
	}
	return nil
}

func (m *Manager) reconcileHost() error {
	for _, n := range m.st.Networks {
		if err := m.host.EnsureBridge(n); err != nil {
			return fmt.Errorf("restore network %s: %w", n.Name, err)
		}
	}
	var kept []*Endpoint
	for _, ep := range m.st.Endpoints {
		n := m.view().Network(ep.NetworkID)
		if n == nil {
			m.log.Warn("dropping endpoint of unknown network", "endpoint", ep.Name, "network", ep.NetworkID)
			continue
		}
		ok, err := m.host.EndpointPresent(n, ep)
		if err != nil {
			return err
		}
		if ok {
			kept = append(kept, ep)
			continue
		}
		if !m.host.NetNSExists(ep.NetNS) {
			m.log.Warn("dropping endpoint whose namespace is gone", "endpoint", ep.Name, "netns", ep.NetNS)
			m.logFailure("delete veth", ep.HostIf, m.host.DeleteEndpoint(ep))
			continue
		}
		// The namespace is there but the veth is not (deleted by hand, or the
		// daemon died half-way): recreate it with the same addresses.
		m.logFailure("delete veth", ep.HostIf, m.host.DeleteEndpoint(ep))
		if err := m.host.CreateEndpoint(n, ep); err != nil {
			m.log.Warn("dropping endpoint that cannot be restored", "endpoint", ep.Name, "err", err)
			continue
		}
		m.log.Info("restored endpoint", "endpoint", ep.Name, "host_if", ep.HostIf)
		kept = append(kept, ep)
	}
	m.st.Endpoints = kept
	return m.removeStrayLinks()
}

// removeStrayLinks deletes interfaces marked as ours that the state does
// not know (left by a crash or by a state file removed by hand).
func (m *Manager) removeStrayLinks() error {
	links, err := m.host.OwnedLinks()
	if err != nil {
		return err
	}
	known := map[string]bool{}
	for _, n := range m.st.Networks {
		known["net/"+n.ID] = true
	}
	for _, ep := range m.st.Endpoints {
		known["ep/"+ep.ID] = true
	}
	for _, l := range links {
		if known[l.Kind+"/"+l.ID] {
			continue
		}
		m.log.Info("removing leftover interface", "iface", l.Name)
		if err := m.host.DeleteLink(l.Name); err != nil {
			return err
		}
	}
	return nil
}

// Cleanup removes every endpoint, bridge and datapath object bpfnet made,
// and the state file.
func (m *Manager) Cleanup(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for _, ep := range m.st.Endpoints {
		errs = append(errs, m.host.DeleteEndpoint(ep))
	}
	for _, n := range m.st.Networks {
		errs = append(errs, m.host.DeleteBridge(n))
	}
	m.st.Networks, m.st.Endpoints = nil, nil
	errs = append(errs, m.removeStrayLinks())
	errs = append(errs, m.enf.Cleanup(ctx))
	errs = append(errs, m.store.remove())
	return errors.Join(errs...)
}

// Networks returns copies of all networks, oldest first.
func (m *Manager) Networks() []Network {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Network, 0, len(m.st.Networks))
	for _, n := range m.st.Networks {
		out = append(out, *n)
	}
	return out
}

// Endpoints returns copies of the endpoints, of one network when netRef is set.
func (m *Manager) Endpoints(netRef string) ([]Endpoint, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var id string
	if netRef != "" {
		n, err := m.findNetwork(netRef)
		if err != nil {
			return nil, err
		}
		id = n.ID
	}
	var out []Endpoint
	for _, ep := range m.st.Endpoints {
		if id == "" || ep.NetworkID == id {
			out = append(out, *ep)
		}
	}
	return out, nil
}

// Network returns a copy of the network named, or with the id (prefix), ref.
func (m *Manager) Network(ref string) (Network, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.findNetwork(ref)
	if err != nil {
		return Network{}, err
	}
	return *n, nil
}

// Endpoint returns a copy of the endpoint named, or with the id (prefix), ref.
func (m *Manager) Endpoint(ref string) (Endpoint, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ep, err := m.findEndpoint(ref)
	if err != nil {
		return Endpoint{}, err
	}
	return *ep, nil
}

// View returns a snapshot of the desired state (copies).
func (m *Manager) View() View {
	m.mu.Lock()
	defer m.mu.Unlock()
	var v View
	for _, n := range m.st.Networks {
		c := *n
		v.Networks = append(v.Networks, &c)
	}
	for _, ep := range m.st.Endpoints {
		c := *ep
		v.Endpoints = append(v.Endpoints, &c)
	}
	return v
}

// Locate finds the host side of a container interface (ours or not).
func (m *Manager) Locate(netnsPath string, pid int, ifname string) (api.Location, error) {
	path, err := resolveNetNS(netnsPath, pid)
	if err != nil {
		return api.Location{}, err
	}
	if ifname == "" {
		ifname = "eth0"
	}
	loc, err := m.host.Locate(path, ifname)
	if err != nil {
		return loc, invalid(err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if ep, err := m.findEndpoint(loc.EndpointID); loc.EndpointID != "" && err == nil {
		loc.Endpoint, loc.ContainerID = ep.Name, ep.ContainerID
	}
	return loc, nil
}

// pidNetNS is the namespace path of a process (procfs).
func pidNetNS(pid int) (string, error) {
	p := fmt.Sprintf("/proc/%d/ns/net", pid)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("no process %d: %w", pid, err)
	}
	return p, nil
}

func resolveNetNS(path string, pid int) (string, error) {
	switch {
	case path != "" && pid != 0:
		return "", invalidf("give either a network namespace path or a pid, not both")
	case pid < 0:
		return "", invalidf("invalid pid %d", pid)
	case pid != 0:
		p, err := pidNetNS(pid)
		return p, invalid(err)
	case path == "":
		return "", invalidf("a network namespace is needed: its path or the pid of a process in it")
	}
	if _, err := os.Stat(path); err != nil {
		return "", invalidf("netns %s does not exist", path)
	}
	return path, nil
}

// findByRef resolves a name, full id or unique id prefix.
func findByRef[T any](ref, what string, items []*T, name, id func(*T) string) (*T, error) {
	if ref == "" {
		return nil, invalidf("no %s given", what)
	}
	for _, it := range items {
		if name(it) == ref || id(it) == ref {
			return it, nil
		}
	}
	var found *T
	for _, it := range items {
		if strings.HasPrefix(id(it), ref) {
			if found != nil {
				return nil, invalidf("%s id prefix %q is ambiguous", what, ref)
			}
			found = it
		}
	}
	if found == nil {
		return nil, notFoundf("%s %s not found", what, ref)
	}
	return found, nil
}

func (m *Manager) findNetwork(ref string) (*Network, error) {
	return findByRef(ref, "network", m.st.Networks,
		func(n *Network) string { return n.Name }, func(n *Network) string { return n.ID })
}

func (m *Manager) findEndpoint(ref string) (*Endpoint, error) {
	return findByRef(ref, "endpoint", m.st.Endpoints,
		func(e *Endpoint) string { return e.Name }, func(e *Endpoint) string { return e.ID })
}
