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

// Podman (Debian's 4.3, CNI backend) runs containers on a bpfnet CNI
// network: --ip and --mac-address arrive as CNI_ARGS IP= and MAC=, -p as
// the portMappings capability. (With --ip, Podman 4.3 replaces the
// plugin's capabilities with {"ips": true}, so that container's -p never
// reaches the plugin: docs/cni.md.)
func TestPodman(t *testing.T) {
	w := newCNIWorld(t)
	confDir := t.TempDir()
	conf := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"pnet","plugins":[{"type":"bpfnet","socket":%q,"subnet":"198.18.41.0/24",
		"capabilities":{"portMappings":true}}]}`, w.daemon.Socket)
	if err := os.WriteFile(filepath.Join(confDir, "pnet.conflist"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	pm := testnet.StartPodman(t, w.topo.Host, filepath.Join(t.TempDir(), "podman"), w.path, confDir)
	pm.Podman(t, "run", "-d", "--name", "p1", "--network", "pnet", "--ip", "198.18.41.10", "--mac-address", "02:00:00:00:41:10",
		testnet.PodmanImage, "/pause")
	pm.Podman(t, "run", "-d", "--name", "p2", "--network", "pnet", "-p", fmt.Sprintf("8080:%d", testnet.ServicePort), testnet.PodmanImage, "/pause")
	ep1, err := w.daemon.Client.Endpoint(context.Background(), "p1")
	if err != nil || ep1.IP != netip.MustParseAddr("198.18.41.10") || ep1.MAC != "02:00:00:00:41:10" {
		t.Errorf("p1's endpoint %+v (%v): want --ip and --mac-address", ep1, err)
	}
	ep2, err := w.daemon.Client.Endpoint(context.Background(), "p2")
	if err != nil || len(ep2.Ports) != 1 || ep2.Ports[0].HostPort != 8080 {
		t.Fatalf("p2's endpoint %+v (%v): want -p 8080", ep2, err)
	}
	ns1, ns2 := testnet.NSAt(ep1.NetNS), testnet.NSAt(ep2.NetNS)
	ns2.Serve(t)
	if _, err := w.topo.Outside.TCPTo(netip.AddrPortFrom(testnet.UplinkAddr, 8080), 3*time.Second); err != nil {
		t.Errorf("outside → p2's published port: %v", err)
	}
	if _, err := ns1.TCP(ep2.IP, 3*time.Second); err != nil {
		t.Errorf("p1 → p2: %v", err)
	}
	pm.Podman(t, "rm", "--force", "--time", "1", "p1", "p2")
	if eps, _ := w.daemon.Client.Endpoints(context.Background(), "pnet"); len(eps) != 0 {
		t.Errorf("%d endpoints left after podman rm", len(eps))
	}
}
