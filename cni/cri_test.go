package cni_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bpfnet/bpfnet/internal/testnet"
)

// containerd's CRI as the kubelet drives it (crictl): pods on a bpfnet
// network through the plugin, one asking for a hostPort; traffic to the
// pod, its hostPort from the outside, the network's pod-to-pod policy
// (icc off); stopp and rmp leave nothing behind. The conflist asks for
// 1.0.0: Debian's containerd 1.6 rejects 1.1.0 results.
func TestContainerdCRI(t *testing.T) {
	w := newCNIWorld(t)
	confDir := t.TempDir()
	conf := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"pods","plugins":[{"type":"bpfnet","socket":%q,"subnet":"198.18.40.0/24",
		"options":{"com.docker.network.bridge.enable_icc":"false"},"capabilities":{"portMappings":true}}]}`, w.daemon.Socket)
	if err := os.WriteFile(filepath.Join(confDir, "10-bpfnet.conflist"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	before := testnet.HostState(t, w.topo.Host)
	ctrd := testnet.StartContainerd(t, w.topo.Host, filepath.Join(t.TempDir(), "containerd"), w.path, confDir)
	logs := t.TempDir()
	runp := func(name string, ports string) (string, *testnet.NS, netip.Addr) {
		t.Helper()
		spec := fmt.Sprintf(`{"metadata":{"name":%q,"namespace":"shop","uid":"uid-%s","attempt":1},"log_directory":%q,
			"port_mappings":[%s],"linux":{"cgroup_parent":%q}}`, name, name, logs, ports, ctrd.CgroupParent())
		f := filepath.Join(t.TempDir(), "pod.json")
		os.WriteFile(f, []byte(spec), 0o644)
		id := strings.TrimSpace(ctrd.Crictl(t, "runp", f))
		var info struct {
			Status struct {
				Network struct{ IP string }
			}
			Info struct{ Pid int }
		}
		if err := json.Unmarshal([]byte(ctrd.Crictl(t, "inspectp", "-o", "json", id)), &info); err != nil {
			t.Fatal(err)
		}
		ip, err := netip.ParseAddr(info.Status.Network.IP)
		if err != nil || info.Info.Pid == 0 {
			t.Fatalf("pod %s: ip %q pid %d", name, info.Status.Network.IP, info.Info.Pid)
		}
		return id, testnet.AttachNS(t, name, info.Info.Pid), ip
	}
	id1, ns1, ip1 := runp("web-1", fmt.Sprintf(`{"protocol":0,"container_port":%d,"host_port":8080}`, testnet.ServicePort))
	_, ns2, _ := runp("web-2", "")
	if !netip.MustParsePrefix("198.18.40.0/24").Contains(ip1) {
		t.Errorf("pod address %s outside the network's subnet", ip1)
	}
	ep, err := w.daemon.Client.Endpoint(context.Background(), "shop.web-1")
	if err != nil || ep.IP != ip1 || ep.Labels["io.kubernetes.pod.namespace"] != "shop" {
		t.Errorf("endpoint of the pod: %+v (%v)", ep, err)
	}
	ns1.Serve(t)
	w.topo.Outside.Serve(t)
	if _, err := w.topo.Outside.TCPTo(netip.AddrPortFrom(testnet.UplinkAddr, 8080), 3*time.Second); err != nil {
		t.Errorf("outside → the pod's hostPort: %v", err)
	}
	if src, err := ns1.TCP(testnet.OutsideAddr, 3*time.Second); err != nil || src != testnet.UplinkAddr {
		t.Errorf("pod → outside: %v (source %s)", err, src)
	}
	if _, err := ns2.TCP(ip1, time.Second); err == nil {
		t.Errorf("pod → pod on an icc-off network got through")
	}
	ctrd.Crictl(t, "stopp", id1)
	if _, err := w.daemon.Client.Endpoint(context.Background(), "shop.web-1"); err == nil {
		t.Errorf("the pod's endpoint outlived stopp")
	}
	ctrd.Crictl(t, "rmp", id1) // the second DEL, without a netns
	ctrd.Crictl(t, "rmp", "--all", "--force")
	if after := testnet.HostState(t, w.topo.Host); !strings.Contains(after, "br-") {
		t.Errorf("the network's bridge went with its pods:\n%s", after)
	} else if n := strings.Count(after, "veth"); n != 0 {
		t.Errorf("%d veths left after rmp:\n%s", n, testnet.DiffLines(before, after))
	}
}
