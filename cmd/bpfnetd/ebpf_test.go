package main

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/bpfnet/bpfnet/bpf"
	"github.com/bpfnet/bpfnet/internal/testnet"
	"github.com/bpfnet/bpfnet/loader"
)

// echoServer accepts TCP connections in ns on port and echoes lines.
var pingSummary = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

// A daemon restart does not interrupt enforcement or traffic: a 10 ms
// ping and an open TCP connection between two containers lose nothing,
// and a forbidden flow stays forbidden while the daemon is down and
// while it starts.
func TestEBPFRestart(t *testing.T) {
	for _, mode := range []string{"tcx", "tc"} {
		t.Run(mode, func(t *testing.T) {
			topo := testnet.NewTopology(t)
			d := testnet.NewDaemon(t, topo.Host, "--datapath=ebpf", "--tc-attach="+mode)
			// A lossless restart needs pins that outlive the daemon: a bpffs
			// of the host's (here the test's) mount namespace.
			d.PinBPFFS()
			d.Start()
			c1, c2, c3 := testnet.NewNS(t, "c1"), testnet.NewNS(t, "c2"), testnet.NewNS(t, "c3")
			d.MustCLI("network", "create", "--subnet", "198.18.1.0/24", "web")
			d.MustCLI("network", "create", "--subnet", "198.18.2.0/24", "other")
			d.MustCLI("endpoint", "create", "--network", "web", "--netns", c1.Path, "--name", "c1")
			d.MustCLI("endpoint", "create", "--network", "web", "--netns", c2.Path, "--name", "c2")
			d.MustCLI("endpoint", "create", "--network", "other", "--netns", c3.Path, "--name", "c3")
			c2addr, c3addr := mustAddr(t, d, "c2"), mustAddr(t, d, "c3")
			c3.Serve(t)
			c2.EchoServer(t, 7100)
			var conn net.Conn
			if err := c1.Do(func() (err error) { conn, err = net.Dial("tcp4", netip.AddrPortFrom(c2addr, 7100).String()); return }); err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			r := bufio.NewReader(conn)
			if err := testnet.RoundTrip(conn, r, "before"); err != nil {
				t.Fatal(err)
			}
			before := d.MustCLI("status", "--format", "json")

			// 10 ms ping for the whole stop/start, and a forbidden flow
			// probed all along.
			ping := exec.Command("ip", "netns", "exec", c1.Name, "ping", "-n", "-i", "0.01", "-c", "400", "-W", "1", c2addr.String())
			var pingOut strings.Builder
			ping.Stdout = &pingOut
			if err := ping.Start(); err != nil {
				t.Fatal(err)
			}
			stop := make(chan struct{})
			var leaks []string
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := c1.UDP(c3addr, 200*time.Millisecond); err == nil {
						leaks = append(leaks, time.Now().Format(time.StampMilli))
					}
				}
			}()
			bridge := strings.TrimSpace(d.MustCLI("network", "inspect", "web", "--format", "{{.Bridge}}"))
			time.Sleep(500 * time.Millisecond)
			d.Stop()
			// Earlier builds had a program on each bridge's egress
			// (to_network); the upgraded daemon's start removes it.
			attachAsEarlierBuild(t, d.BPFFS, topo.Host, bridge, mode)
			time.Sleep(time.Second) // no daemon at all
			if err := testnet.RoundTrip(conn, r, "daemon stopped"); err != nil {
				t.Errorf("TCP with the daemon stopped: %v", err)
			}
			d.Start()
			if err := ping.Wait(); err != nil {
				t.Errorf("ping: %v\n%s", err, pingOut.String())
			}
			close(stop)
			wg.Wait()
			m := pingSummary.FindStringSubmatch(pingOut.String())
			if m == nil || m[1] != m[2] || m[1] != "400" {
				t.Errorf("ping lost packets across the restart:\n%s", pingOut.String())
			}
			if len(leaks) > 0 {
				t.Errorf("forbidden flow c1 → c3 answered during the restart at %v", leaks)
			}
			if err := testnet.RoundTrip(conn, r, "after"); err != nil {
				t.Errorf("TCP connection after restart: %v", err)
			}
			if _, err := c1.UDP(c3addr, time.Second); err == nil {
				t.Errorf("c1 → c3 allowed after restart")
			}
			if tcxPrograms(t, topo.Host, bridge, ebpf.AttachTCXEgress) != 0 || strings.Contains(topo.Host.MustRun(t, "tc", "filter", "show", "dev", bridge, "egress"), "bpfnet_") {
				t.Errorf("the earlier build's program is still on %s's egress", bridge)
			}
			if _, err := os.Stat(filepath.Join(d.BPFFS, "links", bridge+":egress")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the earlier build's pin of %s is still there (%v)", bridge, err)
			}
			after := d.MustCLI("status", "--format", "json")
			if strings.Count(after, `"Mode": "`+mode+`"`) != strings.Count(before, `"Mode": "`+mode+`"`) || !strings.Contains(after, `"Attach": "`+mode+`"`) {
				t.Errorf("attachments changed mode across restart:\nbefore %s\nafter %s", before, after)
			}
		})
	}
}

// attachAsEarlierBuild attaches a program named to_network to a bridge's
// egress as bpfnet builds before the bridge lost its program did: a TCX
// link pinned under the bpffs root, or a bpfnet tc filter.
func attachAsEarlierBuild(t *testing.T, root string, host *testnet.NS, bridge, mode string) {
	t.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "to_network", Type: ebpf.SchedCLS, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()}}) // TC_ACT_UNSPEC: no verdict
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	err = host.Do(func() error {
		l, err := netlink.LinkByName(bridge)
		if err != nil {
			return err
		}
		att := &loader.Attacher{Root: root, Mode: mode}
		_, err = att.Attach(loader.Iface{Name: bridge, Index: l.Attrs().Index}, loader.Egress, prog)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// tcxPrograms lists the programs attached with TCX to an interface hook
// of ns, read with BPF_PROG_QUERY.
func tcxPrograms(t *testing.T, ns *testnet.NS, ifname string, at ebpf.AttachType) int {
	var n int
	err := ns.Do(func() error {
		l, err := netlink.LinkByName(ifname)
		if err != nil {
			return err
		}
		res, err := link.QueryPrograms(link.QueryOptions{Target: l.Attrs().Index, Attach: at})
		if err != nil {
			return err
		}
		n = len(res.Programs)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// --cleanup and a switch to the iptables datapath remove every program,
// pin and rule of the eBPF datapath, and never a qdisc or filter of
// someone else.
func TestEBPFCleanupAndSwitch(t *testing.T) {
	topo := testnet.NewTopology(t)
	h := topo.Host
	pristine := testnet.HostState(t, h)
	// Someone else's clsact qdisc and filter on the uplink.
	h.MustRun(t, "tc", "qdisc", "add", "dev", testnet.UplinkIf, "clsact")
	h.MustRun(t, "tc", "filter", "add", "dev", testnet.UplinkIf, "ingress", "prio", "7", "u32", "match", "u32", "0", "0")
	foreign := h.MustRun(t, "tc", "filter", "show", "dev", testnet.UplinkIf, "ingress")

	for _, mode := range []string{"tc", "tcx"} {
		d := testnet.NewDaemon(t, h, "--datapath=ebpf", "--tc-attach="+mode)
		d.PinBPFFS() // pins the test can see and that outlive the daemon, as on a host with a bpffs
		d.Start()
		c1 := testnet.NewNS(t, "c1")
		d.MustCLI("endpoint", "create", "--network", "bridge", "--netns", c1.Path, "--name", "c1")
		if mode == "tcx" && tcxPrograms(t, h, testnet.UplinkIf, ebpf.AttachTCXIngress) != 1 {
			t.Errorf("tcx: want 1 program on the uplink")
		}
		if mode == "tc" && !strings.Contains(h.MustRun(t, "tc", "filter", "show", "dev", testnet.UplinkIf, "ingress"), "bpfnet_from_uplink") {
			t.Errorf("tc: no bpfnet filter on the uplink")
		}
		d.Stop()
		if out, err := d.RunOnce("--cleanup"); err != nil {
			t.Fatalf("%s: --cleanup: %v\n%s", mode, err, out)
		}
		if got := testnet.HostState(t, h); got != pristine {
			t.Errorf("%s: --cleanup left the host changed:\n%s", mode, testnet.DiffLines(pristine, got))
		}
		if got := h.MustRun(t, "tc", "filter", "show", "dev", testnet.UplinkIf, "ingress"); got != foreign {
			t.Errorf("%s: uplink filters after cleanup:\n%s\nwant only the foreign one:\n%s", mode, got, foreign)
		}
		if n := tcxPrograms(t, h, testnet.UplinkIf, ebpf.AttachTCXIngress); n != 0 {
			t.Errorf("%s: %d TCX programs left on the uplink", mode, n)
		}
		if _, err := os.Stat(d.BPFFS); !os.IsNotExist(err) {
			t.Errorf("%s: pins left in %s", mode, d.BPFFS)
		}
	}

	// eBPF, then the same state with --datapath=iptables: the programs go,
	// the rules come, the networks stay.
	d := testnet.NewDaemon(t, h, "--datapath=ebpf")
	d.PinBPFFS() // programs that outlive the daemon, which the switch must remove
	d.Start()
	c1 := testnet.NewNS(t, "c1")
	d.MustCLI("endpoint", "create", "--network", "bridge", "--netns", c1.Path, "--name", "c1")
	host := mustEndpoint(t, d, "c1").HostIf
	d.Stop()
	d.Args = []string{"--datapath=iptables"}
	d.Start()
	for _, hook := range []struct {
		ifname string
		at     ebpf.AttachType
	}{{testnet.UplinkIf, ebpf.AttachTCXIngress}, {host, ebpf.AttachTCXIngress}, {host, ebpf.AttachTCXEgress}, {"bpfnet0", ebpf.AttachTCXEgress}} {
		if n := tcxPrograms(t, h, hook.ifname, hook.at); n != 0 {
			t.Errorf("after switching to iptables: %d programs on %s %v", n, hook.ifname, hook.at)
		}
	}
	if _, err := os.Stat(d.BPFFS); !os.IsNotExist(err) {
		t.Errorf("pins left in %s after switching to iptables", d.BPFFS)
	}
	if save := h.MustRun(t, "iptables-save"); !strings.Contains(save, "-A BPFNET-ISOLATION-STAGE-1 -i bpfnet0") || strings.Contains(save, "0x200000") {
		t.Errorf("iptables mode rules wrong after the switch:\n%s", save)
	}
	if st := d.MustCLI("status"); !strings.Contains(st, "Datapath:        iptables") && !strings.Contains(st, "iptables") {
		t.Errorf("status: %s", st)
	}
}

// With CAP_BPF and CAP_SYS_ADMIN removed from its bounding set, the
// daemon's bpf() calls fail as on a kernel without BPF: auto selects
// iptables and says why. (Creating endpoints needs CAP_SYS_ADMIN to enter
// container namespaces, so the full table runs in the conformance suite's
// auto-without-bpf variant, where seccomp makes bpf() fail instead.)
func TestAutoWithoutCapabilities(t *testing.T) {
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Fatalf("setpriv (util-linux) is needed: %v", err)
	}
	topo := testnet.NewTopology(t)
	d := testnet.NewDaemon(t, topo.Host, "--datapath=auto")
	d.Wrap = []string{"setpriv", "--bounding-set=-bpf,-sys_admin", "--inh-caps=-bpf,-sys_admin", "--"}
	d.Start()
	st, err := d.Client.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Datapath != "iptables" || !strings.Contains(st.DatapathReason, "operation not permitted") {
		t.Errorf("datapath %q because %q; want iptables because bpf() is not permitted", st.Datapath, st.DatapathReason)
	}
	if !strings.Contains(d.Log(), "eBPF datapath not available, using iptables") {
		t.Errorf("the log does not say why:\n%s", d.Log())
	}
	d.MustCLI("network", "create", "--subnet", "198.18.1.0/24", "-o", "com.docker.network.bridge.enable_icc=false", "quiet")
	if save := topo.Host.MustRun(t, "iptables-save"); !strings.Contains(save, "-A BPFNET -i br-") && !strings.Contains(save, "-j DROP") {
		t.Errorf("no iptables rules for the network:\n%s", save)
	}
}

// Anti-spoofing with real traffic: a container that adds an address and
// sends from it, or sends VLAN-tagged frames, reaches nobody, and the
// drops are counted as spoof and malformed.
func TestAntiSpoofing(t *testing.T) {
	topo := testnet.NewTopology(t)
	d := testnet.NewDaemon(t, topo.Host, "--datapath=ebpf")
	d.PinBPFFS() // the test reads the drops map
	d.Start()
	c1, c2 := testnet.NewNS(t, "c1"), testnet.NewNS(t, "c2")
	d.MustCLI("network", "create", "--subnet", "198.18.1.0/24", "web")
	d.MustCLI("endpoint", "create", "--network", "web", "--netns", c1.Path, "--name", "c1", "--ip", "198.18.1.10")
	d.MustCLI("endpoint", "create", "--network", "web", "--netns", c2.Path, "--name", "c2", "--ip", "198.18.1.20")
	c2.Serve(t)
	topo.Outside.Serve(t)
	c2addr := netip.MustParseAddr("198.18.1.20")
	if _, err := c1.TCP(c2addr, 3*time.Second); err != nil {
		t.Fatalf("c1 → c2 with its own address: %v", err)
	}
	// An extra address in c1's subnet, used as the source.
	c1.MustRun(t, "ip", "addr", "add", "198.18.1.99/24", "dev", "eth0")
	for _, dst := range []string{"198.18.1.20", testnet.OutsideAddr.String(), testnet.UplinkAddr.String()} {
		out, err := c1.Run("ping", "-n", "-c", "2", "-W", "1", "-I", "198.18.1.99", dst)
		if err == nil {
			t.Errorf("ping from a spoofed source to %s answered:\n%s", dst, out)
		}
	}
	// c1's counters, read from the pinned map.
	hostIf := mustEndpoint(t, d, "c1").HostIf
	spoofs := func() (spoof, malformed uint64) {
		return pinnedDrops(t, d, topo.Host, hostIf, bpf.BpfnetDropReasonREASON_SPOOF), pinnedDrops(t, d, topo.Host, hostIf, bpf.BpfnetDropReasonREASON_MALFORMED)
	}
	// Each ping, or the ARP request for its next hop claiming the foreign
	// address, is dropped; which of the two depends on c1's ARP cache.
	if spoof, _ := spoofs(); spoof < 3 {
		t.Errorf("spoof drops = %d after pings to 3 destinations from a foreign address, want at least 3", spoof)
	}
	// Two raw frames through a packet socket: one VLAN-tagged, one with
	// a neighbour's source MAC.
	c1mac, _ := net.ParseMAC(mustEndpoint(t, d, "c1").MAC)
	c2mac, _ := net.ParseMAC(mustEndpoint(t, d, "c2").MAC)
	payload := make([]byte, 46)
	tagged := append(append(append([]byte{}, c2mac...), c1mac...), 0x81, 0x00, 0x00, 0x07, 0x08, 0x00)
	forged := append(append(append([]byte{}, c2mac...), c2mac...), 0x08, 0x00)
	// The foreign address goes, and so do c1's ARP retries claiming it,
	// which would otherwise count among the raw frames' drops: until the
	// counters stand still.
	c1.MustRun(t, "ip", "addr", "del", "198.18.1.99/24", "dev", "eth0")
	c1.MustRun(t, "ip", "neigh", "flush", "dev", "eth0")
	quietFor(t, time.Second, func() float64 { s, m := spoofs(); return float64(s + m) })
	s0, m0 := spoofs()
	sendRaw(t, c1, "eth0", append(tagged, payload...), append(forged, payload...))
	s1, m1 := spoofs()
	for deadline := time.Now().Add(5 * time.Second); (s1 == s0 || m1 == m0) && time.Now().Before(deadline); s1, m1 = spoofs() {
		time.Sleep(20 * time.Millisecond)
	}
	if s1-s0 != 1 || m1-m0 != 1 {
		t.Errorf("raw frames: spoof +%d, malformed +%d; want +1 each", s1-s0, m1-m0)
	}
	if _, err := c1.TCP(c2addr, 3*time.Second); err != nil {
		t.Errorf("c1 → c2 from its own address after the spoofing: %v", err)
	}
}

// sendRaw sends Ethernet frames as they are out of ifname in ns.
func sendRaw(t *testing.T, ns *testnet.NS, ifname string, frames ...[]byte) {
	err := ns.Do(func() error {
		l, err := netlink.LinkByName(ifname)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		for _, f := range frames {
			if err := unix.Sendto(fd, f, 0, &unix.SockaddrLinklayer{Ifindex: l.Attrs().Index, Halen: 6}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// pinnedDrops reads the drops of one reason at an endpoint's veth (from
// the container) from the daemon's pinned drops map.
func pinnedDrops(t *testing.T, d *testnet.Daemon, host *testnet.NS, hostIf string, reason bpf.BpfnetDropReason) uint64 {
	t.Helper()
	m, err := ebpf.LoadPinnedMap(d.BPFFS+"/maps/drops", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var ifindex int
	if err := host.Do(func() error {
		l, err := netlink.LinkByName(hostIf)
		if err == nil {
			ifindex = l.Attrs().Index
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var per []bpf.BpfnetDropCounts
	if err := m.Lookup(bpf.BpfnetDropKey{Ifindex: uint32(ifindex), Dir: uint32(bpf.BpfnetDirectionDIR_FROM_CONTAINER)}, &per); err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, c := range per {
		n += c.Packets[reason]
	}
	return n
}

// The eBPF datapath turns forwarding on as Docker does: on a host that did
// not forward, with a FORWARD policy of DROP (so the host does not start
// forwarding between its other interfaces), and its one accept rule goes
// after the rules already there (the user's, ufw's, DOCKER-USER's judge
// first). --cleanup restores both. A host that forwards keeps its policy.
func TestForwardingLikeDocker(t *testing.T) {
	for _, forwarding := range []string{"0", "1"} {
		t.Run("ip_forward="+forwarding, func(t *testing.T) {
			topo := testnet.NewTopology(t)
			h := topo.Host
			h.MustRun(t, "sysctl", "-qw", "net.ipv4.ip_forward="+forwarding)
			h.MustRun(t, "iptables", "-A", "FORWARD", "-s", "203.0.113.0/24", "-j", "DROP")
			d := testnet.NewDaemon(t, h, "--datapath=ebpf")
			d.Start()
			rules := strings.Split(strings.TrimSpace(h.MustRun(t, "iptables", "-S", "FORWARD")), "\n")
			policy := "-P FORWARD ACCEPT"
			if forwarding == "0" {
				policy = "-P FORWARD DROP"
			}
			if len(rules) != 3 || rules[0] != policy || rules[1] != "-A FORWARD -s 203.0.113.0/24 -j DROP" ||
				!strings.HasPrefix(rules[2], "-A FORWARD -m mark --mark 0x200000/0x200000") {
				t.Errorf("FORWARD:\n%s\nwant %q, the user's rule, then bpfnet's", strings.Join(rules, "\n"), policy)
			}
			if got := strings.TrimSpace(h.MustRun(t, "sysctl", "-n", "net.ipv4.ip_forward")); got != "1" {
				t.Errorf("ip_forward = %s, want 1", got)
			}
			d.Stop()
			if out, err := d.RunOnce("--cleanup"); err != nil {
				t.Fatalf("--cleanup: %v\n%s", err, out)
			}
			after := strings.TrimSpace(h.MustRun(t, "iptables", "-S", "FORWARD"))
			if after != "-P FORWARD ACCEPT\n-A FORWARD -s 203.0.113.0/24 -j DROP" {
				t.Errorf("FORWARD after cleanup:\n%s", after)
			}
			if got := strings.TrimSpace(h.MustRun(t, "sysctl", "-n", "net.ipv4.ip_forward")); got != forwarding {
				t.Errorf("ip_forward = %s after cleanup, was %s", got, forwarding)
			}
		})
	}
}
