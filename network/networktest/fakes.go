// Package networktest has in-memory fakes of the manager's host plumbing
// and of an enforcer, for tests that need no privileges (the manager's,
// the API server's, the exporter's).
package networktest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"

	"github.com/bpfnet/bpfnet/api"
	"github.com/bpfnet/bpfnet/network"
)

// Calls is the ordered record of what a fake host and a fake enforcer were
// asked to do, as "what name" lines (e.g. "veth+ c1", "endpoint-added c1").
type Calls struct {
	mu   sync.Mutex
	list []string
}

func (c *Calls) add(s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.list = append(c.list, s)
}

// List returns the calls so far.
func (c *Calls) List() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.list)
}

// Reset forgets the calls so far.
func (c *Calls) Reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.list = nil
}

// Host implements network.Host in memory: bridges, veths (with their up
// state), routes and addresses. Its calls go to Calls: "bridge+ NET",
// "bridge- NET", "veth+ EP", "up EP", "down EP", "veth- EP", and for
// spares "spare+ NAME", "spare- NAME", "spare-taken EP".
type Host struct {
	Calls *Calls
	// Routed and Addrs are the host's routes and addresses.
	Routed []netip.Prefix
	Addrs  []netip.Addr

	mu      sync.Mutex
	bridges map[string]bool
	veths   map[string]bool // host-side name → up
	spares  map[string]bool
	nSpares int
}

// NewHost returns an empty host recording into calls.
func NewHost(calls *Calls) *Host {
	return &Host{Calls: calls, bridges: map[string]bool{}, veths: map[string]bool{}, spares: map[string]bool{}}
}

// Bridges returns the bridges that exist.
func (h *Host) Bridges() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.bridges)
}

// Veth reports whether a host-side veth exists and is up.
func (h *Host) Veth(name string) (exists, up bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	up, exists = h.veths[name]
	return exists, up
}

// Veths returns how many veths exist.
func (h *Host) Veths() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.veths)
}

func (h *Host) set(m map[string]bool, k string, v bool, call string) {
	h.mu.Lock()
	m[k] = v
	h.mu.Unlock()
	h.Calls.add(call)
}

func (h *Host) Routes() ([]netip.Prefix, error)     { return h.Routed, nil }
func (h *Host) LinkInUse(name string) (bool, error) { return false, nil }

func (h *Host) EnsureBridge(n *network.Network) error {
	h.set(h.bridges, n.Bridge, true, "bridge+ "+n.Name)
	return nil
}

func (h *Host) DeleteBridge(n *network.Network) error {
	h.mu.Lock()
	delete(h.bridges, n.Bridge)
	h.mu.Unlock()
	h.Calls.add("bridge- " + n.Name)
	return nil
}

func (h *Host) CreateEndpoint(n *network.Network, ep *network.Endpoint) error {
	h.mu.Lock()
	spare := h.spares[ep.HostIf]
	delete(h.spares, ep.HostIf)
	h.mu.Unlock()
	if spare {
		h.set(h.veths, ep.HostIf, false, "spare-taken "+ep.Name)
		return nil
	}
	if ep.HostIf == "" {
		ep.HostIf = "veth" + ep.ID[:7]
	}
	h.set(h.veths, ep.HostIf, false, "veth+ "+ep.Name)
	return nil
}

// CreateSpare implements network.Host: "spare+ NAME".
func (h *Host) CreateSpare() (string, error) {
	h.mu.Lock()
	h.nSpares++
	name := fmt.Sprintf("vspare%d", h.nSpares)
	h.spares[name] = true
	h.mu.Unlock()
	h.Calls.add("spare+ " + name)
	return name, nil
}

// DeleteSpare implements network.Host: "spare- NAME".
func (h *Host) DeleteSpare(name string) error {
	h.mu.Lock()
	delete(h.spares, name)
	h.mu.Unlock()
	h.Calls.add("spare- " + name)
	return nil
}

// Spares returns the spares waiting, by name.
func (h *Host) Spares() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Sorted(maps.Keys(h.spares))
}

func (h *Host) EndpointUp(ep *network.Endpoint) error {
	h.set(h.veths, ep.HostIf, true, "up "+ep.Name)
	return nil
}

func (h *Host) EndpointDown(ep *network.Endpoint) error {
	h.mu.Lock()
	if _, ok := h.veths[ep.HostIf]; ok {
		h.veths[ep.HostIf] = false
	}
	h.mu.Unlock()
	h.Calls.add("down " + ep.Name)
	return nil
}

func (h *Host) EndpointPresent(n *network.Network, ep *network.Endpoint) (bool, error) {
	exists, _ := h.Veth(ep.HostIf)
	return exists, nil
}

func (h *Host) CheckEndpoint(n *network.Network, ep *network.Endpoint) error {
	if exists, up := h.Veth(ep.HostIf); !exists || !up {
		return errors.New("veth " + ep.HostIf + " missing or down")
	}
	return nil
}

func (h *Host) DeleteEndpoint(ep *network.Endpoint) error {
	h.mu.Lock()
	delete(h.veths, ep.HostIf)
	h.mu.Unlock()
	h.Calls.add("veth- " + ep.Name)
	return nil
}

func (h *Host) OwnedLinks() ([]network.OwnedLink, error) { return nil, nil }
func (h *Host) DeleteLink(name string) error             { return nil }
func (h *Host) Locate(netnsPath, ifname string) (api.Location, error) {
	return api.Location{}, errors.New("the fake host has no container interfaces")
}
func (h *Host) NetNSExists(path string) bool { return true }
func (h *Host) HasAddr(ip netip.Addr) (bool, error) {
	return slices.Contains(h.Addrs, ip), nil
}
func (h *Host) WatchEndpointLinks(ctx context.Context, gone func(string)) error { return nil }

// Enforcer implements network.Enforcer (and network.Limits) by recording
// its calls: "reconcile", "network-added NET", "network-removed NET",
// "endpoint-added EP", "endpoint-removed EP", "ports EP", "cleanup". Fail makes the
// call of that name fail; MaxNetworks and MaxEndpoints, when set, are its
// limits; IPv6 says whether it enforces IPv6 (network.IPv6Enforcer).
type Enforcer struct {
	Calls                     *Calls
	Fail                      string
	MaxNetworks, MaxEndpoints int
	IPv6                      bool
}

func (e *Enforcer) Name() string { return "fake" }

func (e *Enforcer) do(call, name string) error {
	e.Calls.add(call + " " + name)
	if e.Fail == call {
		return errors.New(call + " failed")
	}
	return nil
}

func (e *Enforcer) Reconcile(ctx context.Context, v network.View) error { return e.do("reconcile", "") }
func (e *Enforcer) NetworkAdded(ctx context.Context, v network.View, n *network.Network) error {
	return e.do("network-added", n.Name)
}
func (e *Enforcer) NetworkRemoved(ctx context.Context, v network.View, n *network.Network) error {
	return e.do("network-removed", n.Name)
}
func (e *Enforcer) EndpointAdded(ctx context.Context, v network.View, ep *network.Endpoint) error {
	return e.do("endpoint-added", ep.Name)
}
func (e *Enforcer) EndpointRemoved(ctx context.Context, v network.View, ep *network.Endpoint) error {
	return e.do("endpoint-removed", ep.Name)
}
func (e *Enforcer) EndpointPortsChanged(ctx context.Context, v network.View, ep *network.Endpoint, old []network.PortMapping) error {
	return e.do("ports", ep.Name)
}
func (e *Enforcer) Cleanup(ctx context.Context) error { return e.do("cleanup", "") }
func (e *Enforcer) Limits() (int, int)                { return e.MaxNetworks, e.MaxEndpoints }
func (e *Enforcer) EnforcesIPv6() bool                { return e.IPv6 }

// PreattachingEnforcer is an Enforcer that implements
// network.Preattacher: "preattach NAME", "unattach NAME".
type PreattachingEnforcer struct{ Enforcer }

func (e *PreattachingEnforcer) Preattach(name string) (bool, error) {
	if err := e.do("preattach", name); err != nil {
		return false, err
	}
	return true, nil
}
func (e *PreattachingEnforcer) Unattach(name string) error { return e.do("unattach", name) }

// Observable is an Enforcer with the abilities a datapath may offer for
// observing it, answering with what its fields hold.
type Observable struct {
	*Enforcer
	// Counters are what Counts returns, whatever the view.
	Counters network.Counts
	// Events feed Drops; the channel given to a caller closes when its
	// context ends.
	Events chan network.DropEvent
	NAT    []api.NATEntry
	Stats  api.NATStats
	Attach string
}

func (o *Observable) Counts(network.View) (network.Counts, error) { return o.Counters, nil }

func (o *Observable) Drops(ctx context.Context) (<-chan network.DropEvent, error) {
	out := make(chan network.DropEvent)
	go func() {
		defer close(out)
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-o.Events:
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}

func (o *Observable) NATEntries() ([]api.NATEntry, error) { return o.NAT, nil }
func (o *Observable) NATStats() (api.NATStats, error)     { return o.Stats, nil }
func (o *Observable) Describe(s *api.Status)              { s.Attach = o.Attach }
