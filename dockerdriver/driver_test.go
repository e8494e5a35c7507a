package dockerdriver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/bpfnet/bpfnet/api"
	"github.com/bpfnet/bpfnet/network"
	"github.com/bpfnet/bpfnet/network/networktest"
)

// Tests of the protocol without privileges: the driver over a manager
// whose host and enforcer are the in-memory fakes. The bodies are what
// Docker 20.10 sends (shared/background/ecosystem.md §1, verified live).

type harness struct {
	t     *testing.T
	h     http.Handler
	mgr   *network.Manager
	calls *networktest.Calls
	host  *networktest.Host
}

func newHarness(t *testing.T) *harness {
	calls := &networktest.Calls{}
	host := networktest.NewHost(calls)
	host.Addrs = []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	mgr := network.NewManager(log, host, &networktest.Enforcer{Calls: calls, IPv6: true}, network.NewStore(t.TempDir()))
	if err := mgr.Start(context.Background(), network.DefaultNetworkConfig{}); err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, h: New(log, mgr).Handler(), mgr: mgr, calls: calls, host: host}
}

// call posts body (a JSON text) to method and returns the status and the
// decoded answer.
func (h *harness) call(method, body string) (int, map[string]any) {
	h.t.Helper()
	rec := httptest.NewRecorder()
	h.h.ServeHTTP(rec, httptest.NewRequest("POST", "/"+method, bytes.NewBufferString(body)))
	var out map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		h.t.Fatalf("%s: answer %q is not JSON: %v", method, rec.Body, err)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/vnd.docker.plugins.v1.1+json" {
		h.t.Errorf("%s: content type %q", method, ct)
	}
	return rec.Code, out
}

func (h *harness) ok(method, body string) map[string]any {
	h.t.Helper()
	code, out := h.call(method, body)
	if code != 200 || out["Err"] != nil {
		h.t.Fatalf("%s: %d %v", method, code, out)
	}
	return out
}

const (
	netID = "5f7a2c1e9b3d4a6f8e0c2b4d6f8a0c2e4b6d8f0a2c4e6b8d0f2a4c6e8b0d2f4a"
	epID  = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
	ep2ID = "b1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
)

// What `docker network create -d bpfnet --subnet 10.77.0.0/24
// --aux-address r=10.77.0.9 --internal -o ...enable_icc=false` sends.
var createBody = `{"NetworkID":"` + netID + `","Options":{"com.docker.network.enable_ipv6":false,
	"com.docker.network.generic":{"com.docker.network.bridge.enable_icc":"false"},"com.docker.network.internal":true},
	"IPv4Data":[{"AddressSpace":"LocalDefault","Pool":"10.77.0.0/24","Gateway":"10.77.0.1/24","AuxAddresses":{"r":"10.77.0.9/24"}}],"IPv6Data":[]}`

func TestHandshake(t *testing.T) {
	h := newHarness(t)
	if out := h.ok("Plugin.Activate", ""); !slices.Equal(toStrings(out["Implements"]), []string{"NetworkDriver", "IpamDriver"}) {
		t.Errorf("activate: %v", out)
	}
	if out := h.ok("NetworkDriver.GetCapabilities", "{}"); out["Scope"] != "local" || out["ConnectivityScope"] != "local" {
		t.Errorf("capabilities: %v", out)
	}
}

func toStrings(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

// A network Docker creates is a network of the model with Docker's id,
// its pool, gateway, aux addresses and options.
func TestCreateNetwork(t *testing.T) {
	h := newHarness(t)
	h.ok("NetworkDriver.CreateNetwork", createBody)
	n, err := h.mgr.Network(netID)
	if err != nil {
		t.Fatal(err)
	}
	if n.Name != "docker-5f7a2c1e9b3d" || n.Subnet.String() != "10.77.0.0/24" || n.Gateway.String() != "10.77.0.1" ||
		!n.Internal || n.ICC || n.Bridge != "br-5f7a2c1e9b3d" || n.AuxAddresses["r"].String() != "10.77.0.9" {
		t.Errorf("network %+v", n)
	}
	h.ok("NetworkDriver.DeleteNetwork", `{"NetworkID":"`+netID+`"}`)
	h.ok("NetworkDriver.DeleteNetwork", `{"NetworkID":"`+netID+`"}`) // again: already gone is fine
	if len(h.mgr.View().Networks) != 0 {
		t.Errorf("networks left: %d", len(h.mgr.View().Networks))
	}
}

// What the model refuses, or bpfnet cannot do, fails with a message
// Docker shows, and leaves nothing.
func TestCreateNetworkRefused(t *testing.T) {
	for _, tc := range []struct{ name, body, msg string }{
		{"two IPv6 pools", strings.Replace(createBody, `"IPv6Data":[]`, `"IPv6Data":[{"Pool":"fd00:1::/64"},{"Pool":"fd00:2::/64"}]`, 1), "2 IPv6 pools"},
		{"an IPv4 pool as the IPv6 one", strings.Replace(createBody, `"IPv6Data":[]`, `"IPv6Data":[{"Pool":"10.78.0.0/24"}]`, 1), "want an IPv6 prefix"},
		{"unknown option", strings.Replace(createBody, `enable_icc":"false"`, `enable_icc":"false","com.example.foo":"1"`, 1), `unknown network option "com.example.foo"`},
		{"bad option value", strings.Replace(createBody, `enable_icc":"false"`, `enable_icc":"perhaps"`, 1), "enable_icc"},
		{"two pools", strings.Replace(createBody, `"IPv4Data":[`, `"IPv4Data":[{"Pool":"10.78.0.0/24","Gateway":"10.78.0.1/24"},`, 1), "2 IPv4 pools"},
		{"aux outside", strings.Replace(createBody, `10.77.0.9/24`, `10.99.0.9/24`, 1), "not inside subnet"},
		{"bad id", strings.Replace(createBody, netID, "zz", 1), "invalid network id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			code, out := h.call("NetworkDriver.CreateNetwork", tc.body)
			if code != 400 || !strings.Contains(out["Err"].(string), tc.msg) {
				t.Errorf("%d %v, want 400 with %q", code, out, tc.msg)
			}
			if len(h.mgr.View().Networks) != 0 || h.host.Bridges() != 0 {
				t.Errorf("a refused network left %d networks, %d bridges", len(h.mgr.View().Networks), h.host.Bridges())
			}
		})
	}
	// A pool that overlaps a network of bpfnet's.
	h := newHarness(t)
	h.ok("NetworkDriver.CreateNetwork", createBody)
	other := strings.Replace(createBody, netID, strings.Repeat("c", 64), 1)
	if code, out := h.call("NetworkDriver.CreateNetwork", other); code != 400 || !strings.Contains(out["Err"].(string), "overlaps") {
		t.Errorf("an overlapping pool: %d %v", code, out)
	}
}

// A container's life as Docker drives it: CreateEndpoint (with the
// address Docker's IPAM gave), Join, ProgramExternalConnectivity (-p),
// EndpointOperInfo, then RevokeExternalConnectivity, Leave and
// DeleteEndpoint.
func TestContainerLife(t *testing.T) {
	h := newHarness(t)
	h.ok("NetworkDriver.CreateNetwork", strings.Replace(createBody, `"com.docker.network.internal":true`, `"com.docker.network.internal":false`, 1))
	out := h.ok("NetworkDriver.CreateEndpoint", `{"NetworkID":"`+netID+`","EndpointID":"`+epID+`","Interface":{"Address":"10.77.0.2/24","AddressIPv6":"","MacAddress":""},"Options":{}}`)
	// Docker gave the address: only the MAC comes back, Docker's form.
	if iface, _ := out["Interface"].(map[string]any); iface == nil || iface["MacAddress"] != "02:42:0a:4d:00:02" || iface["Address"] != nil {
		t.Errorf("create endpoint answered %v", out)
	}
	ep, err := h.mgr.Endpoint(epID)
	if err != nil || ep.IP.String() != "10.77.0.2" || !ep.HandedOff() || ep.NetNS != "" {
		t.Fatalf("endpoint %+v (%v)", ep, err)
	}
	if exists, up := h.host.Veth(ep.HostIf); !exists || !up {
		t.Errorf("veth %s exists=%v up=%v after create (the datapath holds it)", ep.HostIf, exists, up)
	}
	out = h.ok("NetworkDriver.Join", `{"NetworkID":"`+netID+`","EndpointID":"`+epID+`","SandboxKey":"/var/run/docker/netns/x","Options":{}}`)
	if name := out["InterfaceName"].(map[string]any); name["SrcName"] != ep.IfName || name["DstPrefix"] != "eth" || out["Gateway"] != "10.77.0.1" {
		t.Errorf("join answered %v", out)
	}
	// docker run -p 8080:80 -p 127.0.0.1:5353:53/udp -p 9000-9010:90
	h.ok("NetworkDriver.ProgramExternalConnectivity", `{"NetworkID":"`+netID+`","EndpointID":"`+epID+`","Options":{"com.docker.network.portmap":[
		{"Proto":6,"IP":"","Port":80,"HostIP":"","HostPort":8080,"HostPortEnd":8080},
		{"Proto":17,"IP":"","Port":53,"HostIP":"127.0.0.1","HostPort":5353,"HostPortEnd":5353},
		{"Proto":6,"IP":"","Port":90,"HostIP":"","HostPort":9000,"HostPortEnd":9010}]}}`)
	ep, _ = h.mgr.Endpoint(epID)
	var got []string
	for _, p := range ep.Ports {
		got = append(got, p.String())
	}
	if want := []string{"0.0.0.0:8080->80/tcp", "127.0.0.1:5353->53/udp", "0.0.0.0:9000->90/tcp"}; !slices.Equal(got, want) {
		t.Errorf("published %q, want %q", got, want)
	}
	// A second container asking for the range gets its next port; for the
	// same fixed port, a conflict.
	h.ok("NetworkDriver.CreateEndpoint", `{"NetworkID":"`+netID+`","EndpointID":"`+ep2ID+`","Interface":{"Address":"10.77.0.3/24"},"Options":{}}`)
	h.ok("NetworkDriver.ProgramExternalConnectivity", `{"NetworkID":"`+netID+`","EndpointID":"`+ep2ID+`","Options":{"com.docker.network.portmap":[{"Proto":6,"Port":90,"HostPort":9000,"HostPortEnd":9010}]}}`)
	if ep2, _ := h.mgr.Endpoint(ep2ID); len(ep2.Ports) != 1 || ep2.Ports[0].HostPort != 9001 {
		t.Errorf("second container's range port: %v", ep2.Ports)
	}
	if code, out := h.call("NetworkDriver.ProgramExternalConnectivity", `{"NetworkID":"`+netID+`","EndpointID":"`+ep2ID+`","Options":{"com.docker.network.portmap":[{"Proto":6,"Port":80,"HostPort":8080,"HostPortEnd":8080}]}}`); code != 400 || !strings.Contains(out["Err"].(string), "already published") {
		t.Errorf("the same host port twice: %d %v", code, out)
	}
	out = h.ok("NetworkDriver.EndpointOperInfo", `{"NetworkID":"`+netID+`","EndpointID":"`+epID+`"}`)
	if v := out["Value"].(map[string]any); v["com.docker.network.endpoint.macaddress"] != "02:42:0a:4d:00:02" || len(v["com.docker.network.portmap"].([]any)) != 3 {
		t.Errorf("oper info %v", out)
	}
	h.calls.Reset()
	h.ok("NetworkDriver.RevokeExternalConnectivity", `{"NetworkID":"`+netID+`","EndpointID":"`+epID+`"}`)
	h.ok("NetworkDriver.Leave", `{"NetworkID":"`+netID+`","EndpointID":"`+epID+`"}`)
	h.ok("NetworkDriver.DeleteEndpoint", `{"NetworkID":"`+netID+`","EndpointID":"`+epID+`"}`)
	h.ok("NetworkDriver.DeleteEndpoint", `{"NetworkID":"`+netID+`","EndpointID":"`+epID+`"}`) // released already: fine
	name := ep.Name
	if want := []string{"ports " + name, "down " + name, "endpoint-removed " + name, "veth- " + name}; !slices.Equal(h.calls.List(), want) {
		t.Errorf("stop did %q, want %q", h.calls.List(), want)
	}
}

// A MAC Docker gives (--mac-address) is the interface's, and the answer
// is empty, as the protocol wants when Docker supplied the values.
func TestGivenMAC(t *testing.T) {
	h := newHarness(t)
	h.ok("NetworkDriver.CreateNetwork", createBody)
	out := h.ok("NetworkDriver.CreateEndpoint", `{"NetworkID":"`+netID+`","EndpointID":"`+epID+`","Interface":{"Address":"10.77.0.5/24","MacAddress":"02:00:00:00:00:05"},"Options":{}}`)
	if out["Interface"] != nil {
		t.Errorf("answered %v, want no interface", out)
	}
	if ep, _ := h.mgr.Endpoint(epID); ep.MAC != "02:00:00:00:00:05" {
		t.Errorf("MAC %s", ep.MAC)
	}
	// The aux address is never a container's.
	if code, out := h.call("NetworkDriver.CreateEndpoint", `{"NetworkID":"`+netID+`","EndpointID":"`+ep2ID+`","Interface":{"Address":"10.77.0.9/24"},"Options":{}}`); code != 400 || !strings.Contains(out["Err"].(string), "reserved") {
		t.Errorf("the aux address: %d %v", code, out)
	}
}

// bpfnet's IPAM for Docker (--ipam-driver): pools avoid bpfnet's networks
// and each other, the gateway is the range's first address, containers
// get the next free ones (never one handed out and not yet released, nor
// one an endpoint of the network has), and a released one comes back.
func TestIPAM(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	if _, err := h.mgr.CreateNetwork(ctx, api.CreateNetworkRequest{Name: "cli", Subnet: "172.17.0.0/16"}); err != nil {
		t.Fatal(err)
	}
	out := h.ok("IpamDriver.RequestPool", `{"AddressSpace":"bpfnet-local","Pool":"","SubPool":"","Options":{},"V6":false}`)
	if out["Pool"] != "172.18.0.0/16" || out["PoolID"] != "bpfnet/172.18.0.0/16" {
		t.Errorf("first pool %v, want 172.18.0.0/16 (172.17 is the CLI's network's)", out)
	}
	if out := h.ok("IpamDriver.RequestPool", `{"Pool":""}`); out["Pool"] != "172.19.0.0/16" {
		t.Errorf("second pool %v, want 172.19.0.0/16 (172.18 is handed out)", out)
	}
	if code, out := h.call("IpamDriver.RequestPool", `{"Pool":"172.17.5.0/24"}`); code != 400 || !strings.Contains(out["Err"].(string), "overlaps") {
		t.Errorf("a pool overlapping a network: %d %v", code, out)
	}
	if code, out := h.call("IpamDriver.RequestPool", `{"Pool":"fd00:1::/64","V6":false}`); code != 400 || !strings.Contains(out["Err"].(string), "want an IPv4 prefix") {
		t.Errorf("an IPv6 pool as an IPv4 one: %d %v", code, out)
	}
	addr := func(body string) string {
		t.Helper()
		return h.ok("IpamDriver.RequestAddress", body)["Address"].(string)
	}
	if gw := addr(`{"PoolID":"bpfnet/172.18.0.0/16","Address":"","Options":{"RequestAddressType":"com.docker.network.gateway"}}`); gw != "172.18.0.1/16" {
		t.Errorf("gateway %s", gw)
	}
	id := strings.Repeat("d", 64)
	h.ok("NetworkDriver.CreateNetwork", `{"NetworkID":"`+id+`","Options":{},"IPv4Data":[{"Pool":"172.18.0.0/16","Gateway":"172.18.0.1/16"}]}`)
	if _, err := h.mgr.CreateEndpoint(ctx, api.CreateEndpointRequest{Network: id, NetNS: "/dev/null", IP: "172.18.0.2"}); err != nil {
		t.Fatal(err)
	}
	a1 := addr(`{"PoolID":"bpfnet/172.18.0.0/16","Address":"","Options":{}}`)
	a2 := addr(`{"PoolID":"bpfnet/172.18.0.0/16","Address":"","Options":{}}`)
	if a1 != "172.18.0.3/16" || a2 != "172.18.0.4/16" {
		t.Errorf("addresses %s %s, want .3 and .4 (.1 gateway, .2 an endpoint's)", a1, a2)
	}
	if code, out := h.call("IpamDriver.RequestAddress", `{"PoolID":"bpfnet/172.18.0.0/16","Address":"172.18.0.2","Options":{}}`); code != 400 || !strings.Contains(out["Err"].(string), "in use") {
		t.Errorf("an endpoint's address asked for: %d %v", code, out)
	}
	h.ok("IpamDriver.ReleaseAddress", `{"PoolID":"bpfnet/172.18.0.0/16","Address":"172.18.0.3"}`)
	if a := addr(`{"PoolID":"bpfnet/172.18.0.0/16","Address":"","Options":{}}`); a != "172.18.0.3/16" {
		t.Errorf("after release: %s, want .3 again", a)
	}
	h.ok("IpamDriver.ReleasePool", `{"PoolID":"bpfnet/172.19.0.0/16"}`)
	if out := h.ok("IpamDriver.RequestPool", `{"Pool":""}`); out["Pool"] != "172.19.0.0/16" {
		t.Errorf("a released pool: %v, want 172.19.0.0/16 again", out)
	}
}

// docker network create -d bpfnet --ipv6 --subnet 10.77.0.0/24 --subnet
// fd00:77::/64, then a container: the network is dual-stack with Docker's
// IPv6 pool and gateway; an endpoint takes the IPv6 address Docker's IPAM
// gave, or gets bpfnet's first free one (::2) when none was given, and
// Join names the IPv6 gateway too.
func TestDualStack(t *testing.T) {
	h := newHarness(t)
	body := strings.Replace(createBody, `"com.docker.network.enable_ipv6":false`, `"com.docker.network.enable_ipv6":true`, 1)
	body = strings.Replace(body, `"com.docker.network.internal":true`, `"com.docker.network.internal":false`, 1)
	body = strings.Replace(body, `"IPv6Data":[]`, `"IPv6Data":[{"AddressSpace":"LocalDefault","Pool":"fd00:77::/64","Gateway":"fd00:77::1/64"}]`, 1)
	h.ok("NetworkDriver.CreateNetwork", body)
	n, err := h.mgr.Network(netID)
	if err != nil || n.Subnet6.String() != "fd00:77::/64" || n.Gateway6.String() != "fd00:77::1" {
		t.Fatalf("network %+v (%v)", n, err)
	}
	out := h.ok("NetworkDriver.CreateEndpoint", `{"NetworkID":"`+netID+`","EndpointID":"`+epID+`","Interface":{"Address":"10.77.0.2/24","AddressIPv6":"fd00:77::5/64"},"Options":{}}`)
	if iface, _ := out["Interface"].(map[string]any); iface == nil || iface["AddressIPv6"] != nil {
		t.Errorf("create endpoint with Docker's IPv6 address answered %v", out)
	}
	if ep, err := h.mgr.Endpoint(epID); err != nil || ep.IP6.String() != "fd00:77::5" {
		t.Errorf("endpoint %+v (%v)", ep, err)
	}
	out = h.ok("NetworkDriver.CreateEndpoint", `{"NetworkID":"`+netID+`","EndpointID":"`+ep2ID+`","Interface":{"Address":"10.77.0.3/24"},"Options":{}}`)
	if iface, _ := out["Interface"].(map[string]any); iface == nil || iface["AddressIPv6"] != "fd00:77::2/64" {
		t.Errorf("create endpoint without an IPv6 address answered %v, want fd00:77::2/64", out)
	}
	out = h.ok("NetworkDriver.Join", `{"NetworkID":"`+netID+`","EndpointID":"`+epID+`","SandboxKey":"/var/run/docker/netns/x","Options":{}}`)
	if out["Gateway"] != "10.77.0.1" || out["GatewayIPv6"] != "fd00:77::1" {
		t.Errorf("join answered %v", out)
	}
}

// bpfnet's IPAM gives IPv6 pools too: a unique local /64 when none is
// asked for, the one asked for unless a network has it, and its first
// address as the gateway.
func TestIPAMIPv6(t *testing.T) {
	h := newHarness(t)
	out := h.ok("IpamDriver.RequestPool", `{"Pool":"","V6":true}`)
	pool, err := netip.ParsePrefix(out["Pool"].(string))
	if err != nil || pool.Bits() != 64 || pool.Addr().As16()[0] != 0xfd || out["PoolID"] != "bpfnet/"+pool.String() {
		t.Errorf("automatic IPv6 pool %v, want a unique local /64", out)
	}
	if out := h.ok("IpamDriver.RequestPool", `{"Pool":"fd00:9::/64","V6":true}`); out["Pool"] != "fd00:9::/64" {
		t.Errorf("IPv6 pool asked for: %v", out)
	}
	if code, out := h.call("IpamDriver.RequestPool", `{"Pool":"fd00:9::/80","V6":true}`); code != 400 || !strings.Contains(out["Err"].(string), "overlaps") {
		t.Errorf("a pool overlapping one handed out: %d %v", code, out)
	}
	if code, out := h.call("IpamDriver.RequestPool", `{"Pool":"10.1.0.0/24","V6":true}`); code != 400 || !strings.Contains(out["Err"].(string), "want an IPv6 prefix") {
		t.Errorf("an IPv4 pool as an IPv6 one: %d %v", code, out)
	}
	gw := h.ok("IpamDriver.RequestAddress", `{"PoolID":"bpfnet/fd00:9::/64","Address":"","Options":{"RequestAddressType":"com.docker.network.gateway"}}`)
	a := h.ok("IpamDriver.RequestAddress", `{"PoolID":"bpfnet/fd00:9::/64","Address":"","Options":{}}`)
	if gw["Address"] != "fd00:9::1/64" || a["Address"] != "fd00:9::2/64" {
		t.Errorf("gateway %v, first address %v; want fd00:9::1/64, fd00:9::2/64", gw, a)
	}
}

// Docker's port map on a dual-stack network: a wildcard binding comes
// twice (0.0.0.0 and ::), which is one bpfnet mapping of both families;
// :: alone is IPv6's wildcard, and an IPv6 address is published on.
func TestPortMapIPv6(t *testing.T) {
	reqs, err := portRequests([]any{
		map[string]any{"Proto": 6, "Port": 80, "HostIP": "0.0.0.0", "HostPort": 8080, "HostPortEnd": 8080},
		map[string]any{"Proto": 6, "Port": 80, "HostIP": "::", "HostPort": 8080, "HostPortEnd": 8080},
		map[string]any{"Proto": 17, "Port": 53, "HostIP": "::", "HostPort": 5353, "HostPortEnd": 5353},
		map[string]any{"Proto": 6, "Port": 443, "HostIP": "2001:db8::1", "HostPort": 8443, "HostPortEnd": 8443},
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range reqs {
		got = append(got, fmt.Sprintf("%s %v %d->%d", r.Proto, r.HostIP, r.HostPort, r.Port))
	}
	want := []string{"tcp 0.0.0.0 8080->80", "udp :: 5353->53", "tcp 2001:db8::1 8443->443"}
	if !slices.Equal(got, want) {
		t.Errorf("port requests %q, want %q", got, want)
	}
}
