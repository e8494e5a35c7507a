// Package conformance checks, with real ICMP, TCP and UDP traffic between
// network namespaces, that a datapath gives the verdicts of Docker 20.10's
// bridge driver (DESIGN §3; the oracle is
// shared/reference/docker-20.10/connectivity-tests.txt). The table is the
// same for every datapath.
package conformance

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/bpfnet/bpfnet/api"
	"github.com/bpfnet/bpfnet/internal/testnet"
	"github.com/bpfnet/bpfnet/network"
)

// datapaths lists the variants the suite runs.
var datapaths = flag.String("datapaths", "iptables,ebpf,ebpf-tc,ebpf-forward-drop,auto-without-bpf", "comma-separated variants to check: "+strings.Join(slices.Sorted(maps.Keys(variants)), ", "))

// variant is a datapath configuration the table must hold for.
type variant struct {
	args []string
	// wrap runs the daemon through a command (testnet.Daemon.Wrap).
	wrap []string
	// datapath is what the daemon must report running.
	datapath string
	// prepare changes the host namespace before the daemon starts.
	prepare func(t *testing.T, topo *testnet.Topology)
	// ebpf variants must install no per-network iptables rules.
	ebpf bool
	// attach is the attach mode the daemon must report.
	attach string
	// noRules: the daemon must install no iptables rule at all.
	noRules bool
}

var variants = map[string]variant{
	"iptables": {args: []string{"--datapath=iptables"}, datapath: "iptables"},
	"ebpf":     {args: []string{"--datapath=ebpf"}, datapath: "ebpf", ebpf: true, attach: "tcx"},
	// The legacy clsact + cls_bpf attachment, as on kernels before 6.6.
	"ebpf-tc": {args: []string{"--datapath=ebpf", "--tc-attach=tc"}, datapath: "ebpf", ebpf: true, attach: "tc"},
	// A host where Docker runs: its chains, FORWARD policy DROP and
	// bridge netfilter on (so even same-bridge traffic walks FORWARD),
	// and bpfnet without its FORWARD rule: the fast paths carry every row.
	"ebpf-forward-drop": {args: []string{"--datapath=ebpf", "--forward-rule=false"}, datapath: "ebpf", ebpf: true, attach: "tcx", prepare: dockerHost, noRules: true},
	// A kernel without the bpf() system call (seccomp makes it fail with
	// ENOSYS): auto must fall back to iptables and the table still hold.
	"auto-without-bpf": {args: []string{"--datapath=auto"}, wrap: []string{"nobpf"}, datapath: "iptables"},
}

// dockerHost loads the rules a fresh Docker 20.10 leaves (captured by the
// reference, compat/testdata/docker-20.10/01-fresh.rules) into the host
// namespace, gives ip6tables' FORWARD the DROP policy Docker 27 sets with
// IPv6 (ip6tables on by default), and turns bridge netfilter on for both,
// so that even same-bridge traffic walks FORWARD.
func dockerHost(t *testing.T, topo *testnet.Topology) {
	rules, err := os.ReadFile("../../compat/testdata/docker-20.10/01-fresh.rules")
	if err != nil {
		t.Fatal(err)
	}
	topo.Host.MustRunInput(t, string(rules), "iptables-restore")
	topo.Host.MustRun(t, "ip6tables", "-P", "FORWARD", "DROP")
	topo.Host.MustRun(t, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1", "net.bridge.bridge-nf-call-ip6tables=1")
	for _, tool := range []string{"iptables", "ip6tables"} {
		if out := topo.Host.MustRun(t, tool, "-S", "FORWARD"); !strings.Contains(out, "-P FORWARD DROP") {
			t.Fatalf("%s FORWARD policy is not DROP:\n%s", tool, out)
		}
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	testnet.RemoveBinaries()
	os.Exit(code)
}

// The scenario: networks with Docker's options and the endpoints on them.
var scenarioNetworks = []api.CreateNetworkRequest{
	{Name: "net-a", Subnet: "198.18.1.0/24"},
	{Name: "net-b", Subnet: "198.18.2.0/24"},
	{Name: "noicc", Subnet: "198.18.3.0/24", Options: map[string]string{network.OptICC: "false"}},
	{Name: "internal", Subnet: "198.18.4.0/24", Internal: true},
	{Name: "nomasq", Subnet: "198.18.5.0/24", Options: map[string]string{network.OptMasquerade: "false"}},
	{Name: "snat", Subnet: "198.18.6.0/24", Options: map[string]string{network.OptHostIPv4: testnet.ExtraAddr.String()}},
	{Name: "hostbind", Subnet: "198.18.7.0/24", Options: map[string]string{network.OptHostBinding: "127.0.0.1"}},
}

// scenarioEndpoints: container name → networks, first one is eth0 (and
// holds the default route), the next eth1.
// ports are published on the first network, for TCP and UDP, all to the
// container's testnet.ServicePort (reference steps 09–15: c2 -p 8080:80,
// c3 -p 127.0.0.1:9090:90, c5 on a host_binding_ipv4=127.0.0.1 network,
// c6 no-masquerade, c8 no-icc).
type scenarioEndpoint struct {
	container string
	networks  []string
	ports     []uint16
	hostIP    string
}

var scenarioEndpoints = []scenarioEndpoint{
	{container: "a1", networks: []string{"net-a"}, ports: []uint16{8080}},
	{container: "a2", networks: []string{"net-a"}}, {container: "m", networks: []string{"net-a", "net-b"}},
	{container: "b1", networks: []string{"net-b"}, ports: []uint16{9090}, hostIP: "127.0.0.1"},
	{container: "n1", networks: []string{"noicc"}, ports: []uint16{4040}}, {container: "n2", networks: []string{"noicc"}},
	{container: "i1", networks: []string{"internal"}}, {container: "i2", networks: []string{"internal"}},
	{container: "q1", networks: []string{"nomasq"}}, {container: "q2", networks: []string{"nomasq"}, ports: []uint16{6060}},
	{container: "s1", networks: []string{"snat"}},
	{container: "h1", networks: []string{"hostbind"}, ports: []uint16{7070}},
	{container: "d1", networks: []string{network.DefaultNetworkName}},
}

// portSpecs are an endpoint's -p values.
func portSpecs(hostIP string, ports []uint16) []string {
	var specs []string
	for _, p := range ports {
		for _, proto := range []string{"tcp", "udp"} {
			spec := fmt.Sprintf("%d:%d/%s", p, testnet.ServicePort, proto)
			if hostIP != "" {
				spec = hostIP + ":" + spec
			}
			specs = append(specs, spec)
		}
	}
	return specs
}

type verdict int

const (
	allow verdict = iota
	drop
	// refused: no published port there, so the host itself answers with
	// a TCP RST or an ICMP port unreachable (curl's rc=7 in the reference).
	refused
)

// row is one expectation. from: a container, "host" or "outside". to: a
// container (its eth0 address), "container@network" (its address there),
// "gw:network", "uplink", "outside" or "loopback" (127.0.0.1). seen, for
// allowed rows, is the source address the server must see, in the same
// notation plus "self" (the sender's own address in the target's network).
// A "to" ending in ":PORT" is a published host port, probed with TCP and
// UDP; otherwise the row probes testnet.ServicePort with ICMP, TCP and UDP.
type row struct {
	name     string
	from, to string
	want     verdict
	seen     string
}

var table = []row{
	{"same network, icc on → allow", "a1", "a2", allow, "self"},
	{"same network, icc off → drop(icc)", "n1", "n2", drop, ""},
	{"other network → drop(isolation)", "a1", "b1", drop, ""},
	{"other network, other direction → drop(isolation)", "b1", "a1", drop, ""},
	{"multi-homed endpoint → network B over its own eth1 → allow", "m@net-b", "b1", allow, "self"},
	{"multi-homed endpoint → network A over eth0 → allow", "m", "a1", allow, "self"},
	{"to a multi-homed endpoint's address in another network → drop(isolation)", "a1", "m@net-b", drop, ""},
	{"internal, same network → allow", "i1", "i2", allow, "self"},
	{"internal → other network → drop(internal)", "i1", "a1", drop, ""},
	{"other network → internal → drop(internal)", "a1", "i1", drop, ""},
	{"internal → own gateway → allow (host input)", "i1", "gw:internal", allow, "self"},
	{"internal → another network's gateway → allow (host input)", "i1", "gw:net-a", allow, "self"},
	{"internal → uplink address → allow (host input)", "i1", "uplink", allow, "self"},
	{"container → own gateway → allow", "a1", "gw:net-a", allow, "self"},
	{"container → another network's gateway → allow (host input)", "a1", "gw:net-b", allow, "self"},
	{"container → uplink address → allow", "a1", "uplink", allow, "self"},
	{"icc off → own gateway → allow", "n1", "gw:noicc", allow, "self"},
	{"host → container → allow", "host", "a1", allow, "gw:net-a"},
	{"host → container on an internal network → allow", "host", "i1", allow, "gw:internal"},
	{"host → container on an icc-off network → allow", "host", "n1", allow, "gw:noicc"},
	{"host → container on a no-masquerade network → allow", "host", "q1", allow, "gw:nomasq"},
	{"masquerade: container → outside → allow, source is the uplink address", "a1", "outside", allow, "uplink"},
	{"masquerade: multi-homed container → outside → allow", "m", "outside", allow, "uplink"},
	{"masquerade: icc-off container → outside → allow", "n1", "outside", allow, "uplink"},
	{"no masquerade: container → outside → allow, source unchanged", "q1", "outside", allow, "self"},
	{"host_ipv4: container → outside → allow, source is host_ipv4", "s1", "outside", allow, "extra"},
	{"internal → outside → drop(internal)", "i1", "outside", drop, ""},
	{"outside → container, unsolicited → drop", "outside", "a2", drop, ""},
	{"outside → no-masquerade container, unsolicited → drop", "outside", "q1", drop, ""},
	{"outside → internal container → drop", "outside", "i1", drop, ""},
}

// defaultTable holds the rows about the default network, which the daemon
// creates at its first start (reference: connectivity-tests.txt, "container
// -> gateway / host addresses": any container reaches docker0's gateway,
// a host address; docker0's containers are another network's). They run
// on the daemon's first start and again after a restart.
var defaultTable = []row{
	{"container → the default network's gateway → allow (host input)", "a1", "gw:bridge", allow, "self"},
	{"internal → the default network's gateway → allow (host input)", "i1", "gw:bridge", allow, "self"},
	{"icc-off container → the default network's gateway → allow (host input)", "n1", "gw:bridge", allow, "self"},
	{"default network → own gateway → allow", "d1", "gw:bridge", allow, "self"},
	{"default network → another network's gateway → allow (host input)", "d1", "gw:net-a", allow, "self"},
	{"container → container on the default network → drop(isolation)", "a1", "d1", drop, ""},
	{"default network → other network → drop(isolation)", "d1", "a1", drop, ""},
	{"internal → default network → drop(internal)", "i1", "d1", drop, ""},
	{"default network → outside → allow, masqueraded", "d1", "outside", allow, "uplink"},
	{"host → container on the default network → allow", "host", "d1", allow, "gw:bridge"},
}

// portTable holds the published-port rows, from
// connectivity-tests-userland-proxy-false.txt (bpfnet runs no proxy, so
// hairpin-mode behaviour is the reference) and reference §A.5/§A.7.
var portTable = []row{
	{"outside → uplink:8080 → DNAT to a1, source kept", "outside", "uplink:8080", allow, "outside"},
	{"outside → uplink:4040 (icc-off network) → allow", "outside", "uplink:4040", allow, "outside"},
	{"outside → uplink:6060 (no-masquerade network) → allow", "outside", "uplink:6060", allow, "outside"},
	{"outside → uplink:9090 (bound to 127.0.0.1) → refused", "outside", "uplink:9090", refused, ""},
	{"outside → uplink:7070 (host_binding_ipv4 127.0.0.1) → refused", "outside", "uplink:7070", refused, ""},
	{"host → 127.0.0.1:8080 → allow, masqueraded to the bridge address", "host", "loopback:8080", allow, "gw:net-a"},
	{"host → another bridge's address:8080 → allow", "host", "gw:net-b:8080", allow, "gw:net-a"},
	{"host → uplink:8080 → allow", "host", "uplink:8080", allow, "gw:net-a"},
	{"host → 127.0.0.1:9090 (bound to 127.0.0.1) → allow", "host", "loopback:9090", allow, "gw:net-b"},
	{"host → a bridge address:9090 (bound to 127.0.0.1) → refused", "host", "gw:net-a:9090", refused, ""},
	{"host → 127.0.0.1:7070 (host_binding_ipv4 127.0.0.1) → allow", "host", "loopback:7070", allow, "gw:hostbind"},
	{"host → a bridge address:7070 (host_binding_ipv4 127.0.0.1) → refused", "host", "gw:net-a:7070", refused, ""},
	{"host → uplink:6060 (no-masquerade network) → allow", "host", "uplink:6060", allow, "gw:nomasq"},
	{"host → uplink:4040 (icc-off network) → allow", "host", "uplink:4040", allow, "gw:noicc"},
	{"container → own gateway:8080 = neighbour's port → allow, source kept", "a2", "gw:net-a:8080", allow, "self"},
	{"container → own gateway:8080 = its own port → allow, masqueraded", "a1", "gw:net-a:8080", allow, "gw:net-a"},
	{"container → uplink:8080 = its own port → allow, masqueraded", "a1", "uplink:8080", allow, "gw:net-a"},
	{"container → own gateway:8080 = another network's port → drop(isolation)", "b1", "gw:net-b:8080", drop, ""},
	{"no-masquerade container → own gateway:6060 = own port → allow", "q2", "gw:nomasq:6060", allow, "gw:nomasq"},
	{"no-masquerade container → own gateway:8080 = another network's port → drop(isolation)", "q1", "gw:nomasq:8080", drop, ""},
	{"icc-off container → gateway:4040 = neighbour's port → drop(icc)", "n2", "gw:noicc:4040", drop, ""},
	{"internal container → own gateway:8080 → drop(internal)", "i1", "gw:internal:8080", drop, ""},
	{"container → uplink:9090 (bound to 127.0.0.1) → refused", "a2", "uplink:9090", refused, ""},
}

// world is a running scenario.
type world struct {
	topo       *testnet.Topology
	daemon     *testnet.Daemon  // nil for Docker's own bridge driver
	docker     *testnet.Dockerd // nil when bpfnet's API made the scenario
	containers map[string]*testnet.NS
	addrs      map[string]netip.Addr // "container@network" → address
	primary    map[string]string     // container → its eth0 network
	gateways   map[string]netip.Addr
	// The IPv6 side of a dual-stack scenario (ipv6_test.go): addresses
	// and gateways, and whether the rows being checked are IPv6's.
	addrs6, gateways6 map[string]netip.Addr
	v6, dualStack     bool
}

// clients are the front-ends that make the scenario: bpfnet's API (what
// the CLI calls) or Docker's engine through bpfnet's network driver.
var clients = flag.String("clients", "api,docker,cni", "comma-separated front-ends that make the scenario: api (bpfnet's API), docker (docker network create -d bpfnet, docker run) and cni (the CNI plugin through libcni, as container runtimes call it)")

func newWorld(t *testing.T) *world {
	return &world{topo: testnet.NewTopology(t), containers: map[string]*testnet.NS{},
		addrs: map[string]netip.Addr{}, primary: map[string]string{}, gateways: map[string]netip.Addr{},
		addrs6: map[string]netip.Addr{}, gateways6: map[string]netip.Addr{}}
}

func build(t *testing.T, v variant, client string, dualStack bool) *world {
	t.Helper()
	w := newWorld(t)
	w.dualStack = dualStack
	if v.prepare != nil {
		v.prepare(t, w.topo)
	}
	// The daemon runs with its defaults (the default network, the uplink
	// of the default route, its own bpffs and cgroup2 mounts) plus the
	// variant's flags, and a dual-stack world's default network as
	// Docker's IPv6 reference had it.
	args := v.args
	if dualStack {
		args = append(slices.Clone(args), "--ipv6", "--fixed-cidr-v6", fixedCIDRv6)
	}
	w.daemon = testnet.NewDaemon(t, w.topo.Host, args...)
	w.daemon.Wrap = v.wrap
	driver := ""
	if client == "docker" {
		driver = w.daemon.DockerDriver()
	}
	w.daemon.Start()
	if st, err := w.daemon.Client.Status(context.Background()); err != nil || st.Datapath != v.datapath {
		t.Fatalf("daemon runs datapath %q (%s), want %q (status error %v)", st.Datapath, st.DatapathReason, v.datapath, err)
	}
	ctx := context.Background()
	def, err := w.daemon.Client.Network(ctx, network.DefaultNetworkName)
	if err != nil {
		t.Fatalf("no default network: %v", err)
	}
	w.gateways[def.Name] = netip.MustParseAddr(def.IPAM.Config[0].Gateway)
	if dualStack {
		if len(def.IPAM.Config) != 2 || def.IPAM.Config[1].Subnet != fixedCIDRv6 {
			t.Fatalf("default network's IPAM %+v: want a second subnet %s", def.IPAM.Config, fixedCIDRv6)
		}
		w.gateways6[def.Name] = netip.MustParseAddr(def.IPAM.Config[1].Gateway)
	}
	switch client {
	case "docker":
		// Docker's engine with its defaults: its own rules and docker0 in
		// the host namespace, beside bpfnet's, as on any Docker host.
		w.startDocker(t)
		w.dockerScenario(t, driver, func(c scenarioEndpoint) bool { return c.networks[0] != network.DefaultNetworkName })
		// bpfnet's default network is not Docker's: its container comes
		// through the API.
		w.apiScenario(t, false, func(c scenarioEndpoint) bool { return c.networks[0] == network.DefaultNetworkName })
	case "cni":
		w.cniScenario(t)
	default:
		w.apiScenario(t, true, func(scenarioEndpoint) bool { return true })
	}
	w.topo.Host.Serve(t)
	w.topo.Outside.Serve(t)
	return w
}

// cniScenario attaches every container through the CNI plugin, as a
// runtime does (libcni): each network is made by its first ADD from the
// conf, and a container's ports are the portMappings capability.
func (w *world) cniScenario(t *testing.T) {
	ctx := context.Background()
	path := testnet.CNIPlugins(t)
	cninet := libcni.NewCNIConfigWithCacheDir([]string{path}, t.TempDir(), nil)
	lists := map[string]*libcni.NetworkConfigList{}
	for _, req := range append([]api.CreateNetworkRequest{{Name: network.DefaultNetworkName}}, scenarioNetworks...) {
		conf := map[string]any{"type": "bpfnet", "socket": w.daemon.Socket, "capabilities": map[string]bool{"portMappings": true}}
		if req.Subnet != "" {
			conf["subnet"] = req.Subnet
		}
		if req.Internal {
			conf["internal"] = true
		}
		if len(req.Options) > 0 {
			conf["options"] = req.Options
		}
		if sub6, ok := w.subnets6()[req.Name]; ok {
			conf["ipv6"], conf["subnet6"] = true, sub6.String()
		} else if req.Name == network.DefaultNetworkName && w.dualStack {
			conf["ipv6"] = true // the daemon made it dual-stack (--ipv6)
		}
		b, _ := json.Marshal(map[string]any{"cniVersion": "1.0.0", "name": req.Name, "plugins": []any{conf}})
		list, err := libcni.ConfListFromBytes(b)
		if err != nil {
			t.Fatal(err)
		}
		lists[req.Name] = list
	}
	for _, c := range scenarioEndpoints {
		ns := testnet.NewNS(t, c.container)
		w.containers[c.container] = ns
		w.primary[c.container] = c.networks[0]
		for i, netName := range c.networks {
			rt := &libcni.RuntimeConf{ContainerID: c.container, NetNS: ns.Path, IfName: fmt.Sprintf("eth%d", i)}
			if i == 0 && len(c.ports) > 0 {
				var pms []map[string]any
				for _, p := range c.ports {
					for _, proto := range []string{"tcp", "udp"} {
						pms = append(pms, map[string]any{"hostPort": p, "containerPort": testnet.ServicePort, "protocol": proto, "hostIP": c.hostIP})
					}
				}
				rt.CapabilityArgs = map[string]any{"portMappings": pms}
			}
			res, err := cninet.AddNetworkList(ctx, lists[netName], rt)
			if err != nil {
				t.Fatalf("CNI ADD of %s to %s: %v", c.container, netName, err)
			}
			r, err := current.NewResultFromResult(res)
			_, dual := w.subnets6()[netName]
			dual = dual || (w.dualStack && netName == network.DefaultNetworkName)
			if err != nil || len(r.IPs) != map[bool]int{false: 1, true: 2}[dual] {
				t.Fatalf("CNI ADD of %s to %s: result %v (%v)", c.container, netName, res, err)
			}
			for _, ipc := range r.IPs {
				addr, _ := netip.AddrFromSlice(ipc.Address.IP)
				gw, _ := netip.AddrFromSlice(ipc.Gateway)
				addr, gw = addr.Unmap(), gw.Unmap()
				addrs, gateways := w.addrs, w.gateways
				if addr.Is6() {
					addrs, gateways = w.addrs6, w.gateways6
				}
				addrs[c.container+"@"+netName] = addr
				if netName != network.DefaultNetworkName {
					gateways[netName] = gw
				}
			}
		}
		ns.Serve(t)
	}
	// A network no container joins first would have no gateway yet.
	for _, req := range scenarioNetworks {
		if !w.gateways[req.Name].IsValid() {
			t.Fatalf("no container made network %s", req.Name)
		}
	}
}

func (w *world) startDocker(t *testing.T, flags ...string) {
	w.docker = testnet.StartDockerd(t, w.topo.Host, filepath.Join(t.TempDir(), "docker"), append([]string{"--storage-driver", "vfs"}, flags...)...)
	w.docker.ImportPause(t)
}

// apiScenario makes the scenario's networks (when networks is set) and
// the containers keep selects through bpfnet's API, each container a
// namespace of the test's.
func (w *world) apiScenario(t *testing.T, networks bool, keep func(scenarioEndpoint) bool) {
	ctx := context.Background()
	for _, req := range scenarioNetworks {
		if !networks {
			break
		}
		sub6, dual := w.subnets6()[req.Name]
		if dual {
			req.EnableIPv6, req.Subnet6 = true, sub6.String()
		}
		n, err := w.daemon.Client.CreateNetwork(ctx, req)
		if err != nil {
			t.Fatalf("create network %s: %v", req.Name, err)
		}
		w.gateways[req.Name] = netip.MustParseAddr(n.IPAM.Config[0].Gateway)
		if dual {
			w.gateways6[req.Name] = netip.MustParseAddr(n.IPAM.Config[1].Gateway)
		}
	}
	for _, c := range scenarioEndpoints {
		if !keep(c) {
			continue
		}
		ns := testnet.NewNS(t, c.container)
		w.containers[c.container] = ns
		w.primary[c.container] = c.networks[0]
		for i, netName := range c.networks {
			req := api.CreateEndpointRequest{Network: netName, NetNS: ns.Path, IfName: fmt.Sprintf("eth%d", i), Name: c.container + "-" + netName}
			if i == 0 {
				req.Ports = portSpecs(c.hostIP, c.ports)
			}
			ep, err := w.daemon.Client.CreateEndpoint(ctx, req)
			if err != nil {
				t.Fatalf("create endpoint %s on %s: %v", c.container, netName, err)
			}
			w.addrs[c.container+"@"+netName] = ep.IP
			if ep.IP6.IsValid() {
				w.addrs6[c.container+"@"+netName] = ep.IP6
			}
		}
		ns.Serve(t)
	}
}

// dockerScenario makes the scenario's networks with `docker network
// create -d driver` and the containers keep selects with `docker run`
// (and `docker network connect` for a second network), as a Docker user
// would.
func (w *world) dockerScenario(t *testing.T, driver string, keep func(scenarioEndpoint) bool) {
	for _, req := range scenarioNetworks {
		// Docker 20.10's inspect shows the gateway only when it was
		// given: give the one its IPAM would pick, the first address.
		gw := netip.MustParsePrefix(req.Subnet).Addr().Next()
		args := []string{"network", "create", "-d", driver, "--subnet", req.Subnet, "--gateway", gw.String()}
		if sub6, ok := w.subnets6()[req.Name]; ok {
			gw6 := sub6.Addr().Next()
			args = append(args, "--ipv6", "--subnet", sub6.String(), "--gateway", gw6.String())
			w.gateways6[req.Name] = gw6
		}
		if req.Internal {
			args = append(args, "--internal")
		}
		for _, k := range slices.Sorted(maps.Keys(req.Options)) {
			args = append(args, "-o", k+"="+req.Options[k])
		}
		w.docker.Docker(t, time.Minute, append(args, req.Name)...)
		w.gateways[req.Name] = gw
	}
	for _, c := range scenarioEndpoints {
		if !keep(c) {
			continue
		}
		args := []string{}
		if c.networks[0] != network.DefaultNetworkName || driver != "bridge" {
			args = append(args, "--network", c.networks[0])
		}
		for _, spec := range portSpecs(c.hostIP, c.ports) {
			args = append(args, "-p", spec)
		}
		name := "c-" + c.container // Docker wants two characters at least
		ns := w.docker.Run(t, name, args...)
		for _, netName := range c.networks[1:] {
			w.docker.Docker(t, time.Minute, "network", "connect", netName, name)
		}
		w.containers[c.container] = ns
		w.primary[c.container] = c.networks[0]
		for _, netName := range c.networks {
			w.addrs[c.container+"@"+netName] = w.docker.ContainerAddr(t, name, netName)
			if w.gateways6[netName].IsValid() {
				w.addrs6[c.container+"@"+netName] = w.docker.ContainerAddr6(t, name, netName)
			}
		}
		ns.Serve(t)
	}
}

// resolve turns a row's address notation into an address.
func (w *world) resolve(t *testing.T, s, from string) netip.Addr {
	if w.v6 {
		return w.resolve6(t, s)
	}
	switch {
	case s == "uplink":
		return testnet.UplinkAddr
	case s == "extra":
		return testnet.ExtraAddr
	case s == "outside":
		return testnet.OutsideAddr
	case s == "loopback":
		return netip.MustParseAddr("127.0.0.1")
	case strings.HasPrefix(s, "gw:"):
		return w.gateways[strings.TrimPrefix(s, "gw:")]
	case strings.Contains(s, "@"):
		return w.addrs[s]
	case w.containers[s] != nil:
		return w.addrs[s+"@"+w.primary[s]]
	}
	t.Fatalf("bad address notation %q", s)
	return netip.Addr{}
}

// sender returns the namespace a row sends from, and its own address in
// the target's network (for seen="self").
func (w *world) sender(t *testing.T, from, to string) (*testnet.NS, netip.Addr) {
	switch from {
	case "host":
		return w.topo.Host, netip.Addr{}
	case "outside":
		if w.v6 {
			return w.topo.Outside, testnet.OutsideAddr6
		}
		return w.topo.Outside, testnet.OutsideAddr
	}
	name, netName, ok := strings.Cut(from, "@")
	if !ok {
		netName = w.primary[name]
	}
	if w.v6 {
		return w.containers[name], w.addrs6[name+"@"+netName]
	}
	return w.containers[name], w.addrs[name+"@"+netName]
}

// check runs the rows with real traffic.
func (w *world) check(t *testing.T, rows []row) {
	const (
		answerWait = 3 * time.Second // an allowed flow answers in milliseconds
		blockWait  = time.Second     // how long silence must last to count as a drop
	)
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			to, port := row.to, uint16(testnet.ServicePort)
			if i := strings.LastIndexByte(to, ':'); i >= 0 {
				if p, err := strconv.ParseUint(to[i+1:], 10, 16); err == nil {
					to, port = to[:i], uint16(p)
				}
			}
			ns, self := w.sender(t, row.from, to)
			dst := w.resolve(t, to, row.from)
			wait := answerWait
			if row.want == drop {
				wait = blockWait
			}
			var wg sync.WaitGroup
			probe := func(proto string, f func() (netip.Addr, error)) {
				defer wg.Done()
				src, err := f()
				switch {
				case row.want == allow && err != nil:
					t.Errorf("%s %s → %s (%s): want allowed, got %v", proto, row.from, row.to, dst, err)
				case row.want != allow && err == nil:
					t.Errorf("%s %s → %s (%s): want no answer, got one from the server", proto, row.from, row.to, dst)
				case row.want == drop && !errors.Is(err, testnet.ErrBlocked):
					t.Errorf("%s %s → %s (%s): want a silent drop, got %v", proto, row.from, row.to, dst, err)
				case row.want == refused && !errors.Is(err, testnet.ErrRefused):
					t.Errorf("%s %s → %s (%s): want refused, got %v", proto, row.from, row.to, dst, err)
				case row.want == allow && row.seen != "" && src.IsValid():
					want := self
					if row.seen != "self" {
						want = w.resolve(t, row.seen, row.from)
					}
					if src != want {
						t.Errorf("%s %s → %s: server saw source %s, want %s (%s)", proto, row.from, row.to, src, want, row.seen)
					}
				}
			}
			if port == testnet.ServicePort {
				wg.Add(1)
				go probe("icmp", func() (netip.Addr, error) { return netip.Addr{}, ns.Ping(dst, wait) })
			}
			ap := netip.AddrPortFrom(dst, port)
			wg.Add(2)
			go probe("tcp", func() (netip.Addr, error) { return ns.TCPTo(ap, wait) })
			go probe("udp", func() (netip.Addr, error) { return ns.UDPTo(ap, wait) })
			wg.Wait()
		})
	}
}

func TestConformance(t *testing.T) {
	for _, name := range strings.Split(*datapaths, ",") {
		v, ok := variants[name]
		if !ok {
			t.Fatalf("unknown variant %q", name)
		}
		for _, client := range strings.Split(*clients, ",") {
			if client != "api" && client != "docker" && client != "cni" {
				t.Fatalf("unknown client %q", client)
			}
			// Both datapaths hold IPv6 too (issue 18): the world is
			// dual-stack, whichever front-end makes it, in every variant.
			dualStack := true
			t.Run(name+"/"+client, func(t *testing.T) {
				w := build(t, v, client, dualStack)
				if v.ebpf {
					w.checkEBPFSetup(t, v)
				}
				t.Run("policy", func(t *testing.T) { w.check(t, table) })
				t.Run("default network", func(t *testing.T) { w.check(t, defaultTable) })
				t.Run("published ports", func(t *testing.T) { w.check(t, portTable) })
				if dualStack {
					w.checkIPv6(t, false, v.ebpf)
				}
				w.checkConntrack(t, v)
				w.daemon.Stop()
				w.daemon.Start()
				t.Run("default network after a restart", func(t *testing.T) { w.check(t, defaultTable) })
				if dualStack {
					w.v6 = true
					t.Run("IPv6/default network after a restart", func(t *testing.T) { w.check(t, ipv6Rows(defaultTable, false, v.ebpf)) })
					w.v6 = false
				}
			})
		}
	}
}

// The same tables with Docker's own bridge driver on the same engine
// (with --userland-proxy=false, the reference for published ports): the
// reference the bpfnet rows must agree with, row for row, measured here
// rather than only read from the captures.
func TestDockerBridgeReference(t *testing.T) {
	if !strings.Contains(*clients, "docker") {
		t.Skip("-clients has no docker")
	}
	testnet.RequirePrivileges(t)
	w := newWorld(t)
	w.startDocker(t, "--userland-proxy=false")
	// Docker 20.10 shows no gateway for its default network; it is
	// docker0's address.
	f := strings.Fields(w.topo.Host.MustRun(t, "ip", "-4", "-o", "addr", "show", "docker0"))
	gw, err := netip.ParsePrefix(f[slices.Index(f, "inet")+1])
	if err != nil {
		t.Fatalf("docker0's address: %v", f)
	}
	w.gateways[network.DefaultNetworkName] = gw.Addr()
	w.dockerScenario(t, "bridge", func(scenarioEndpoint) bool { return true })
	w.topo.Host.Serve(t)
	w.topo.Outside.Serve(t)
	t.Run("policy", func(t *testing.T) { w.check(t, table) })
	t.Run("default network", func(t *testing.T) { w.check(t, defaultTable) })
	t.Run("published ports", func(t *testing.T) { w.check(t, portTable) })
}

// checkConntrack checks where the host's connection tracking saw the
// container ↔ outside flows of the table: the iptables datapath needs it
// (MASQUERADE), the eBPF datapath's fast paths bypass it, so with Docker's
// rules loaded (which make netfilter track every packet that reaches it)
// it must hold no entry with the outside's address.
func (w *world) checkConntrack(t *testing.T, v variant) {
	if v.ebpf && v.prepare == nil {
		return // nothing enables netfilter conntrack in this host namespace
	}
	out := w.topo.Host.MustRun(t, "conntrack", "-L")
	// Flows between the outside and a container (198.18.0.0/16); the
	// outside's connections to the host itself (refused ports) are the
	// host's business.
	n := 0
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "="+testnet.OutsideAddr.String()+" ") && strings.Contains(line, "=198.18.") {
			n++
		}
	}
	t.Logf("host conntrack: %d entries, %d with the outside address", strings.Count(out, "\n"), n)
	switch {
	case v.ebpf && n > 0:
		t.Errorf("host conntrack tracked %d container ↔ outside flows; the eBPF fast paths must bypass it:\n%s", n, out)
	case !v.ebpf && n == 0:
		t.Errorf("host conntrack has no container ↔ outside flow in iptables mode (MASQUERADE needs it):\n%s", out)
	}
}

// checkEBPFSetup checks the eBPF datapath's promises besides verdicts: the
// requested attach mode on every hook, and no iptables rule but the one
// fixed FORWARD rule (no bridge, subnet or per-network chain).
func (w *world) checkEBPFSetup(t *testing.T, v variant) {
	st, err := w.daemon.Client.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Datapath != "ebpf" || st.Attach != v.attach {
		t.Errorf("status: datapath %q attach %q, want ebpf %q", st.Datapath, st.Attach, v.attach)
	}
	// 2 hooks of the uplink + 2 hooks × 14 veths + 8 socket hooks on the
	// cgroup (connect, sendmsg, recvmsg, getpeername for IPv4 and IPv6);
	// bridges have none.
	if want := 2 + 2*14 + 8; len(st.Attachments) != want {
		t.Errorf("status lists %d attachments, want %d", len(st.Attachments), want)
	}
	for _, a := range st.Attachments {
		want := v.attach
		if strings.HasPrefix(a.Program, "sock_") {
			want = "cgroup"
		}
		if a.Mode != want || a.ProgramID == 0 {
			t.Errorf("attachment %+v: want mode %s and a program", a, want)
		}
	}
	tools := []string{"iptables-save"}
	if w.dualStack {
		tools = append(tools, "ip6tables-save") // the same one rule for IPv6
	}
	for _, tool := range tools {
		save := w.topo.Host.MustRun(t, tool)
		ours := 0
		for _, line := range strings.Split(save, "\n") {
			if strings.Contains(line, "bpfnet") {
				ours++
				if !strings.HasPrefix(line, "-A FORWARD -m mark --mark 0x200000/0x200000") {
					t.Errorf("unexpected bpfnet rule (%s): %s", tool, line)
				}
			}
			for name, gw := range w.gateways {
				prefix := netip.PrefixFrom(gw, 24).Masked().String()
				if strings.Contains(line, "br-") || strings.Contains(line, prefix) {
					t.Errorf("%s rule for network %s in eBPF mode: %s", tool, name, line)
				}
			}
		}
		want := 1
		if v.noRules {
			want = 0
		}
		if ours != want {
			t.Errorf("%s: want %d bpfnet rule(s), found %d:\n%s", tool, want, ours, save)
		}
	}
}
