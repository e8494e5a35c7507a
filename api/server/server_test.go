package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/bpfnet/bpfnet/api"
	"github.com/bpfnet/bpfnet/api/server"
	"github.com/bpfnet/bpfnet/network"
	"github.com/bpfnet/bpfnet/network/networktest"
)

// Tests of the API server without privileges: a manager over the fake
// host, the fake enforcer, the server on a unix socket in a temporary
// directory, and the real client.

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// serve starts a manager and a server over enf and returns a client.
func serve(t *testing.T, enf network.Enforcer) *api.Client {
	t.Helper()
	mgr := network.NewManager(discard, networktest.NewHost(&networktest.Calls{}), enf, network.NewStore(t.TempDir()))
	ctx, cancel := context.WithCancel(context.Background())
	if err := mgr.Start(ctx, network.DefaultNetworkConfig{Enabled: true}); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := server.Listen(sock, -1)
	if err != nil {
		t.Fatal(err)
	}
	srv := server.New(discard, mgr, enf, server.Info{Version: "v-test", StateDir: "/state", Uplinks: func() []string { return []string{"up0"} },
		Render: func(v network.View, ipv6 bool) string {
			return fmt.Sprintf("rules for %s (IPv6 %v)\n", v.Networks[0].Name, ipv6)
		}})
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	cl, err := api.NewClient("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

func netnsFile(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "ns")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func observable() *networktest.Observable {
	return &networktest.Observable{Enforcer: &networktest.Enforcer{Calls: &networktest.Calls{}}, Attach: "tcx",
		Events: make(chan network.DropEvent)}
}

// The socket is the daemon's only door: owner and group may write, others
// may not.
func TestSocketMode(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := server.Listen(sock, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	st, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o660 {
		t.Errorf("socket mode %v, want 0660", st.Mode().Perm())
	}
	if _, err := server.Listen(sock, -1); err == nil || !strings.Contains(err.Error(), "another bpfnetd") {
		t.Errorf("a second listener: %v, want refused", err)
	}
}

// Networks and endpoints through the client: what is created is listed
// and inspected the way Docker shows it; errors carry the status their
// kind maps to, with the manager's message.
func TestNetworksAndEndpoints(t *testing.T) {
	ctx := context.Background()
	enf := observable()
	enf.Counters = network.Counts{Endpoints: map[string]api.EndpointCounters{}}
	cl := serve(t, enf)
	n, err := cl.CreateNetwork(ctx, api.CreateNetworkRequest{Name: "web", Subnet: "198.18.1.0/24", Options: map[string]string{"com.docker.network.bridge.enable_icc": "false"}})
	if err != nil {
		t.Fatal(err)
	}
	if n.Name != "web" || n.Driver != "bridge" || len(n.IPAM.Config) != 1 || n.IPAM.Config[0].Subnet != "198.18.1.0/24" || n.IPAM.Config[0].Gateway != "198.18.1.1" {
		t.Errorf("created %+v", n)
	}
	if _, err := cl.CreateNetwork(ctx, api.CreateNetworkRequest{Name: "web"}); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("a second web: %v", err)
	}
	if _, err := cl.CreateNetwork(ctx, api.CreateNetworkRequest{Name: "bad name!"}); err == nil || !strings.Contains(err.Error(), "invalid network name") {
		t.Errorf("a bad name: %v", err)
	}
	ep, err := cl.CreateEndpoint(ctx, api.CreateEndpointRequest{Network: "web", NetNS: netnsFile(t), Name: "c1", Ports: []string{"8080:80"}})
	if err != nil {
		t.Fatal(err)
	}
	if ep.Network != "web" || ep.IP != netip.MustParseAddr("198.18.1.2") || ep.Gateway != "198.18.1.1" || len(ep.Ports) != 1 || ep.Ports[0].String() != "0.0.0.0:8080->80/tcp" {
		t.Errorf("created endpoint %+v", ep)
	}
	enf.Counters.Endpoints[ep.ID] = api.EndpointCounters{FromContainer: api.Counts{Packets: 3, Bytes: 300}}
	eps, err := cl.Endpoints(ctx, "web")
	if err != nil || len(eps) != 1 || eps[0].Counters == nil || eps[0].Counters.FromContainer.Packets != 3 {
		t.Errorf("endpoints of web: %+v (%v), want c1 with 3 packets sent", eps, err)
	}
	// A runtime's lookup by container: that container's only, without
	// counters.
	c9, err := cl.CreateEndpoint(ctx, api.CreateEndpointRequest{Network: "web", NetNS: netnsFile(t), Name: "c9", ContainerID: "ctr-9"})
	if err != nil {
		t.Fatal(err)
	}
	enf.Counters.Endpoints[c9.ID] = api.EndpointCounters{FromContainer: api.Counts{Packets: 1}}
	if eps, err := cl.ContainerEndpoints(ctx, "web", "ctr-9"); err != nil || len(eps) != 1 || eps[0].Name != "c9" || eps[0].Counters != nil {
		t.Errorf("endpoints of container ctr-9: %+v (%v), want c9 alone, without counters", eps, err)
	}
	if err := cl.RemoveEndpoint(ctx, "c9"); err != nil {
		t.Fatal(err)
	}
	insp, err := cl.Network(ctx, "web")
	if err != nil || len(insp.Containers) != 1 {
		t.Errorf("inspect web: %+v (%v), want c1 among its containers", insp, err)
	}
	if err := cl.RemoveNetwork(ctx, "web"); err == nil || !strings.Contains(err.Error(), "remove them first") {
		t.Errorf("removing a network in use: %v", err)
	}
	if _, err := cl.Endpoint(ctx, "nope"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("an unknown endpoint: %v", err)
	}
	if err := errors.Join(cl.RemoveEndpoint(ctx, "c1"), cl.RemoveNetwork(ctx, "web")); err != nil {
		t.Fatal(err)
	}
	if nets, err := cl.Networks(ctx); err != nil || len(nets) != 1 || nets[0].Name != network.DefaultNetworkName {
		t.Errorf("networks after removal: %+v (%v), want only the default", nets, err)
	}
}

// Status names the enforcer and has what its Describe adds; NAT is
// listed by an enforcer that keeps a table and refused, with the reason,
// by one that does not.
func TestStatusAndNAT(t *testing.T) {
	ctx := context.Background()
	enf := observable()
	enf.NAT = []api.NATEntry{{Kind: "masquerade", Proto: "tcp", Container: "198.18.1.2:40000", Translated: "192.0.2.1:40000", Remote: "192.0.2.9:80"}}
	cl := serve(t, enf)
	st, err := cl.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Datapath != "fake" || st.Attach != "tcx" || st.Version != "v-test" || st.Networks != 1 || st.StateDir != "/state" {
		t.Errorf("status %+v", st)
	}
	entries, err := cl.NAT(ctx)
	if err != nil || len(entries) != 1 || entries[0].Translated != "192.0.2.1:40000" {
		t.Errorf("nat: %+v (%v)", entries, err)
	}
	if rules, err := cl.CompatRender(ctx, false); err != nil || rules != "rules for bridge (IPv6 false)\n" {
		t.Errorf("compat render: %q (%v)", rules, err)
	}
	if rules, err := cl.CompatRender(ctx, true); err != nil || rules != "rules for bridge (IPv6 true)\n" {
		t.Errorf("compat render --ipv6: %q (%v)", rules, err)
	}

	plain := serve(t, &networktest.Enforcer{Calls: &networktest.Calls{}})
	if _, err := plain.NAT(ctx); err == nil || !strings.Contains(err.Error(), "keeps no translation table") {
		t.Errorf("nat of an enforcer without a table: %v", err)
	}
	if err := plain.Monitor(ctx, "", "", func(api.MonitorEvent) error { return nil }); err == nil || !strings.Contains(err.Error(), "sends no drop events") {
		t.Errorf("monitor of an enforcer without events: %v", err)
	}
}

// The monitor names the endpoint, network and interface of each drop and
// keeps only those of the endpoint asked for.
func TestMonitor(t *testing.T) {
	ctx := context.Background()
	enf := observable()
	cl := serve(t, enf)
	if _, err := cl.CreateNetwork(ctx, api.CreateNetworkRequest{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	var eps []api.Endpoint
	for _, name := range []string{"c1", "c2"} {
		ep, err := cl.CreateEndpoint(ctx, api.CreateEndpointRequest{Network: "web", NetNS: netnsFile(t), Name: name})
		if err != nil {
			t.Fatal(err)
		}
		eps = append(eps, ep)
	}
	mctx, stop := context.WithTimeout(ctx, 10*time.Second)
	defer stop()
	got := make(chan api.MonitorEvent, 16)
	go cl.Monitor(mctx, "", "c2", func(ev api.MonitorEvent) error { got <- ev; return nil })
	// The events are sent until one arrives (the fan-out drops them while
	// nobody is subscribed); c1's must never show.
	src := netip.MustParseAddrPort("198.18.0.9:1234")
	for {
		for _, ep := range eps {
			select {
			case enf.Events <- network.DropEvent{Time: time.Now(), EndpointID: ep.ID, Direction: "to_container", Reason: "icc", Proto: "udp", Src: src, Dst: netip.AddrPortFrom(ep.IP, 53)}:
			case <-mctx.Done():
				t.Fatal("no event within 10 s")
			}
		}
		select {
		case ev := <-got:
			if ev.Endpoint != "c2" || ev.Network != "web" || ev.Interface != eps[1].HostIf || ev.Reason != "icc" ||
				ev.Src != "198.18.0.9:1234" || ev.Dst != eps[1].IP.String()+":53" {
				t.Errorf("event %+v, want c2's drop", ev)
			}
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// A dual-stack network shows as Docker's inspect shows one: EnableIPv6, a
// second IPAM config with the IPv6 subnet and gateway (and the aux
// addresses of each family in its own), and every container's
// IPv6Address with the prefix length.
func TestInspectDualStack(t *testing.T) {
	n := network.Network{ID: "n1", Name: "dual", Subnet: netip.MustParsePrefix("10.7.0.0/24"), IPRange: netip.MustParsePrefix("10.7.0.0/24"),
		Gateway: netip.MustParseAddr("10.7.0.1"), Subnet6: netip.MustParsePrefix("fd00:7::/64"), IPRange6: netip.MustParsePrefix("fd00:7::/80"),
		IPRange6Set: true, Gateway6: netip.MustParseAddr("fd00:7::1"),
		AuxAddresses: map[string]netip.Addr{"a": netip.MustParseAddr("10.7.0.9"), "b": netip.MustParseAddr("fd00:7::9")}}
	ep := &network.Endpoint{ID: "e1", Name: "c1", NetworkID: "n1", IP: netip.MustParseAddr("10.7.0.2"), IP6: netip.MustParseAddr("fd00:7::2")}
	got := server.Inspect(n, []*network.Endpoint{ep})
	want := []api.IPAMConfig{
		{Subnet: "10.7.0.0/24", Gateway: "10.7.0.1", AuxiliaryAddresses: map[string]string{"a": "10.7.0.9"}},
		{Subnet: "fd00:7::/64", IPRange: "fd00:7::/80", Gateway: "fd00:7::1", AuxiliaryAddresses: map[string]string{"b": "fd00:7::9"}},
	}
	if !got.EnableIPv6 || !reflect.DeepEqual(got.IPAM.Config, want) {
		t.Errorf("EnableIPv6 %v, IPAM %+v; want true, %+v", got.EnableIPv6, got.IPAM.Config, want)
	}
	if c := got.Containers["e1"]; c.IPv4Address != "10.7.0.2/24" || c.IPv6Address != "fd00:7::2/64" {
		t.Errorf("container %+v", c)
	}
	e := server.EndpointOf(*ep, n)
	if e.IP6 != ep.IP6 || e.Subnet6 != "fd00:7::/64" || e.Gateway6 != "fd00:7::1" {
		t.Errorf("endpoint %+v", e)
	}
}
