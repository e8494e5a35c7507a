package network

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
)

// fakeHost is the host plumbing in memory: bridges, veths (with their up
// state), routes and addresses; it records what was done, in order.
type fakeHost struct {
	mu      sync.Mutex
	routes  []netip.Prefix
	addrs   []netip.Addr
	bridges map[string]bool
	veths   map[string]bool // host-side name → up
	calls   *[]string
}

func newFakeHost(calls *[]string) *fakeHost {
	return &fakeHost{bridges: map[string]bool{}, veths: map[string]bool{}, calls: calls}
}

func (h *fakeHost) record(s string) { *h.calls = append(*h.calls, s) }

func (h *fakeHost) Routes() ([]netip.Prefix, error)     { return h.routes, nil }
func (h *fakeHost) LinkInUse(name string) (bool, error) { return false, nil }
func (h *fakeHost) EnsureBridge(n *Network) error {
	h.bridges[n.Bridge] = true
	h.record("bridge+ " + n.Name)
	return nil
}
func (h *fakeHost) DeleteBridge(n *Network) error {
	delete(h.bridges, n.Bridge)
	h.record("bridge- " + n.Name)
	return nil
}
func (h *fakeHost) CreateEndpoint(n *Network, ep *Endpoint) error {
	if ep.HostIf == "" {
		ep.HostIf = "veth" + ep.ID[:7]
	}
	h.veths[ep.HostIf] = false
	h.record("veth+ " + ep.Name)
	return nil
}
func (h *fakeHost) EndpointUp(ep *Endpoint) error {
	h.veths[ep.HostIf] = true
	h.record("up " + ep.Name)
	return nil
}
func (h *fakeHost) EndpointDown(ep *Endpoint) error {
	if _, ok := h.veths[ep.HostIf]; ok {
		h.veths[ep.HostIf] = false
	}
	h.record("down " + ep.Name)
	return nil
}
func (h *fakeHost) EndpointPresent(n *Network, ep *Endpoint) (bool, error) {
	_, ok := h.veths[ep.HostIf]
	return ok, nil
}
func (h *fakeHost) DeleteEndpoint(ep *Endpoint) error {
	delete(h.veths, ep.HostIf)
	h.record("veth- " + ep.Name)
	return nil
}
func (h *fakeHost) OwnedLinks() ([]OwnedLink, error) { return nil, nil }
func (h *fakeHost) DeleteLink(name string) error     { return nil }
func (h *fakeHost) Locate(netnsPath, ifname string) (Location, error) {
	return Location{}, errors.New("not here")
}
func (h *fakeHost) NetNSExists(path string) bool { return true }
func (h *fakeHost) HasAddr(ip netip.Addr) (bool, error) {
	return slices.Contains(h.addrs, ip), nil
}
func (h *fakeHost) WatchEndpointLinks(ctx context.Context, gone func(string)) error { return nil }

// fakeEnforcer records the calls the manager makes; fail makes the named
// one fail; networks and endpoints, when set, are its limits.
type fakeEnforcer struct {
	calls               *[]string
	fail                string
	networks, endpoints int
}

func (e *fakeEnforcer) Name() string { return "fake" }
func (e *fakeEnforcer) do(call, name string) error {
	*e.calls = append(*e.calls, call+" "+name)
	if e.fail == call {
		return errors.New(call + " failed")
	}
	return nil
}
func (e *fakeEnforcer) Reconcile(ctx context.Context, v View) error { return e.do("reconcile", "") }
func (e *fakeEnforcer) NetworkAdded(ctx context.Context, v View, n *Network) error {
	return e.do("network-added", n.Name)
}
func (e *fakeEnforcer) NetworkRemoved(ctx context.Context, v View, n *Network) error {
	return e.do("network-removed", n.Name)
}
func (e *fakeEnforcer) EndpointAdded(ctx context.Context, v View, ep *Endpoint) error {
	return e.do("endpoint-added", ep.Name)
}
func (e *fakeEnforcer) EndpointRemoved(ctx context.Context, v View, ep *Endpoint) error {
	return e.do("endpoint-removed", ep.Name)
}
func (e *fakeEnforcer) Cleanup(ctx context.Context) error { return e.do("cleanup", "") }
func (e *fakeEnforcer) Limits() (int, int)                { return e.networks, e.endpoints }

func newTestManager(t *testing.T, enf *fakeEnforcer, host *fakeHost) *Manager {
	t.Helper()
	m := NewManager(slog.New(slog.NewTextHandler(io.Discard, nil)), host, enf, NewStore(t.TempDir()))
	if err := m.Start(context.Background(), DefaultNetworkConfig{Enabled: true}); err != nil {
		t.Fatal(err)
	}
	return m
}

// The default network gets Docker's first pool, the next network the
// first one after it that no route of the host overlaps.
func TestPoolsAvoidRoutes(t *testing.T) {
	var calls []string
	host := newFakeHost(&calls)
	host.routes = []netip.Prefix{netip.MustParsePrefix("172.18.0.0/24")}
	m := newTestManager(t, &fakeEnforcer{calls: &calls}, host)
	def, err := m.Network(DefaultNetworkName)
	if err != nil || def.Subnet != netip.MustParsePrefix("172.17.0.0/16") {
		t.Fatalf("default network %v (%v), want 172.17.0.0/16", def.Subnet, err)
	}
	n, err := m.CreateNetwork(context.Background(), CreateNetworkRequest{Name: "web"})
	if err != nil || n.Subnet != netip.MustParsePrefix("172.19.0.0/16") {
		t.Errorf("web got %v (%v), want 172.19.0.0/16 (172.18 holds a route)", n.Subnet, err)
	}
}

// At the enforcer's limit, creating another network or endpoint fails
// with a message and leaves nothing: no bridge, no veth, no enforcer call,
// no state.
func TestEnforcerLimits(t *testing.T) {
	var calls []string
	host := newFakeHost(&calls)
	enf := &fakeEnforcer{calls: &calls, networks: 3, endpoints: 2}
	m := newTestManager(t, enf, host)
	ctx := context.Background()
	for _, name := range []string{"a", "b"} { // with the default network: 3
		if _, err := m.CreateNetwork(ctx, CreateNetworkRequest{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	before, bridges := len(calls), len(host.bridges)
	_, err := m.CreateNetwork(ctx, CreateNetworkRequest{Name: "c"})
	if err == nil || KindOf(err) != KindConflict || !strings.Contains(err.Error(), "at most 3 networks") {
		t.Errorf("a fourth network: %v, want a conflict naming the limit", err)
	}
	for i := range 2 {
		if _, err := m.CreateEndpoint(ctx, CreateEndpointRequest{Network: "a", NetNS: netnsFile(t), IfName: "eth" + string(rune('0'+i))}); err != nil {
			t.Fatal(err)
		}
	}
	before, bridges = len(calls), len(host.bridges)
	_, err = m.CreateEndpoint(ctx, CreateEndpointRequest{Network: "b", NetNS: netnsFile(t)})
	if err == nil || KindOf(err) != KindConflict || !strings.Contains(err.Error(), "at most 2 endpoints") {
		t.Errorf("a third endpoint: %v, want a conflict naming the limit", err)
	}
	if len(calls) != before || len(host.bridges) != bridges || len(host.veths) != 2 {
		t.Errorf("a refused create did something: %v", calls[before:])
	}
	if len(m.View().Networks) != 3 || len(m.View().Endpoints) != 2 {
		t.Errorf("state has %d networks and %d endpoints, want 3 and 2", len(m.View().Networks), len(m.View().Endpoints))
	}
}

// Removing an endpoint takes its veth down before its policy goes, so
// nothing flows unfiltered in between (or after a crash there); a failed
// removal puts it back up.
func TestEndpointDownBeforePolicyGoes(t *testing.T) {
	var calls []string
	host := newFakeHost(&calls)
	enf := &fakeEnforcer{calls: &calls}
	m := newTestManager(t, enf, host)
	ctx := context.Background()
	ep, err := m.CreateEndpoint(ctx, CreateEndpointRequest{Network: DefaultNetworkName, NetNS: netnsFile(t), Name: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	calls = nil
	enf.fail = "endpoint-removed"
	if err := m.RemoveEndpoint(ctx, "c1"); err == nil {
		t.Fatal("removal succeeded though the enforcer failed")
	}
	if !host.veths[ep.HostIf] {
		t.Errorf("a failed removal left the veth down")
	}
	enf.fail = ""
	calls = nil
	if err := m.RemoveEndpoint(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	want := []string{"down c1", "endpoint-removed c1", "veth- c1"}
	if !slices.Equal(calls, want) {
		t.Errorf("removal did %q, want %q", calls, want)
	}
}

// netnsFile is a path that exists (the fake host takes it for a netns).
func netnsFile(t *testing.T) string {
	t.Helper()
	p := t.TempDir() + "/ns"
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
