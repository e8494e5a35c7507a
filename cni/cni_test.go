package cni_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/bpfnet/bpfnet/internal/testnet"
)

// Tests through libcni, the library containerd's CRI plugin, CRI-O and
// Podman call, running the plugin binary as a runtime does, against a
// daemon with its defaults in the test's host namespace.

func TestMain(m *testing.M) {
	code := m.Run()
	testnet.RemoveBinaries()
	os.Exit(code)
}

type cniWorld struct {
	topo   *testnet.Topology
	daemon *testnet.Daemon
	path   string // CNI_PATH
	cni    *libcni.CNIConfig
}

func newCNIWorld(t *testing.T) *cniWorld {
	t.Helper()
	testnet.RequirePrivileges(t)
	w := &cniWorld{topo: testnet.NewTopology(t), path: testnet.CNIPlugins(t)}
	w.daemon = testnet.NewDaemon(t, w.topo.Host)
	w.daemon.Start()
	w.cni = libcni.NewCNIConfigWithCacheDir([]string{w.path}, t.TempDir(), nil)
	return w
}

// conflist is a network configuration list for network name with bpfnet's
// plugin (its extra fields) and the further plugins of a chain.
func (w *cniWorld) conflist(t *testing.T, version, name, fields string, chain ...string) *libcni.NetworkConfigList {
	t.Helper()
	if fields != "" {
		fields = "," + fields
	}
	plugins := []string{fmt.Sprintf(`{"type":"bpfnet","socket":%q,"capabilities":{"portMappings":true,"ips":true,"mac":true}%s}`, w.daemon.Socket, fields)}
	text := fmt.Sprintf(`{"cniVersion":%q,"name":%q,"plugins":[%s]}`, version, name, strings.Join(append(plugins, chain...), ","))
	list, err := libcni.ConfListFromBytes([]byte(text))
	if err != nil {
		t.Fatalf("conflist %s: %v", text, err)
	}
	return list
}

func pod(ns *testnet.NS, id, name string, ports ...map[string]any) *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{ContainerID: id, NetNS: ns.Path, IfName: "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "shop"}, {"K8S_POD_NAME", name}}}
	if len(ports) > 0 {
		rt.CapabilityArgs = map[string]any{"portMappings": ports}
	}
	return rt
}

func cniCode(err error) uint {
	var te *types.Error
	if errors.As(err, &te) {
		return te.Code
	}
	return 0
}

// A pod's life: ADD (the network made from the conf; a chain with the
// reference tuning plugin), the result, traffic and a hostPort, CHECK
// (and CHECK finding a broken interface), DEL twice and with no netns,
// GC, STATUS.
func TestPodLifecycle(t *testing.T) {
	w := newCNIWorld(t)
	ctx := context.Background()
	list := w.conflist(t, "1.0.0", "web", `"subnet":"198.18.9.0/24","options":{"com.docker.network.bridge.enable_icc":"true"}`,
		`{"type":"tuning","sysctl":{"net.ipv4.conf.eth0.rp_filter":"1"}}`)
	p1, p2 := testnet.NewNS(t, "p1"), testnet.NewNS(t, "p2")
	rt1 := pod(p1, "c0ffee01", "cart-1", map[string]any{"hostPort": 8080, "containerPort": testnet.ServicePort, "protocol": "tcp"})
	res, err := w.cni.AddNetworkList(ctx, list, rt1)
	if err != nil {
		t.Fatal(err)
	}
	r, err := current.NewResultFromResult(res)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Interfaces) != 2 || r.Interfaces[1].Name != "eth0" || r.Interfaces[1].Sandbox != p1.Path || len(r.IPs) != 1 ||
		r.IPs[0].Address.String() != "198.18.9.2/24" || r.IPs[0].Gateway.String() != "198.18.9.1" || *r.IPs[0].Interface != 1 ||
		len(r.Routes) != 1 || r.Routes[0].Dst.String() != "0.0.0.0/0" {
		b, _ := json.Marshal(r)
		t.Errorf("result %s", b)
	}
	if got := strings.TrimSpace(p1.MustRun(t, "sysctl", "-n", "net.ipv4.conf.eth0.rp_filter")); got != "1" {
		t.Errorf("the chained tuning plugin did not run: rp_filter %s", got)
	}
	ep, err := w.daemon.Client.Endpoint(ctx, "shop.cart-1")
	if err != nil || ep.ContainerID != "c0ffee01" || ep.Runtime != "cni" || ep.Labels["io.kubernetes.pod.name"] != "cart-1" {
		t.Errorf("endpoint %+v (%v): want the pod's name, container id and labels", ep, err)
	}
	if _, err := w.cni.AddNetworkList(ctx, list, pod(p2, "c0ffee02", "cart-2")); err != nil {
		t.Fatal(err)
	}
	p1.Serve(t)
	if _, err := p2.TCP(netip.MustParseAddr("198.18.9.2"), 3*time.Second); err != nil {
		t.Errorf("pod → pod: %v", err)
	}
	if _, err := w.topo.Outside.TCPTo(netip.AddrPortFrom(testnet.UplinkAddr, 8080), 3*time.Second); err != nil {
		t.Errorf("outside → the pod's hostPort: %v", err)
	}

	if err := w.cni.CheckNetworkList(ctx, list, rt1); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	p1.MustRun(t, "ip", "addr", "flush", "dev", "eth0")
	if err := w.cni.CheckNetworkList(ctx, list, rt1); err == nil || !strings.Contains(err.Error(), "lacks address 198.18.9.2/24") {
		t.Errorf("CHECK of a pod without its address: %v", err)
	}

	// GC: a pod the runtime no longer knows (made through another cache,
	// so only the plugin's own GC can find it) goes; the valid ones stay.
	p3 := testnet.NewNS(t, "p3")
	other := libcni.NewCNIConfigWithCacheDir([]string{w.path}, t.TempDir(), nil)
	if _, err := other.AddNetworkList(ctx, list, pod(p3, "c0ffee03", "cart-3")); err != nil {
		t.Fatal(err)
	}
	// GC and STATUS are CNI 1.1's: libcni sends them to plugins of a 1.1.0
	// list only.
	list11 := w.conflist(t, "1.1.0", "web", `"subnet":"198.18.9.0/24","options":{"com.docker.network.bridge.enable_icc":"true"}`,
		`{"type":"tuning","sysctl":{"net.ipv4.conf.eth0.rp_filter":"1"}}`)
	if err := w.cni.GCNetworkList(ctx, list11, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: "c0ffee01", IfName: "eth0"}, {ContainerID: "c0ffee02", IfName: "eth0"}}}); err != nil {
		t.Fatal(err)
	}
	if eps, _ := w.daemon.Client.Endpoints(ctx, "web"); len(eps) != 2 {
		t.Errorf("after GC %d endpoints, want the 2 valid ones", len(eps))
	}

	// DEL twice, then as the kubelet's second DEL does: no netns.
	for i := range 2 {
		if err := w.cni.DelNetworkList(ctx, list, rt1); err != nil {
			t.Errorf("DEL %d: %v", i+1, err)
		}
	}
	rt1.NetNS = ""
	if err := w.cni.DelNetworkList(ctx, list, rt1); err != nil {
		t.Errorf("DEL without a netns: %v", err)
	}
	if _, err := w.daemon.Client.Endpoint(ctx, "shop.cart-1"); err == nil {
		t.Errorf("the pod's endpoint outlived DEL")
	}

	if err := w.cni.GetStatusNetworkList(ctx, list11); err != nil {
		t.Errorf("STATUS: %v", err)
	}
	w.daemon.Stop()
	if err := w.cni.GetStatusNetworkList(ctx, list11); cniCode(err) != types.ErrPluginNotAvailable {
		t.Errorf("STATUS with bpfnetd down: %v, want code 50", err)
	}
}

// The result's version is the conf's, down to 0.4.0, which is what
// Debian's containerd 1.6 and Podman 4.3 accept; an ADD that fails leaves
// nothing and a later one succeeds; the ips and mac capabilities and
// Podman's CNI_ARGS are honoured.
func TestVersionsAndRetries(t *testing.T) {
	w := newCNIWorld(t)
	ctx := context.Background()
	w.daemon.MustCLI("network", "create", "--subnet", "198.18.9.0/24", "web")
	for _, v := range []string{"0.4.0", "1.0.0", "1.1.0"} {
		ns := testnet.NewNS(t, "v")
		res, err := w.cni.AddNetworkList(ctx, w.conflist(t, v, "web", ""), &libcni.RuntimeConf{ContainerID: "v" + strings.ReplaceAll(v, ".", ""), NetNS: ns.Path, IfName: "eth0"})
		if err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		if res.Version() != v {
			t.Errorf("asked %s, got a %s result", v, res.Version())
		}
	}
	ns := testnet.NewNS(t, "ip")
	before := testnet.HostState(t, w.topo.Host)
	rt := &libcni.RuntimeConf{ContainerID: "ipmac", NetNS: ns.Path, IfName: "eth0",
		CapabilityArgs: map[string]any{"ips": []string{"198.18.9.2/24"}, "mac": "02:00:00:00:00:09"}}
	// 198.18.9.2 is the first pod's.
	if _, err := w.cni.AddNetworkList(ctx, w.conflist(t, "1.0.0", "web", ""), rt); err == nil || !strings.Contains(err.Error(), "already in use") {
		t.Errorf("ADD with a taken address: %v", err)
	}
	if after := testnet.HostState(t, w.topo.Host); after != before {
		t.Errorf("a failed ADD left:\n%s", testnet.DiffLines(before, after))
	}
	rt.CapabilityArgs["ips"] = []string{"198.18.9.20/24"}
	if _, err := w.cni.AddNetworkList(ctx, w.conflist(t, "1.0.0", "web", ""), rt); err != nil {
		t.Fatalf("ADD after a failed ADD: %v", err)
	}
	if mac := ns.MustRun(t, "cat", "/sys/class/net/eth0/address"); strings.TrimSpace(mac) != "02:00:00:00:00:09" || !strings.Contains(ns.MustRun(t, "ip", "-4", "addr"), "198.18.9.20/24") {
		t.Errorf("ips and mac capabilities not honoured")
	}
	// Podman: --ip and --mac-address as CNI_ARGS.
	pns := testnet.NewNS(t, "podman")
	if _, err := w.cni.AddNetworkList(ctx, w.conflist(t, "1.0.0", "web", ""), &libcni.RuntimeConf{ContainerID: "podman1", NetNS: pns.Path, IfName: "eth0",
		Args: [][2]string{{"IP", "198.18.9.30"}, {"MAC", "02:00:00:00:00:30"}}}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(pns.MustRun(t, "ip", "-4", "addr"), "198.18.9.30/24") {
		t.Errorf("CNI_ARGS IP not honoured")
	}
}

// Bad input, through the binary exactly as a runtime runs it (environment
// and stdin): a CNI error object with the right code and a message naming
// the problem, and nothing left behind.
func TestBadInput(t *testing.T) {
	w := newCNIWorld(t)
	w.daemon.MustCLI("network", "create", "--subnet", "198.18.9.0/24", "web")
	ns := testnet.NewNS(t, "bad")
	before := testnet.HostState(t, w.topo.Host)
	conf := func(fields string) string {
		return fmt.Sprintf(`{"cniVersion":"1.0.0","name":"web","type":"bpfnet","socket":%q%s}`, w.daemon.Socket, fields)
	}
	for _, tc := range []struct {
		name, stdin, netns string
		code               uint
		msg                string
	}{
		{"malformed", `{"cniVersion":"1.0.0",`, ns.Path, types.ErrDecodingFailure, "unexpected"},
		{"unknown field", conf(`,"subnett":"10.0.0.0/24"`), ns.Path, types.ErrDecodingFailure, `unknown field "subnett"`},
		{"contradicts the network", conf(`,"subnet":"198.18.10.0/24"`), ns.Path, types.ErrInvalidNetworkConfig, "subnet 198.18.10.0/24 (the network has 198.18.9.0/24)"},
		{"missing netns", conf(""), "/run/netns/bpfnet-no-such-ns", types.ErrInvalidNetworkConfig, "does not exist"},
		{"daemon down", strings.Replace(conf(""), w.daemon.Socket, filepath.Join(t.TempDir(), "none.sock"), 1), ns.Path, types.ErrTryAgainLater, "cannot reach bpfnetd"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(filepath.Join(w.path, "bpfnet"))
			cmd.Env = []string{"CNI_COMMAND=ADD", "CNI_CONTAINERID=bad1", "CNI_NETNS=" + tc.netns, "CNI_IFNAME=eth0", "CNI_PATH=" + w.path}
			cmd.Stdin = strings.NewReader(tc.stdin)
			var out bytes.Buffer
			cmd.Stdout = &out
			if err := cmd.Run(); err == nil {
				t.Fatalf("ADD succeeded: %s", out.String())
			}
			var e types.Error
			if err := json.Unmarshal(out.Bytes(), &e); err != nil {
				t.Fatalf("not a CNI error object: %q", out.String())
			}
			if e.Code != tc.code || !strings.Contains(e.Msg+" "+e.Details, tc.msg) {
				t.Errorf("error %+v, want code %d with %q", e, tc.code, tc.msg)
			}
			if after := testnet.HostState(t, w.topo.Host); after != before {
				t.Errorf("left behind:\n%s", testnet.DiffLines(before, after))
			}
			if eps, _ := w.daemon.Client.Endpoints(context.Background(), "web"); len(eps) != 0 {
				t.Errorf("%d endpoints left", len(eps))
			}
		})
	}
}
