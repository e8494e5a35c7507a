package dockerdriver_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/bpfnet/bpfnet/api"
	"github.com/bpfnet/bpfnet/dockerdriver"
	"github.com/bpfnet/bpfnet/internal/testnet"
)

// Tests with a real Docker Engine 20.10 (Debian's docker.io) and
// containerd, started inside the test's host namespace with their own
// roots and sockets, next to bpfnetd; the driver is found under a name
// unique to the test in /run/docker/plugins.

func TestMain(m *testing.M) {
	code := m.Run()
	testnet.RemoveBinaries()
	os.Exit(code)
}

// dockerWorld is a topology with bpfnetd (its defaults, plus the driver
// where Docker finds it) and a dockerd with its defaults (its own
// iptables rules and docker0 in the host namespace, as on a Docker host).
type dockerWorld struct {
	topo   *testnet.Topology
	daemon *testnet.Daemon
	docker *testnet.Dockerd
	driver string
}

func newDockerWorld(t *testing.T, args ...string) *dockerWorld {
	return newDockerWorldWith(t, nil, args...)
}

// newDockerWorldWith starts dockerd with extra flags.
func newDockerWorldWith(t *testing.T, dockerFlags []string, args ...string) *dockerWorld {
	t.Helper()
	testnet.RequirePrivileges(t)
	w := &dockerWorld{topo: testnet.NewTopology(t)}
	w.daemon = testnet.NewDaemon(t, w.topo.Host, args...)
	w.driver = w.daemon.DockerDriver()
	w.daemon.Start()
	w.docker = testnet.StartDockerd(t, w.topo.Host, filepath.Join(t.TempDir(), "docker"), append([]string{"--storage-driver", "vfs"}, dockerFlags...)...)
	w.docker.ImportPause(t)
	return w
}

func (w *dockerWorld) cli(t *testing.T, args ...string) string {
	t.Helper()
	return w.docker.Docker(t, 60*time.Second, args...)
}

// A first look: a network and two containers made by Docker talk to each
// other, reach the outside masqueraded, and a published port answers from
// the outside.
func TestDockerRun(t *testing.T) {
	for _, dp := range []string{"ebpf", "iptables"} {
		t.Run(dp, func(t *testing.T) {
			w := newDockerWorld(t, "--datapath="+dp)
			w.cli(t, "network", "create", "-d", w.driver, "--subnet", "198.18.9.0/24", "web")
			c1 := w.docker.Run(t, "c1", "--network", "web")
			c2 := w.docker.Run(t, "c2", "--network", "web", "-p", "8080:7000")
			c2.Serve(t)
			w.topo.Outside.Serve(t)
			a2 := w.docker.ContainerAddr(t, "c2", "web")
			if src, err := c1.TCP(a2, 3*time.Second); err != nil || src != w.docker.ContainerAddr(t, "c1", "web") {
				t.Errorf("c1 → c2: %v (source %s)", err, src)
			}
			if src, err := c1.TCP(testnet.OutsideAddr, 3*time.Second); err != nil || src != testnet.UplinkAddr {
				t.Errorf("c1 → outside: %v (source %s, want the uplink's)", err, src)
			}
			if src, err := w.topo.Outside.TCPTo(netip.AddrPortFrom(testnet.UplinkAddr, 8080), 3*time.Second); err != nil || src != testnet.OutsideAddr {
				t.Errorf("outside → uplink:8080: %v (source %s)", err, src)
			}
			out := w.daemon.MustCLI("network", "ls")
			id := strings.TrimSpace(w.cli(t, "network", "inspect", "-f", "{{.Id}}", "web"))
			if !strings.Contains(out, dockerdriver.NetworkName(id)) {
				t.Errorf("bpfnet network ls does not show Docker's network %s:\n%s", dockerdriver.NetworkName(id), out)
			}

			// Docker's own bridge networks keep working beside bpfnet's,
			// and neither touches the other's rules.
			w.cli(t, "network", "create", "-d", "bridge", "--subnet", "198.18.30.0/24", "dnet")
			d1 := w.docker.Run(t, "d1", "--network", "dnet")
			d2 := w.docker.Run(t, "d2", "--network", "dnet", "-p", "8090:7000")
			d2.Serve(t)
			if _, err := d1.TCP(w.docker.ContainerAddr(t, "d2", "dnet"), 3*time.Second); err != nil {
				t.Errorf("Docker's own network: d1 → d2: %v", err)
			}
			if src, err := d1.TCP(testnet.OutsideAddr, 3*time.Second); err != nil || src != testnet.UplinkAddr {
				t.Errorf("Docker's own network: d1 → outside: %v (source %s)", err, src)
			}
			if _, err := w.topo.Outside.TCPTo(netip.AddrPortFrom(testnet.UplinkAddr, 8090), 3*time.Second); err != nil {
				t.Errorf("Docker's own network: outside → uplink:8090: %v", err)
			}
			// A container of Docker's network is outside bpfnet's: it may
			// not reach a bpfnet container's address, even at a published
			// port's container port (docs/docker.md, "Beside Docker's own
			// networks").
			if _, err := d1.TCP(a2, time.Second); err == nil {
				t.Errorf("a container of Docker's own network reached a bpfnet container directly")
			}
			ours := "br-" + id[:12]
			dockers := "br-" + strings.TrimSpace(w.cli(t, "network", "inspect", "-f", "{{.Id}}", "dnet"))[:12]
			for _, r := range testnet.IptablesRules(t, w.topo.Host) {
				if strings.Contains(r, "DOCKER") && strings.Contains(r, ours) || strings.Contains(r, "BPFNET") && (strings.Contains(r, dockers) || strings.Contains(r, "docker0")) {
					t.Errorf("a rule of one touches the other's bridge: %s", r)
				}
			}
		})
	}
}

// resolve asks Docker's embedded DNS server in a container (127.0.0.11)
// for name's IPv4 address.
func resolve(t *testing.T, ns *testnet.NS, name string) (netip.Addr, error) {
	var c net.Conn
	if err := ns.Do(func() (err error) { c, err = net.Dial("udp4", "127.0.0.11:53"); return }); err != nil {
		return netip.Addr{}, err
	}
	defer c.Close()
	q := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 7, RecursionDesired: true})
	q.StartQuestions()
	q.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name + "."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
	b, err := q.Finish()
	if err != nil {
		return netip.Addr{}, err
	}
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write(b); err != nil {
		return netip.Addr{}, err
	}
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		return netip.Addr{}, err
	}
	var p dnsmessage.Parser
	if _, err := p.Start(buf[:n]); err != nil {
		return netip.Addr{}, err
	}
	p.SkipAllQuestions()
	for {
		h, err := p.AnswerHeader()
		if err != nil {
			return netip.Addr{}, fmt.Errorf("no A record for %s: %w", name, err)
		}
		if h.Type != dnsmessage.TypeA {
			p.SkipAnswer()
			continue
		}
		a, err := p.AResource()
		if err != nil {
			return netip.Addr{}, err
		}
		return netip.AddrFrom4(a.A), nil
	}
}

// endpoints lists bpfnet's endpoints on the network Docker calls name.
func (w *dockerWorld) endpoints(t *testing.T, name string) []api.Endpoint {
	t.Helper()
	id := strings.TrimSpace(w.cli(t, "network", "inspect", "-f", "{{.Id}}", name))
	eps, err := w.daemon.Client.Endpoints(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return eps
}

// link returns a container interface's MAC and IPv4 address.
func link(t *testing.T, ns *testnet.NS, ifname string) (string, netip.Addr) {
	t.Helper()
	f := strings.Fields(ns.MustRun(t, "ip", "-o", "link", "show", ifname))
	mac := f[slices.Index(f, "link/ether")+1]
	f = strings.Fields(ns.MustRun(t, "ip", "-o", "-4", "addr", "show", ifname))
	p, err := netip.ParsePrefix(f[slices.Index(f, "inet")+1])
	if err != nil {
		t.Fatalf("address of %s: %v", ifname, f)
	}
	return mac, p.Addr()
}

// What Docker users do with containers, on a bpfnet network, in both
// datapaths: --ip and --mac-address are the interface's; -p with a fixed
// port, a range and no host port; the embedded DNS names containers;
// network connect and disconnect; stop, start, restart, kill and rm -f
// each leave bpfnet's endpoints as Docker's view says, the ports free
// again, and no interface behind.
func TestDockerLifecycle(t *testing.T) {
	for _, dp := range []string{"ebpf", "iptables"} {
		t.Run(dp, func(t *testing.T) {
			w := newDockerWorld(t, "--datapath="+dp)
			w.cli(t, "network", "create", "-d", w.driver, "--subnet", "198.18.9.0/24", "web")
			w.cli(t, "network", "create", "-d", w.driver, "--subnet", "198.18.10.0/24", "other")
			w.topo.Outside.Serve(t)
			c1 := w.docker.Run(t, "c1", "--network", "web", "--ip", "198.18.9.50", "--mac-address", "02:00:00:00:00:50",
				"-p", "8080:7000", "-p", "9000-9010:7001", "-p", "7002")
			c1.Serve(t)
			if mac, ip := link(t, c1, "eth0"); mac != "02:00:00:00:00:50" || ip != netip.MustParseAddr("198.18.9.50") {
				t.Errorf("c1's eth0: %s %s, want --mac-address and --ip", mac, ip)
			}
			eps := w.endpoints(t, "web")
			if len(eps) != 1 || len(eps[0].Ports) != 3 {
				t.Fatalf("endpoints of web: %+v", eps)
			}
			host := map[uint16]uint16{} // container port → host port
			for _, p := range eps[0].Ports {
				host[p.Port] = p.HostPort
			}
			if host[7000] != 8080 || host[7001] != 9000 || host[7002] < 49153 {
				t.Errorf("published %v: want 8080, 9000 (the range's first) and a dynamic port", eps[0].Ports)
			}
			outside := func(port uint16) error {
				_, err := w.topo.Outside.TCPTo(netip.AddrPortFrom(testnet.UplinkAddr, port), 3*time.Second)
				return err
			}
			if err := outside(8080); err != nil {
				t.Errorf("outside → uplink:8080: %v", err)
			}

			c2 := w.docker.Run(t, "c2", "--network", "web")
			if a, err := resolve(t, c2, "c1"); err != nil || a != netip.MustParseAddr("198.18.9.50") {
				t.Errorf("c2 resolves c1 to %v (%v)", a, err)
			}
			w.cli(t, "network", "connect", "other", "c2")
			if _, ip := link(t, c2, "eth1"); !netip.MustParsePrefix("198.18.10.0/24").Contains(ip) || len(w.endpoints(t, "other")) != 1 {
				t.Errorf("after network connect: eth1 %s, %d endpoints on other", ip, len(w.endpoints(t, "other")))
			}
			w.cli(t, "network", "disconnect", "other", "c2")
			if n := len(w.endpoints(t, "other")); n != 0 || strings.Contains(c2.MustRun(t, "ip", "-o", "link"), "eth1") {
				t.Errorf("after network disconnect: %d endpoints on other, eth1 still there", n)
			}

			for _, step := range []struct {
				name string
				args []string
				up   bool // c1 runs afterwards
			}{
				{"stop", []string{"stop", "-t", "1", "c1"}, false},
				{"start", []string{"start", "c1"}, true},
				{"restart", []string{"restart", "-t", "1", "c1"}, true},
				{"kill", []string{"kill", "c1"}, false},
				{"start again", []string{"start", "c1"}, true},
				{"rm -f", []string{"rm", "-f", "c1"}, false},
			} {
				w.cli(t, step.args...)
				eps := w.endpoints(t, "web")
				n := 1 // c2
				if step.up {
					n = 2
					c1 = w.docker.AttachNS(t, "c1")
					c1.Serve(t)
					if err := outside(8080); err != nil {
						t.Errorf("after %s: outside → uplink:8080: %v", step.name, err)
					}
				} else if err := outside(8080); err == nil {
					t.Errorf("after %s: uplink:8080 still answers", step.name)
				}
				if len(eps) != n {
					t.Errorf("after %s: %d endpoints on web, want %d", step.name, len(eps), n)
				}
			}
			// Nothing of c1's is left on the host (spare pairs aside).
			out := w.topo.Host.MustRun(t, "ip", "-o", "link")
			if strings.Count(strings.Join(slices.DeleteFunc(strings.Split(out, "\n"), testnet.SpareLink), "\n"), "veth") != 1 {
				t.Errorf("veths left besides c2's:\n%s", out)
			}
		})
	}
}

// Restarts of bpfnetd, of dockerd (with --live-restore, so containers keep
// running), and of both: an open connection between two containers keeps
// working through each, and a container started afterwards gets bpfnet's
// gateway (Docker does not replay CreateNetwork: without bpfnet's state it
// would fall back to its docker_gwbridge) and reaches the others and the
// outside. The daemon runs with its defaults.
func TestDockerRestarts(t *testing.T) {
	w := newDockerWorldWith(t, []string{"--live-restore"})
	w.cli(t, "network", "create", "-d", w.driver, "--subnet", "198.18.9.0/24", "web")
	c1 := w.docker.Run(t, "c1", "--network", "web")
	c1.EchoServer(t, 7100)
	c2 := w.docker.Run(t, "c2", "--network", "web")
	w.topo.Outside.Serve(t)
	c1addr := w.docker.ContainerAddr(t, "c1", "web")
	var conn net.Conn
	if err := c2.Do(func() (err error) {
		conn, err = net.DialTimeout("tcp4", netip.AddrPortFrom(c1addr, 7100).String(), 3*time.Second)
		return
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	if err := testnet.RoundTrip(conn, r, "before"); err != nil {
		t.Fatal(err)
	}
	for i, step := range []struct {
		name    string
		restart func()
	}{
		{"bpfnetd", func() { w.daemon.Stop(); w.daemon.Start() }},
		{"dockerd", func() { w.docker.Stop(); w.docker.Start() }},
		{"both", func() { w.docker.Stop(); w.daemon.Stop(); w.daemon.Start(); w.docker.Start() }},
	} {
		step.restart()
		if err := testnet.RoundTrip(conn, r, "after "+step.name); err != nil {
			t.Errorf("the open connection after restarting %s: %v", step.name, err)
		}
		name := fmt.Sprintf("n%d", i)
		ns := w.docker.Run(t, name, "--network", "web")
		if out := ns.MustRun(t, "ip", "route", "show", "default"); !strings.Contains(out, "via 198.18.9.1 dev eth0") {
			t.Errorf("after restarting %s, a new container's default route: %q, want via bpfnet's gateway", step.name, out)
		}
		if out := w.topo.Host.MustRun(t, "ip", "-o", "link"); strings.Contains(out, "docker_gwbridge") {
			t.Errorf("after restarting %s, Docker fell back to docker_gwbridge", step.name)
		}
		if c, err := dialEcho(ns, netip.AddrPortFrom(c1addr, 7100)); err != nil {
			t.Errorf("after restarting %s, new container → c1: %v", step.name, err)
		} else {
			c.Close()
		}
		if src, err := ns.TCP(testnet.OutsideAddr, 3*time.Second); err != nil || src != testnet.UplinkAddr {
			t.Errorf("after restarting %s, new container → outside: %v (source %s)", step.name, err, src)
		}
	}
}

// dialEcho connects from ns to an echo server and checks one round trip.
func dialEcho(ns *testnet.NS, to netip.AddrPort) (net.Conn, error) {
	var c net.Conn
	if err := ns.Do(func() (err error) { c, err = net.DialTimeout("tcp4", to.String(), 3*time.Second); return }); err != nil {
		return nil, err
	}
	if err := testnet.RoundTrip(c, bufio.NewReader(c), "hello"); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Bad input through Docker fails with bpfnet's message in the docker
// CLI's error and leaves nothing: no interface, rule, network or endpoint
// in bpfnet's state, nothing in Docker's.
func TestDockerBadInput(t *testing.T) {
	w := newDockerWorld(t)
	w.daemon.MustCLI("network", "create", "--subnet", "198.18.20.0/24", "clinet")
	w.cli(t, "network", "create", "-d", w.driver, "--subnet", "198.18.21.0/24", "-o", "com.docker.network.bridge.name=br-taken", "good")
	w.docker.Run(t, "c0", "--network", "good", "-p", "8080:80")
	before := testnet.HostState(t, w.topo.Host)
	st, _ := w.daemon.Client.Status(context.Background())
	dockerNets := w.cli(t, "network", "ls", "-q")
	for _, tc := range []struct {
		name string
		args []string
		msg  string
	}{
		{"unknown option", []string{"network", "create", "-d", w.driver, "--subnet", "198.18.22.0/24", "-o", "com.example.foo=1", "bad"}, `unknown network option "com.example.foo"`},
		{"bad option value", []string{"network", "create", "-d", w.driver, "--subnet", "198.18.22.0/24", "-o", "com.docker.network.bridge.enable_icc=perhaps", "bad"}, "enable_icc"},
		{"overlapping subnet", []string{"network", "create", "-d", w.driver, "--subnet", "198.18.20.0/25", "bad"}, "overlaps"},
		{"bridge name taken", []string{"network", "create", "-d", w.driver, "--subnet", "198.18.22.0/24", "-o", "com.docker.network.bridge.name=br-taken", "bad"}, "already used"},
		{"ipv6 link-local subnet", []string{"network", "create", "-d", w.driver, "--ipv6", "--subnet", "fe80::/64", "--subnet", "198.18.22.0/24", "bad"}, "link-local"},
		{"port taken", []string{"run", "-d", "--name", "bad", "--network", "good", "-p", "8080:80", testnet.PauseImage, "/pause"}, "already published"},
		{"host IP not the host's", []string{"run", "-d", "--name", "bad2", "--network", "good", "-p", "192.0.2.77:81:80", testnet.PauseImage, "/pause"}, "not an address of this host"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := exec.Command("/usr/bin/docker", append([]string{"-H", "unix://" + w.docker.Sock}, tc.args...)...).CombinedOutput()
			if err == nil || !strings.Contains(string(out), tc.msg) {
				t.Errorf("docker %s: %v\n%s\nwant an error with %q", strings.Join(tc.args, " "), err, out, tc.msg)
			}
			if after := testnet.HostState(t, w.topo.Host); after != before {
				t.Errorf("left behind:\n%s", testnet.DiffLines(before, after))
			}
			if now, _ := w.daemon.Client.Status(context.Background()); now.Networks != st.Networks || now.Endpoints != st.Endpoints {
				t.Errorf("bpfnet has %d networks and %d endpoints, had %d and %d", now.Networks, now.Endpoints, st.Networks, st.Endpoints)
			}
			if now := w.cli(t, "network", "ls", "-q"); now != dockerNets {
				t.Errorf("Docker's networks changed:\n%s\nwas\n%s", now, dockerNets)
			}
		})
	}
}

// With --ipam-driver, bpfnet's allocator serves Docker's networks and the
// CLI's alike: pools never overlap, addresses are never given twice.
func TestDockerIPAM(t *testing.T) {
	w := newDockerWorld(t)
	w.cli(t, "network", "create", "-d", w.driver, "--ipam-driver", w.driver, "web")
	w.daemon.MustCLI("network", "create", "cli")
	id := strings.TrimSpace(w.cli(t, "network", "inspect", "-f", "{{.Id}}", "web"))
	var subnets []netip.Prefix
	for _, name := range []string{dockerdriver.NetworkName(id), "cli", "bridge"} {
		n, err := w.daemon.Client.Network(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		subnets = append(subnets, netip.MustParsePrefix(n.IPAM.Config[0].Subnet))
	}
	for i := range subnets {
		for j := range i {
			if subnets[i].Overlaps(subnets[j]) {
				t.Errorf("subnets overlap: %v", subnets)
			}
		}
	}
	web := subnets[0]
	c1 := w.docker.Run(t, "c1", "--network", "web")
	want := web.Addr().Next().Next() // .1 is the gateway
	if a := w.docker.ContainerAddr(t, "c1", "web"); a != want {
		t.Errorf("c1 got %s, want %s", a, want)
	}
	w.docker.Run(t, "c2", "--network", "web")
	a2 := w.docker.ContainerAddr(t, "c2", "web")
	ns := testnet.NewNS(t, "x")
	ep, err := w.daemon.Client.CreateEndpoint(context.Background(), api.CreateEndpointRequest{Network: id, NetNS: ns.Path})
	if err != nil || a2 == want || ep.IP == want || ep.IP == a2 || !web.Contains(a2) {
		t.Errorf("addresses on Docker's network: c1 %s, c2 %s, an endpoint made with the CLI %s (%v): want three different ones", want, a2, ep.IP, err)
	}
	c1.EchoServer(t, 7100)
	if c, err := dialEcho(ns, netip.AddrPortFrom(want, 7100)); err != nil {
		t.Errorf("CLI endpoint → c1: %v", err)
	} else {
		c.Close()
	}
}
