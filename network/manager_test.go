package network_test

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/bpfnet/bpfnet/api"
	"github.com/bpfnet/bpfnet/network"
	"github.com/bpfnet/bpfnet/network/networktest"
)

// Tests of the manager without privileges: the host and the enforcer are
// in-memory fakes that record what they were asked to do.

func newTestManager(t *testing.T, enf network.Enforcer, host network.Host) *network.Manager {
	t.Helper()
	return startManager(t, enf, host, t.TempDir())
}

func startManager(t *testing.T, enf network.Enforcer, host network.Host, stateDir string) *network.Manager {
	t.Helper()
	m := network.NewManager(slog.New(slog.NewTextHandler(io.Discard, nil)), host, enf, network.NewStore(stateDir))
	if err := m.Start(context.Background(), network.DefaultNetworkConfig{Enabled: true}); err != nil {
		t.Fatal(err)
	}
	return m
}

// The default network gets Docker's first pool, the next network the
// first one after it that no route of the host overlaps.
func TestPoolsAvoidRoutes(t *testing.T) {
	calls := &networktest.Calls{}
	host := networktest.NewHost(calls)
	host.Routed = []netip.Prefix{netip.MustParsePrefix("172.18.0.0/24")}
	m := newTestManager(t, &networktest.Enforcer{Calls: calls}, host)
	def, err := m.Network(network.DefaultNetworkName)
	if err != nil || def.Subnet != netip.MustParsePrefix("172.17.0.0/16") {
		t.Fatalf("default network %v (%v), want 172.17.0.0/16", def.Subnet, err)
	}
	n, err := m.CreateNetwork(context.Background(), api.CreateNetworkRequest{Name: "web"})
	if err != nil || n.Subnet != netip.MustParsePrefix("172.19.0.0/16") {
		t.Errorf("web got %v (%v), want 172.19.0.0/16 (172.18 holds a route)", n.Subnet, err)
	}
}

// At the enforcer's limit, creating another network or endpoint fails
// with a message and leaves nothing: no bridge, no veth, no enforcer call,
// no state.
func TestEnforcerLimits(t *testing.T) {
	calls := &networktest.Calls{}
	host := networktest.NewHost(calls)
	enf := &networktest.Enforcer{Calls: calls, MaxNetworks: 3, MaxEndpoints: 2}
	m := newTestManager(t, enf, host)
	ctx := context.Background()
	for _, name := range []string{"a", "b"} { // with the default network: 3
		if _, err := m.CreateNetwork(ctx, api.CreateNetworkRequest{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	before, bridges := len(calls.List()), host.Bridges()
	_, err := m.CreateNetwork(ctx, api.CreateNetworkRequest{Name: "c"})
	if err == nil || network.KindOf(err) != network.KindConflict || !strings.Contains(err.Error(), "at most 3 networks") {
		t.Errorf("a fourth network: %v, want a conflict naming the limit", err)
	}
	if got := calls.List(); len(got) != before || host.Bridges() != bridges {
		t.Errorf("a refused network did something: %v", got[before:])
	}
	for i := range 2 {
		if _, err := m.CreateEndpoint(ctx, api.CreateEndpointRequest{Network: "a", NetNS: netnsFile(t), IfName: "eth" + string(rune('0'+i))}); err != nil {
			t.Fatal(err)
		}
	}
	before, bridges = len(calls.List()), host.Bridges()
	_, err = m.CreateEndpoint(ctx, api.CreateEndpointRequest{Network: "b", NetNS: netnsFile(t)})
	if err == nil || network.KindOf(err) != network.KindConflict || !strings.Contains(err.Error(), "at most 2 endpoints") {
		t.Errorf("a third endpoint: %v, want a conflict naming the limit", err)
	}
	if got := calls.List(); len(got) != before || host.Bridges() != bridges || host.Veths() != 2 {
		t.Errorf("a refused create did something: %v", got[before:])
	}
	if len(m.View().Networks) != 3 || len(m.View().Endpoints) != 2 {
		t.Errorf("state has %d networks and %d endpoints, want 3 and 2", len(m.View().Networks), len(m.View().Endpoints))
	}
}

// Removing an endpoint takes its veth down before its policy goes, so
// nothing flows unfiltered in between (or after a crash there); a failed
// removal puts it back up.
func TestEndpointDownBeforePolicyGoes(t *testing.T) {
	calls := &networktest.Calls{}
	host := networktest.NewHost(calls)
	enf := &networktest.Enforcer{Calls: calls}
	m := newTestManager(t, enf, host)
	ctx := context.Background()
	ep, err := m.CreateEndpoint(ctx, api.CreateEndpointRequest{Network: network.DefaultNetworkName, NetNS: netnsFile(t), Name: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	calls.Reset()
	enf.Fail = "endpoint-removed"
	if err := m.RemoveEndpoint(ctx, "c1"); err == nil {
		t.Fatal("removal succeeded though the enforcer failed")
	}
	if _, up := host.Veth(ep.HostIf); !up {
		t.Errorf("a failed removal left the veth down")
	}
	enf.Fail = ""
	calls.Reset()
	if err := m.RemoveEndpoint(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	want := []string{"down c1", "endpoint-removed c1", "veth- c1"}
	if got := calls.List(); !slices.Equal(got, want) {
		t.Errorf("removal did %q, want %q", got, want)
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

// A create that fails anywhere leaves nothing: what was made is unmade in
// reverse order (the enforcer is asked to remove what it may have half
// written) and nothing reaches the state.
func TestCreateIsAllOrNothing(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		fail   string
		create func(m *network.Manager, ns string) error
		want   []string
	}{
		{"network-added", func(m *network.Manager, ns string) error {
			_, err := m.CreateNetwork(ctx, api.CreateNetworkRequest{Name: "web"})
			return err
		}, []string{"bridge+ web", "network-added web", "network-removed web", "bridge- web"}},
		{"endpoint-added", func(m *network.Manager, ns string) error {
			_, err := m.CreateEndpoint(ctx, api.CreateEndpointRequest{Network: network.DefaultNetworkName, NetNS: ns, Name: "c1"})
			return err
		}, []string{"veth+ c1", "endpoint-added c1", "endpoint-removed c1", "veth- c1"}},
	} {
		t.Run(tc.fail, func(t *testing.T) {
			calls := &networktest.Calls{}
			host := networktest.NewHost(calls)
			enf := &networktest.Enforcer{Calls: calls}
			dir := t.TempDir()
			m := startManager(t, enf, host, dir)
			bridges := host.Bridges()
			calls.Reset()
			enf.Fail = tc.fail
			if err := tc.create(m, netnsFile(t)); err == nil || !strings.Contains(err.Error(), tc.fail+" failed") {
				t.Fatalf("create: %v, want the enforcer's error", err)
			}
			if got := calls.List(); !slices.Equal(got, tc.want) {
				t.Errorf("calls %q, want %q", got, tc.want)
			}
			if host.Bridges() != bridges || host.Veths() != 0 {
				t.Errorf("left %d bridges (had %d) and %d veths", host.Bridges(), bridges, host.Veths())
			}
			v := startManager(t, &networktest.Enforcer{Calls: &networktest.Calls{}}, networktest.NewHost(&networktest.Calls{}), dir).View()
			if len(v.Networks) != 1 || len(v.Endpoints) != 0 {
				t.Errorf("the state kept %d networks and %d endpoints, want only the default network", len(v.Networks), len(v.Endpoints))
			}
		})
	}
}

// A restart restores the state on a host that lost its interfaces (a
// reboot): bridges and veths are made again, the enforcer converges to
// the whole state, and only then do the veths come up.
func TestRestartRestores(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	m := startManager(t, &networktest.Enforcer{Calls: &networktest.Calls{}}, networktest.NewHost(&networktest.Calls{}), dir)
	if _, err := m.CreateNetwork(ctx, api.CreateNetworkRequest{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	ep, err := m.CreateEndpoint(ctx, api.CreateEndpointRequest{Network: "web", NetNS: netnsFile(t), Name: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	calls := &networktest.Calls{}
	host := networktest.NewHost(calls)
	again := startManager(t, &networktest.Enforcer{Calls: calls}, host, dir)
	got := calls.List()
	at := func(call string) int {
		i := slices.Index(got, call)
		if i < 0 {
			t.Fatalf("restart did not %q: %q", call, got)
		}
		return i
	}
	if at("bridge+ web") > at("reconcile ") || at("veth+ c1") > at("reconcile ") || at("reconcile ") > at("up c1") {
		t.Errorf("restart did %q: want bridges and veths made, then the enforcer reconciled, then the veth up", got)
	}
	if exists, up := host.Veth(ep.HostIf); !exists || !up {
		t.Errorf("veth %s exists=%v up=%v after restart", ep.HostIf, exists, up)
	}
	if restored, err := again.Endpoint("c1"); err != nil || restored.IP != ep.IP {
		t.Errorf("c1 after restart: %+v (%v), want address %s", restored, err, ep.IP)
	}
}

// A dual-stack network: addresses of both families for every endpoint,
// the IPv6 ones as Docker 20.10's IPAM gives them (gateway ::1, then ::2,
// ::3 in order; ipv6-scenario.v6.rules), a requested one checked, a freed
// one given again, and all of it kept over a restart.
func TestDualStackNetwork(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	m := startManager(t, &networktest.Enforcer{Calls: &networktest.Calls{}, IPv6: true}, networktest.NewHost(&networktest.Calls{}), dir)
	n, err := m.CreateNetwork(ctx, api.CreateNetworkRequest{Name: "dual", Subnet: "10.7.0.0/24", EnableIPv6: true, Subnet6: "fd00:7::/64"})
	if err != nil {
		t.Fatal(err)
	}
	if n.Gateway6.String() != "fd00:7::1" {
		t.Errorf("IPv6 gateway %s, want fd00:7::1", n.Gateway6)
	}
	create := func(name, ip6 string) (network.Endpoint, error) {
		return m.CreateEndpoint(ctx, api.CreateEndpointRequest{Network: "dual", NetNS: netnsFile(t), Name: name, IP6: ip6})
	}
	var got []string
	for _, name := range []string{"c1", "c2"} {
		ep, err := create(name, "")
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ep.IP.String()+" "+ep.IP6.String())
	}
	ep, err := create("c3", "fd00:7::99")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, ep.IP.String()+" "+ep.IP6.String())
	want := []string{"10.7.0.2 fd00:7::2", "10.7.0.3 fd00:7::3", "10.7.0.4 fd00:7::99"}
	if !slices.Equal(got, want) {
		t.Errorf("endpoints got %q, want %q", got, want)
	}
	for ip6, msg := range map[string]string{"fd00:7::99": "already in use", "fd00:7::1": "is the gateway", "fd00:8::5": "outside the ip-range", "10.7.0.9": "want an IPv6 address"} {
		if _, err := create("bad", ip6); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("--ip6 %s: %v, want %q", ip6, err, msg)
		}
	}
	if err := m.RemoveEndpoint(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if ep, err := create("c4", ""); err != nil || ep.IP6.String() != "fd00:7::2" {
		t.Errorf("after c1 went: %v %v, want fd00:7::2 again", ep.IP6, err)
	}
	again := startManager(t, &networktest.Enforcer{Calls: &networktest.Calls{}, IPv6: true}, networktest.NewHost(&networktest.Calls{}), dir)
	if ep, err := again.Endpoint("c3"); err != nil || ep.IP6.String() != "fd00:7::99" {
		t.Errorf("c3 after a restart: %v (%v)", ep.IP6, err)
	}
	if n, err := again.Network("dual"); err != nil || n.Subnet6.String() != "fd00:7::/64" || n.Gateway6.String() != "fd00:7::1" {
		t.Errorf("network after a restart: %+v (%v)", n, err)
	}
}

// An enforcer that does not hold IPv6 to the policy gets no dual-stack
// network: the request is refused before the host is touched, and a
// state that has one does not start with it.
func TestIPv6NeedsAnEnforcerThatHoldsIt(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	calls := &networktest.Calls{}
	m := startManager(t, &networktest.Enforcer{Calls: calls}, networktest.NewHost(calls), dir)
	calls.Reset()
	_, err := m.CreateNetwork(ctx, api.CreateNetworkRequest{Name: "dual", EnableIPv6: true})
	if err == nil || !strings.Contains(err.Error(), "cannot enforce") {
		t.Errorf("dual-stack network on an IPv4-only enforcer: %v", err)
	}
	if got := calls.List(); len(got) != 0 {
		t.Errorf("a refused network made calls %q", got)
	}
	// Made by a datapath with IPv6, then started with one without.
	m2 := network.NewManager(slog.New(slog.NewTextHandler(io.Discard, nil)), networktest.NewHost(&networktest.Calls{}),
		&networktest.Enforcer{Calls: &networktest.Calls{}, IPv6: true}, network.NewStore(dir))
	if err := m2.Start(ctx, network.DefaultNetworkConfig{Enabled: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := m2.CreateNetwork(ctx, api.CreateNetworkRequest{Name: "dual", EnableIPv6: true}); err != nil {
		t.Fatal(err)
	}
	m3 := network.NewManager(slog.New(slog.NewTextHandler(io.Discard, nil)), networktest.NewHost(&networktest.Calls{}),
		&networktest.Enforcer{Calls: &networktest.Calls{}}, network.NewStore(dir))
	if err := m3.Start(ctx, network.DefaultNetworkConfig{Enabled: true}); err == nil || !strings.Contains(err.Error(), "cannot enforce") {
		t.Errorf("start of a dual-stack state on an IPv4-only enforcer: %v", err)
	}
}
