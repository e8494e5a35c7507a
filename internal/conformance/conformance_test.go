// Package conformance checks, with real ICMP, TCP and UDP traffic between
// network namespaces, that a datapath gives the verdicts of Docker 20.10's
// bridge driver (DESIGN §3; the oracle is
// shared/reference/docker-20.10/connectivity-tests.txt). The table is the
// same for every datapath.
package conformance

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

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
// namespace and turns bridge netfilter on.
func dockerHost(t *testing.T, topo *testnet.Topology) {
	rules, err := os.ReadFile("../../compat/testdata/docker-20.10/01-fresh.rules")
	if err != nil {
		t.Fatal(err)
	}
	topo.Host.MustRunInput(t, string(rules), "iptables-restore")
	topo.Host.MustRun(t, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1")
	if out := topo.Host.MustRun(t, "iptables", "-S", "FORWARD"); !strings.Contains(out, "-P FORWARD DROP") {
		t.Fatalf("FORWARD policy is not DROP:\n%s", out)
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	testnet.RemoveBinaries()
	os.Exit(code)
}

// The scenario: networks with Docker's options and the endpoints on them.
var scenarioNetworks = []network.CreateNetworkRequest{
	{Name: "net-a", Subnet: "198.18.1.0/24"},
	{Name: "net-b", Subnet: "198.18.2.0/24"},
	{Name: "noicc", Subnet: "198.18.3.0/24", Options: map[string]string{network.OptICC: "false"}},
	{Name: "internal", Subnet: "198.18.4.0/24", Internal: true},
	{Name: "nomasq", Subnet: "198.18.5.0/24", Options: map[string]string{network.OptMasquerade: "false"}},
	{Name: "snat", Subnet: "198.18.6.0/24", Options: map[string]string{network.OptHostIPv4: testnet.ExtraAddr.String()}},
}

// scenarioEndpoints: container name → networks, first one is eth0 (and
// holds the default route), the next eth1.
var scenarioEndpoints = []struct {
	container string
	networks  []string
}{
	{"a1", []string{"net-a"}}, {"a2", []string{"net-a"}}, {"m", []string{"net-a", "net-b"}},
	{"b1", []string{"net-b"}}, {"n1", []string{"noicc"}}, {"n2", []string{"noicc"}},
	{"i1", []string{"internal"}}, {"i2", []string{"internal"}}, {"q1", []string{"nomasq"}}, {"s1", []string{"snat"}},
}

type verdict bool

const (
	allow verdict = true
	drop  verdict = false
)

// row is one expectation. from: a container, "host" or "outside". to: a
// container (its eth0 address), "container@network" (its address there),
// "gw:network", "uplink" or "outside". seen, for allowed rows, is the
// source address the server must see, in the same notation plus "self"
// (the sender's own address in the target's network).
var table = []struct {
	name     string
	from, to string
	want     verdict
	seen     string
}{
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
	{"outside → container, unsolicited → drop", "outside", "a1", drop, ""},
	{"outside → no-masquerade container, unsolicited → drop", "outside", "q1", drop, ""},
	{"outside → internal container → drop", "outside", "i1", drop, ""},
}

// world is a running scenario.
type world struct {
	topo       *testnet.Topology
	daemon     *testnet.Daemon
	containers map[string]*testnet.NS
	addrs      map[string]netip.Addr // "container@network" → address
	primary    map[string]string     // container → its eth0 network
	gateways   map[string]netip.Addr
}

func build(t *testing.T, v variant) *world {
	w := &world{topo: testnet.NewTopology(t), containers: map[string]*testnet.NS{},
		addrs: map[string]netip.Addr{}, primary: map[string]string{}, gateways: map[string]netip.Addr{}}
	if v.prepare != nil {
		v.prepare(t, w.topo)
	}
	args := append([]string{"--default-network=false", "--uplink=" + testnet.UplinkIf}, v.args...)
	w.daemon = testnet.NewDaemon(t, w.topo.Host, args...)
	w.daemon.Wrap = v.wrap
	w.daemon.Start()
	if st, err := w.daemon.Client.Status(context.Background()); err != nil || st.Datapath != v.datapath {
		t.Fatalf("daemon runs datapath %q (%s), want %q (status error %v)", st.Datapath, st.DatapathReason, v.datapath, err)
	}
	ctx := context.Background()
	for _, req := range scenarioNetworks {
		n, err := w.daemon.Client.CreateNetwork(ctx, req)
		if err != nil {
			t.Fatalf("create network %s: %v", req.Name, err)
		}
		w.gateways[req.Name] = netip.MustParseAddr(n.IPAM.Config[0].Gateway)
	}
	for _, c := range scenarioEndpoints {
		ns := testnet.NewNS(t, c.container)
		w.containers[c.container] = ns
		w.primary[c.container] = c.networks[0]
		for i, netName := range c.networks {
			ep, err := w.daemon.Client.CreateEndpoint(ctx, network.CreateEndpointRequest{
				Network: netName, NetNS: ns.Path, IfName: fmt.Sprintf("eth%d", i), Name: c.container + "-" + netName})
			if err != nil {
				t.Fatalf("create endpoint %s on %s: %v", c.container, netName, err)
			}
			w.addrs[c.container+"@"+netName] = ep.IP
		}
		ns.Serve(t)
	}
	w.topo.Host.Serve(t)
	w.topo.Outside.Serve(t)
	return w
}

// resolve turns a row's address notation into an address.
func (w *world) resolve(t *testing.T, s, from string) netip.Addr {
	switch {
	case s == "uplink":
		return testnet.UplinkAddr
	case s == "extra":
		return testnet.ExtraAddr
	case s == "outside":
		return testnet.OutsideAddr
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
		return w.topo.Outside, testnet.OutsideAddr
	}
	name, netName, ok := strings.Cut(from, "@")
	if !ok {
		netName = w.primary[name]
	}
	return w.containers[name], w.addrs[name+"@"+netName]
}

// check runs the whole table with ICMP, TCP and UDP.
func (w *world) check(t *testing.T, v variant) {
	const (
		answerWait = 3 * time.Second // an allowed flow answers in milliseconds
		blockWait  = time.Second     // how long silence must last to count as a drop
	)
	for _, row := range table {
		t.Run(row.name, func(t *testing.T) {
			ns, self := w.sender(t, row.from, row.to)
			dst := w.resolve(t, row.to, row.from)
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
				case row.want == drop && err == nil:
					t.Errorf("%s %s → %s (%s): want dropped, got an answer", proto, row.from, row.to, dst)
				case row.want == drop && !errors.Is(err, testnet.ErrBlocked):
					t.Errorf("%s %s → %s (%s): want a silent drop, got %v", proto, row.from, row.to, dst, err)
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
			wg.Add(3)
			go probe("icmp", func() (netip.Addr, error) { return netip.Addr{}, ns.Ping(dst, wait) })
			go probe("tcp", func() (netip.Addr, error) { return ns.TCP(dst, wait) })
			go probe("udp", func() (netip.Addr, error) { return ns.UDP(dst, wait) })
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
		t.Run(name, func(t *testing.T) {
			w := build(t, v)
			if v.ebpf {
				w.checkEBPFSetup(t, v)
			}
			w.check(t, v)
			w.checkConntrack(t, v)
		})
	}
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
	n := strings.Count(out, "="+testnet.OutsideAddr.String()+" ")
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
	// 2 hooks of the uplink + 6 bridges + 2 hooks × 11 veths.
	if want := 2 + len(scenarioNetworks) + 2*11; len(st.Attachments) != want {
		t.Errorf("status lists %d attachments, want %d", len(st.Attachments), want)
	}
	for _, a := range st.Attachments {
		if a.Mode != v.attach || a.ProgramID == 0 {
			t.Errorf("attachment %+v: want mode %s and a program", a, v.attach)
		}
	}
	save := w.topo.Host.MustRun(t, "iptables-save")
	ours := 0
	for _, line := range strings.Split(save, "\n") {
		if strings.Contains(line, "bpfnet") {
			ours++
			if !strings.HasPrefix(line, "-A FORWARD -m mark --mark 0x200000/0x200000") {
				t.Errorf("unexpected bpfnet rule: %s", line)
			}
		}
		for name, gw := range w.gateways {
			prefix := netip.PrefixFrom(gw, 24).Masked().String()
			if strings.Contains(line, "br-") || strings.Contains(line, prefix) {
				t.Errorf("iptables rule for network %s in eBPF mode: %s", name, line)
			}
		}
	}
	want := 1
	if v.noRules {
		want = 0
	}
	if ours != want {
		t.Errorf("want %d bpfnet rule(s), found %d:\n%s", want, ours, save)
	}
}
