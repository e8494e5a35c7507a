package cni

import (
	"encoding/json"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/bpfnet/bpfnet/api"
)

// The conf's spelling (docs/cni.md), a typo, and what is not a conf.
func TestParseConf(t *testing.T) {
	conf, err := parseConf([]byte(`{"cniVersion":"1.0.0","name":"web","type":"bpfnet","subnet":"10.231.1.0/24",
		"ipRange":"10.231.1.128/25","gateway":"10.231.1.1","internal":false,
		"options":{"com.docker.network.bridge.enable_icc":"false"},"socket":"/tmp/s.sock",
		"capabilities":{"portMappings":true},"runtimeConfig":{"portMappings":[{"HostPort":8080,"ContainerPort":80,"Protocol":"TCP"},
		{"hostPort":5353,"containerPort":53,"protocol":"udp","hostIP":"127.0.0.1"}],"aliases":["x"]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if conf.Subnet != "10.231.1.0/24" || conf.IPRange != "10.231.1.128/25" || conf.Internal == nil || *conf.Internal || conf.Socket != "/tmp/s.sock" {
		t.Errorf("conf %+v", conf)
	}
	// containerd 1.6 capitalises portMappings' keys; the specs are -p's.
	if got, want := conf.portSpecs(), []string{"8080:80/tcp", "127.0.0.1:5353:53/udp"}; !slices.Equal(got, want) {
		t.Errorf("ports %q, want %q", got, want)
	}
	for _, tc := range []struct{ conf, msg string }{
		{`{"name":"web","type":"bpfnet","subnett":"10.1.0.0/24"}`, `unknown field "subnett"`},
		{`{"name":"web","type":"bpfnet"`, "unexpected EOF"},
		{`{"type":"bpfnet"}`, "no name"},
		{`{"name":"web","type":"bpfnet","runtimeConfig":{"portMappings":[{"hostPort":0,"containerPort":80}]}}`, "ports are 1-65535"},
	} {
		_, err := parseConf([]byte(tc.conf))
		var te *types.Error
		if !errors.As(err, &te) || !strings.Contains(te.Msg+te.Details, tc.msg) {
			t.Errorf("%s: %v, want a CNI error with %q", tc.conf, err, tc.msg)
		}
	}
}

// An existing network is compared with what the conf says, and only that;
// an option the network was made without has Docker's default.
func TestDifferences(t *testing.T) {
	n := api.NetworkInspect{Name: "web", IPAM: api.IPAM{Config: []api.IPAMConfig{{Subnet: "10.231.1.0/24", Gateway: "10.231.1.1"}}},
		Options: map[string]string{"com.docker.network.bridge.enable_icc": "false"}}
	yes, no := true, false
	for _, tc := range []struct {
		conf NetConf
		want []string
	}{
		{NetConf{}, nil},
		{NetConf{Subnet: "10.231.1.0/24", Gateway: "10.231.1.1", Internal: &no}, nil},
		{NetConf{Options: map[string]string{"com.docker.network.bridge.enable_icc": "false", "com.docker.network.bridge.enable_ip_masquerade": "true"}}, nil},
		{NetConf{Subnet: "10.9.0.0/24"}, []string{"subnet 10.9.0.0/24 (the network has 10.231.1.0/24)"}},
		{NetConf{Internal: &yes}, []string{"internal true (the network has false)"}},
		{NetConf{IPv6: true, Subnet6: "fd00:1::/64"}, []string{"ipv6 true (the network has false)", "subnet6 fd00:1::/64 (the network has none)"}},
		{NetConf{Options: map[string]string{"com.docker.network.bridge.enable_icc": "true"}}, []string{`option com.docker.network.bridge.enable_icc=true (the network has "false")`}},
	} {
		if got := tc.conf.differences(n); !slices.Equal(got, tc.want) {
			t.Errorf("%+v: %q, want %q", tc.conf, got, tc.want)
		}
	}
}

// Names: Kubernetes' pod, else the container id; a second interface adds
// its name; Podman's IP and MAC arrive in CNI_ARGS.
func TestArgs(t *testing.T) {
	a, err := parseArgs("IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart-7f9;K8S_POD_UID=abc;IP=10.231.1.9;MAC=02:00:00:00:00:09")
	if err != nil {
		t.Fatal(err)
	}
	if got := endpointName(a, "0123456789abcdef", "eth0"); got != "shop.cart-7f9" {
		t.Errorf("name %q", got)
	}
	if got := endpointName(envArgs{}, "0123456789abcdef", "net1"); got != "cni-0123456789ab.net1" {
		t.Errorf("name %q", got)
	}
	conf := &NetConf{}
	if ip, ip6, err := conf.requestedIPs(a); err != nil || ip != "10.231.1.9" || ip6 != "" || conf.requestedMAC(a) != "02:00:00:00:00:09" {
		t.Errorf("ip %q %q (%v), mac %q", ip, ip6, err, conf.requestedMAC(a))
	}
	if _, err := parseArgs("FOO=1"); err == nil {
		t.Errorf("an unknown CNI_ARGS key without IgnoreUnknown was accepted")
	}
	conf.RuntimeConfig.IPs = []string{"10.231.1.7/24"}
	if ip, _, err := conf.requestedIPs(a); err != nil || ip != "10.231.1.7" {
		t.Errorf("ips capability: %q (%v)", ip, err)
	}
	// One address per family (a dual-stack network's endpoint), no more.
	conf.RuntimeConfig.IPs = []string{"fd00:231::7/64", "10.231.1.7/24"}
	if ip, ip6, err := conf.requestedIPs(a); err != nil || ip != "10.231.1.7" || ip6 != "fd00:231::7" {
		t.Errorf("ips capability, both families: %q %q (%v)", ip, ip6, err)
	}
	for _, ips := range [][]string{{"10.231.1.7", "10.231.1.8"}, {"fd00::1", "fd00::2"}, {"banana"}} {
		conf.RuntimeConfig.IPs = ips
		if _, _, err := conf.requestedIPs(a); err == nil {
			t.Errorf("ips %q accepted", ips)
		}
	}
}

// The result is in the version the conf asks for, down to 0.4.0
// (Debian's containerd 1.6 and Podman 4.3 reject 1.1.0).
func TestResultVersions(t *testing.T) {
	ep := api.Endpoint{HostIf: "veth1234567", IfName: "eth0", MAC: "02:42:0a:e7:01:02", Subnet: "10.231.1.0/24", Gateway: "10.231.1.1", DefaultRoute: true}
	ep.IP = netip.MustParseAddr("10.231.1.2")
	for _, v := range []string{"0.4.0", "1.0.0", "1.1.0"} {
		conf := &NetConf{}
		conf.CNIVersion = v
		conf.DNS = types.DNS{Nameservers: []string{"10.231.1.1"}}
		res, err := result(conf, ep, "/run/netns/p1")
		if err != nil {
			t.Fatal(err)
		}
		out, err := res.GetAsVersion(v)
		if err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		b, _ := json.Marshal(out)
		var got map[string]any
		json.Unmarshal(b, &got)
		ips := got["ips"].([]any)[0].(map[string]any)
		if got["cniVersion"] != v || ips["address"] != "10.231.1.2/24" || ips["gateway"] != "10.231.1.1" || ips["interface"] != float64(1) ||
			len(got["routes"].([]any)) != 1 || got["dns"] == nil {
			t.Errorf("%s: %s", v, b)
		}
		if v == "0.4.0" && ips["version"] != "4" {
			t.Errorf("0.4.0 wants the address version: %s", b)
		}
	}
}

// A dual-stack endpoint's result has both addresses on the container
// interface, each with its gateway, and both default routes.
func TestResultDualStack(t *testing.T) {
	ep := api.Endpoint{HostIf: "veth1234567", IfName: "eth0", MAC: "02:42:0a:e7:01:02", Subnet: "10.231.1.0/24", Gateway: "10.231.1.1",
		Subnet6: "fd00:231::/64", Gateway6: "fd00:231::1", DefaultRoute: true,
		IP: netip.MustParseAddr("10.231.1.2"), IP6: netip.MustParseAddr("fd00:231::2")}
	conf := &NetConf{}
	conf.CNIVersion = "1.0.0"
	res, err := result(conf, ep, "/run/netns/p1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(res)
	for _, want := range []string{`{"address":"10.231.1.2/24","gateway":"10.231.1.1","interface":1}`, `{"address":"fd00:231::2/64","gateway":"fd00:231::1","interface":1}`,
		`{"dst":"0.0.0.0/0","gw":"10.231.1.1"}`, `{"dst":"::/0","gw":"fd00:231::1"}`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("result %s lacks %s", b, want)
		}
	}
}
