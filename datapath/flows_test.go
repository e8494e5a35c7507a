package datapath

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/bpfnet/bpfnet/bpf"
)

// Program-level tests of the flow tables (issue "Datapath security"):
// ports, pairs, quotas, collection. Each names the item it shows.

// nat is the connection and translation tables of the world's
// collection, for what the control plane does to them (collection, purge).
func (w *world) nat() *natTable {
	return &natTable{log: slog.New(slog.NewTextHandler(io.Discard, nil)), coll: w.coll}
}

// flowCharge is what the endpoint behind ep is charged in the tables.
func (w *world) flowCharge(t *testing.T, ep string) uint32 {
	t.Helper()
	var n uint32
	must(t, w.coll.EpFlows.Lookup(w.eps[ep].slot, &n))
	return n
}

// tables counts the entries of nat_fwd, nat_rev and conntrack, and checks
// that every forward half has its reply half translating back to it.
func (w *world) tables(t *testing.T) (fwd, rev, ct int) {
	t.Helper()
	var k bpf.BpfnetTuple
	var v bpf.BpfnetNatEntry
	it := w.coll.NatFwd.Iterate()
	for it.Next(&k, &v) {
		fwd++
		r := replyOfTuple(bpf.BpfnetTuple{Saddr: v.Addr, Daddr: k.Daddr, Sport: v.Port, Dport: k.Dport, Proto: k.Proto})
		if v.Flags&uint32(bpf.BpfnetNatFlagNAT_F_SELF) != 0 {
			r.Saddr = k.Saddr
		}
		var rv bpf.BpfnetNatEntry
		if err := w.coll.NatRev.Lookup(r, &rv); err != nil || rv.Addr != k.Saddr || rv.Port != k.Sport {
			t.Errorf("forward half %+v has no reply half of its own (%v, %+v)", k, err, rv)
		}
	}
	must(t, it.Err())
	it = w.coll.NatRev.Iterate()
	for it.Next(&k, &v) {
		rev++
	}
	var ce bpf.BpfnetCtEntry
	cit := w.coll.Conntrack.Iterate()
	for cit.Next(&k, &ce) {
		ct++
	}
	return fwd, rev, ct
}

// replyOfTuple is reply_of() of nat.h, written out: the reply to a flow
// swaps addresses and ports (ICMP: the identifier stays the source's).
func replyOfTuple(k bpf.BpfnetTuple) bpf.BpfnetTuple {
	r := bpf.BpfnetTuple{Saddr: k.Daddr, Daddr: k.Saddr, Proto: k.Proto}
	if k.Proto == unix.IPPROTO_ICMP {
		r.Sport = k.Sport
	} else {
		r.Sport, r.Dport = k.Dport, k.Sport
	}
	return r
}

// Item 2: containers never get a port of the host's ephemeral range nor a
// port published on the address; when the host's own flow meets a
// container's translation of the same tuple, the host's wins; a packet
// the host sends from a published port records no flow.
func TestHostFlowsWin(t *testing.T) {
	w := newWorld(t, map[string]any{"nat_skip_min": uint16(32768), "nat_skip_max": uint16(60999)})
	for i := range 50 {
		_, out := w.outbound(t, w.from(t, "e1", outsideAddr, udp(uint16(40000+i), 53)))
		if p := srcPort(out); p >= 32768 && p <= 60999 || p < 1024 {
			t.Fatalf("container flow from 40000+%d translated to port %d, in the host's ephemeral range or below 1024", i, p)
		}
	}
	w.publish(t, "e2", pm("tcp", "0.0.0.0", 1500, 80), gw1)
	if _, out := w.outbound(t, w.from(t, "e1", outsideAddr, tcp(1500, 80))); srcPort(out) == 1500 {
		t.Errorf("a container was given port 1500, published on the address")
	}
	// e1 holds uplink:20000 ↔ outside:80; then the host uses that tuple.
	if _, out := w.outbound(t, w.from(t, "e1", outsideAddr, tcp(20000, 80))); srcPort(out) != 20000 {
		t.Fatalf("e1 did not keep its port 20000: %d", srcPort(out))
	}
	host := ipFrame(t, uplinkAddr, outsideAddr, tcp(20000, 80))
	if ret, out := w.outbound(t, host); ret != actUnspc || !bytes.Equal(out, host) {
		t.Fatalf("the host's packet was changed or refused (%d)", ret)
	}
	reply := outsideFrame(t, outsideAddr, uplinkAddr, tcpSynAck(80, 20000))
	if ret, _, out := w.runData(t, w.coll.FromUplink, w.uplink, reply); ret != actUnspc || !bytes.Equal(out, reply) {
		t.Errorf("the reply to the host's flow went elsewhere (return %d, changed %v)", ret, !bytes.Equal(out, reply))
	}
	if _, out := w.outbound(t, w.from(t, "e1", outsideAddr, tcpAck(20000, 80))); srcPort(out) == 20000 {
		t.Errorf("e1 still uses the host's tuple")
	}
	// What the host sends from a published port (its RST to a packet of a
	// connection that is gone) is no flow of its own: the peer's next
	// connection from that port is e2's (it was sent to the host for the
	// RST's 10 s).
	rst := ipFrame(t, uplinkAddr, outsideAddr, l4{proto: "tcp", sport: 1500, dport: 41000, rst: true, ack: true})
	if ret, out := w.outbound(t, rst); ret != actUnspc || !bytes.Equal(out, rst) {
		t.Fatalf("the host's RST was changed or refused (%d)", ret)
	}
	want := w.routed(t, "e2", outsideAddr, w.eps["e2"].ip, tcp(41000, 80))
	w.redirected(t, w.coll.FromUplink, w.uplink, outsideFrame(t, outsideAddr, uplinkAddr, tcp(41000, 1500)), want, w.eps["e2"])
}

// Item 3: a container's datagram to a host address and a published port
// that answers a connected socket of the host's is the host's; only new
// connections are hairpinned.
func TestHairpinOnlyNewConnections(t *testing.T) {
	w := newWorld(t, nil)
	e1 := w.eps["e1"]
	w.publish(t, "e2", pm("udp", "0.0.0.0", 5353, 53), gw1)
	w.publish(t, "e2", pm("tcp", "0.0.0.0", 8080, 80), gw1)
	w.ns.MustRun(t, "ip", "addr", "add", gw1+"/24", "dev", "br-n1")
	w.ns.MustRun(t, "ip", "link", "set", "br-n1", "up")
	// The host talks to e1 from its port 5353 (a connected UDP socket).
	var conn *net.UDPConn
	must(t, w.ns.Do(func() error {
		var err error
		conn, err = net.DialUDP("udp4", &net.UDPAddr{Port: 5353}, &net.UDPAddr{IP: net.ParseIP(e1.ip), Port: 40000})
		return err
	}))
	defer conn.Close()
	if ret, _ := w.run(t, w.coll.FromContainer, e1.ifindex, w.from(t, "e1", gw1, udp(40000, 5353))); ret != actOK {
		t.Errorf("e1's answer to the host's socket: return %d, want TC_ACT_OK (to the host)", ret)
	}
	if ret, _ := w.run(t, w.coll.FromContainer, e1.ifindex, w.from(t, "e1", gw1, tcpSynAck(40000, 8080))); ret != actOK {
		t.Errorf("e1's SYN-ACK to the host: return %d, want TC_ACT_OK (to the host)", ret)
	}
	if fwd, _, _ := w.tables(t); fwd != 0 {
		t.Errorf("%d published-port connections opened by answers", fwd)
	}
	// A new datagram from another port is a connection to e2's port.
	if ret, _ := w.run(t, w.coll.FromContainer, e1.ifindex, w.from(t, "e1", gw1, udp(40001, 5353))); ret != actRedirect {
		t.Errorf("e1's new datagram to the published port: return %d, want TC_ACT_REDIRECT", ret)
	}
}

// Item 5: removing an endpoint removes every translation, connection and
// tracked flow that refers to it, and their charges.
func TestPurgeEndpoint(t *testing.T) {
	w := newWorld(t, nil)
	e1, e2 := w.eps["e1"], w.eps["e2"]
	w.publish(t, "e1", pm("tcp", "0.0.0.0", 8080, 80), gw1)
	w.publish(t, "e1", pm("udp", "0.0.0.0", 5353, 53), gw1)
	out := w.from(t, "e1", outsideAddr, udp(40100, 53))
	w.run(t, w.coll.FromContainer, e1.ifindex, out)
	w.outbound(t, out)
	w.run(t, w.coll.FromUplink, w.uplink, outsideFrame(t, outsideAddr, uplinkAddr, tcp(41000, 8080)))
	w.run(t, w.coll.FromUplink, w.uplink, outsideFrame(t, outsideAddr, uplinkAddr, udp(41001, 5353)))
	w.run(t, w.coll.FromContainer, e2.ifindex, w.from(t, "e2", gw1, tcp(42000, 8080)))
	// e2's own flow, which stays.
	other := w.from(t, "e2", outsideAddr, udp(40200, 53))
	w.run(t, w.coll.FromContainer, e2.ifindex, other)
	w.outbound(t, other)
	fwd, rev, ct := w.tables(t)
	if fwd != 5 || rev != 5 || ct != 2 {
		t.Fatalf("before: %d forward, %d reply halves, %d tracked flows; want 5, 5, 2", fwd, rev, ct)
	}
	// As the enforcer removes an endpoint: its ports and entries first.
	var pk bpf.BpfnetPortKey
	var pb bpf.BpfnetPortBackend
	for it := w.coll.Ports.Iterate(); it.Next(&pk, &pb); {
		must(t, w.coll.Ports.Delete(pk))
	}
	must(t, w.nat().purge(netip.MustParseAddr(e1.ip), netip.Addr{}))
	fwd, rev, ct = w.tables(t)
	if fwd != 1 || rev != 1 || ct != 1 {
		t.Errorf("after: %d forward, %d reply halves, %d tracked flows; want e2's 1, 1, 1", fwd, rev, ct)
	}
	if n := w.flowCharge(t, "e1"); n != 0 {
		t.Errorf("e1 still charged %d entries", n)
	}
	if n := w.flowCharge(t, "e2"); n != 2 {
		t.Errorf("e2 charged %d entries, want 2 (its flow and its translation)", n)
	}
	var n uint32
	if err := w.coll.RemoteFlows.Lookup(be32(netip.MustParseAddr(outsideAddr)), &n); err == nil && n != 0 {
		t.Errorf("the remote still charged %d connections", n)
	}
	// A UDP peer that keeps sending finds nothing to follow the address.
	if ret, _ := w.run(t, w.coll.FromUplink, w.uplink, outsideFrame(t, outsideAddr, uplinkAddr, udp(41001, 5353))); ret == actRedirect {
		t.Errorf("the removed endpoint's port connection was delivered")
	}
}

// Item 7: one endpoint, or one remote source, cannot hold more than its
// quota of the tables; a full table refuses new flows and keeps the live
// ones (an LRU would have evicted them).
func TestFlowQuotas(t *testing.T) {
	t.Run("per endpoint", func(t *testing.T) {
		w := newWorld(t, map[string]any{"flows_per_endpoint": uint32(6)})
		e1 := w.eps["e1"]
		open := func(ep string, sport uint16) (uint32, uint32) {
			p := w.from(t, ep, outsideAddr, udp(sport, 53))
			r1, _ := w.run(t, w.coll.FromContainer, w.eps[ep].ifindex, p)
			if r1 != actOK {
				return r1, 0
			}
			r2, _ := w.outbound(t, p)
			return r1, r2
		}
		for i := range 3 { // a tracked flow and a translation each
			if r1, r2 := open("e1", uint16(40000+i)); r1 != actOK || r2 != actUnspc {
				t.Fatalf("flow %d refused (%d, %d)", i, r1, r2)
			}
		}
		before := w.counters(t, e1.ifindex, fromC)
		if r1, _ := open("e1", 40003); r1 != actShot {
			t.Errorf("a fourth flow: return %d, want TC_ACT_SHOT", r1)
		}
		if d := w.counters(t, e1.ifindex, fromC).Drops[flowLimit] - before.Drops[flowLimit]; d != 1 {
			t.Errorf("flow_limit drops +%d, want +1", d)
		}
		if r1, r2 := open("e2", 40000); r1 != actOK || r2 != actUnspc {
			t.Errorf("e2's flow refused (%d, %d): the quota is e1's", r1, r2)
		}
		if n := w.flowCharge(t, "e1"); n != 6 {
			t.Errorf("e1 charged %d, want 6", n)
		}
	})
	t.Run("per remote source", func(t *testing.T) {
		w := newWorld(t, map[string]any{"flows_per_remote": uint32(2)})
		w.publish(t, "e1", pm("tcp", "0.0.0.0", 8080, 80), gw1)
		for i := range 2 {
			if ret, _ := w.run(t, w.coll.FromUplink, w.uplink, outsideFrame(t, outsideAddr, uplinkAddr, tcp(uint16(41000+i), 8080))); ret != actRedirect {
				t.Fatalf("connection %d refused (%d)", i, ret)
			}
		}
		w.expect(t, w.coll.FromUplink, w.uplink, w.eps["e1"].ifindex, toC, false, outsideFrame(t, outsideAddr, uplinkAddr, tcp(41002, 8080)), flowLimit)
		if ret, _ := w.run(t, w.coll.FromUplink, w.uplink, outsideFrame(t, "198.19.0.9", uplinkAddr, tcp(41002, 8080))); ret != actRedirect {
			t.Errorf("another remote refused (%d)", ret)
		}
	})
	t.Run("full table", func(t *testing.T) {
		w := newWorldSized(t, nil, map[string]uint32{"nat_fwd": 4, "nat_rev": 4, "conntrack": 64})
		for i := range 4 {
			if ret, _ := w.outbound(t, w.from(t, "e1", outsideAddr, udp(uint16(40000+i), 53))); ret != actUnspc {
				t.Fatalf("flow %d refused (%d)", i, ret)
			}
		}
		if ret, _ := w.outbound(t, w.from(t, "e2", outsideAddr, udp(40000, 53))); ret != actShot {
			t.Errorf("a fifth translation in a table of 4: return %d, want TC_ACT_SHOT", ret)
		}
		w.run(t, w.coll.FromContainer, w.eps["e1"].ifindex, w.from(t, "e1", outsideAddr, udp(40000, 53)))
		if ret, _ := w.run(t, w.coll.FromUplink, w.uplink, outsideFrame(t, outsideAddr, uplinkAddr, udp(53, 40000))); ret != actRedirect {
			t.Errorf("the first flow's reply after the table filled: return %d, want TC_ACT_REDIRECT (nothing evicted)", ret)
		}
	})
}

// Item 11: protocols without ports are translated by address, one flow
// per remote and protocol, both ways; never half.
func TestAddressOnlyTranslation(t *testing.T) {
	w := newWorld(t, nil)
	e1 := w.eps["e1"]
	gre := l4{proto: "gre"}
	sent := w.from(t, "e1", outsideAddr, gre)
	w.run(t, w.coll.FromContainer, e1.ifindex, sent)
	ret, out := w.outbound(t, sent)
	want := serialize(t, append([]gopacket.SerializableLayer{eth(mac(e1.mac), hostMAC, layers.EthernetTypeIPv4)}, ipPacket(t, uplinkAddr, outsideAddr, gre)...)...)
	if ret != actUnspc || !bytes.Equal(out, want) {
		t.Fatalf("outbound GRE: return %d\n got %x\nwant %x", ret, out, want)
	}
	reply := outsideFrame(t, outsideAddr, uplinkAddr, gre)
	in := serialize(t, append([]gopacket.SerializableLayer{eth(bridgeMAC, mac(e1.mac), layers.EthernetTypeIPv4)},
		ipPacket(t, outsideAddr, e1.ip, gre, func(ip *layers.IPv4) { ip.TTL = 63 })...)...)
	w.redirected(t, w.coll.FromUplink, w.uplink, reply, in, e1)
	// One GRE flow per remote: e2's is refused, counted.
	if ret, _ := w.outbound(t, w.from(t, "e2", outsideAddr, gre)); ret != actShot {
		t.Errorf("a second container's GRE to the same remote: return %d, want TC_ACT_SHOT", ret)
	}
	if ret, _ := w.outbound(t, w.from(t, "e2", "198.19.0.9", gre)); ret != actUnspc {
		t.Errorf("GRE to another remote refused (%d)", ret)
	}
}

// Item 12: a port is found while one is free for the destination: every
// port of a 2,048-port range is given to 2,048 flows to one peer, all from
// the same container port; the next flow finds none.
func TestAllocationUsesTheRange(t *testing.T) {
	w := newWorld(t, map[string]any{"nat_port_min": uint16(10000), "nat_port_max": uint16(12047)})
	eps := []string{"e1", "e2", "e3", "e4"}
	seen := map[uint16]bool{}
	for i := range 2048 {
		ep := eps[i%4]
		ret, out := w.outbound(t, w.from(t, ep, outsideAddr, udp(uint16(30000+i/4), 53)))
		if ret != actUnspc {
			t.Fatalf("flow %d of 2048 refused (return %d)", i+1, ret)
		}
		p := srcPort(out)
		if p < 10000 || p > 12047 || seen[p] {
			t.Fatalf("flow %d got port %d (out of range or given twice)", i+1, p)
		}
		seen[p] = true
	}
	if ret, _ := w.outbound(t, w.from(t, "e6", outsideAddr, udp(30000, 53))); ret != actUnspc {
		t.Errorf("a host_ipv4 network's flow uses its own address: refused (%d)", ret)
	}
	if ret, _ := w.outbound(t, w.from(t, "e2", outsideAddr, udp(39999, 53))); ret != actShot {
		t.Errorf("flow 2049 to the same peer: return %d, want TC_ACT_SHOT (range used up)", ret)
	}
}

// onCPU runs f on a thread pinned to cpu.
func onCPU(cpu int, f func()) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var set unix.CPUSet
	set.Set(cpu)
	unix.SchedSetaffinity(0, &set)
	f()
}

// Item 13: two CPUs translating the first packets of the same flows at
// once give each flow one translation: every forward half has its own reply
// half, there are no others, and each is charged once.
func TestConcurrentFirstPackets(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("needs two CPUs")
	}
	w := newWorld(t, nil)
	const flows = 3000
	var wg sync.WaitGroup
	for cpu := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			onCPU(cpu, func() {
				for i := range flows {
					w.outbound(t, w.from(t, "e1", outsideAddr, udp(uint16(10000+i), 53)))
				}
			})
		}()
	}
	wg.Wait()
	fwd, rev, _ := w.tables(t)
	if fwd != flows || rev != flows {
		t.Errorf("%d forward and %d reply halves for %d flows", fwd, rev, flows)
	}
	if n := w.flowCharge(t, "e1"); n != flows {
		t.Errorf("e1 charged %d for %d translations", n, flows)
	}
}

// Item 19: new connections that reuse a recently used client port to the
// same peer, while the collector runs, keep their translation: each SYN's
// SYN-ACK is translated back. One race remains, and this test, which runs
// the collector in a tight loop on the other CPU with 1 ms timeouts, is
// where it shows: the collector has judged a pair expired and is deleting
// it by key just as a SYN reuses it on another CPU (a BPF hash map has no
// conditional delete). That SYN's SYN-ACK is dropped and the client's
// retransmission (1 s later) makes a fresh pair. At most one in a
// thousand may be lost here (seen: 0 or 1 of 3,000); more means the
// collector takes pairs still in use.
func TestReusedPortsWhileCollecting(t *testing.T) {
	ms := uint64(time.Millisecond)
	// Closed with a FIN: a reset pair is removed at once (TestResetRemovesFlow)
	// and would leave the collector nothing to race.
	w := newWorld(t, map[string]any{"ct_timeout_tcp_fin": 1 * ms, "gc_grace": 5 * ms})
	e1 := w.eps["e1"]
	stop := make(chan struct{})
	var collected int
	var gcErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, err := w.nat().collectExpired()
			if err != nil {
				gcErr = err
				return
			}
			collected += n
		}
	}()
	lost := 0
	for i := range 3000 {
		sport := uint16(30000 + i%4) // four client ports, reused over and over
		syn := w.from(t, "e1", outsideAddr, tcp(sport, 80))
		w.run(t, w.coll.FromContainer, e1.ifindex, syn)
		_, out := w.outbound(t, syn)
		if ret, _ := w.run(t, w.coll.FromUplink, w.uplink, outsideFrame(t, outsideAddr, uplinkAddr, tcpSynAck(80, srcPort(out)))); ret != actRedirect {
			lost++
		}
		fin := w.from(t, "e1", outsideAddr, l4{proto: "tcp", sport: sport, dport: 80, fin: true, ack: true})
		w.outbound(t, fin)
		if i%50 == 0 {
			time.Sleep(10 * time.Millisecond) // let closed ones expire and be collected
		}
	}
	close(stop)
	<-done
	must(t, gcErr)
	if lost > 3 {
		t.Errorf("%d of 3000 connections lost their SYN-ACK", lost)
	}
	t.Logf("%d of 3000 connections lost their SYN-ACK to the collector's race", lost)
	if collected == 0 {
		t.Errorf("the collector removed nothing: the test did not race it")
	}
	t.Logf("collector removed %d entries meanwhile", collected)
}

// Item 14: the enforcer's limits are what its maps hold (a network needs
// an entry in networks, subnets and, for its gateway, host_addrs beside
// the host's other addresses; an endpoint one in each endpoint map and a
// traffic slot), so the manager refuses the network or endpoint that would
// not fit, before anything is made.
func TestLimitsFollowTheMaps(t *testing.T) {
	w := newWorldSized(t, nil, map[string]uint32{"networks": 8, "host_addrs": 1024 + 6, "ep_by_ip": 7})
	nets, eps := (&Enforcer{coll: w.coll}).Limits()
	if nets != 6 || eps != 7 {
		t.Errorf("limits %d networks, %d endpoints; want 6 (host_addrs less its 1,024 others) and 7", nets, eps)
	}
	w = newWorld(t, nil)
	nets, eps = (&Enforcer{coll: w.coll}).Limits()
	if nets != 16384 || eps != 16384 {
		t.Errorf("default limits %d networks, %d endpoints; want 16,384 each", nets, eps)
	}
}

// The tests of a flow's end share e1's TCP flow from port 40500 to the
// peer's port 80 (the translation keeps the port), and the peer's
// connection from port 41000 to e1's port 80 published as 8080.

// flowsLeft checks what the tables hold: fwd forward halves, rev reply
// halves, ct tracked flows, charged entries charged to e1 and e2; and,
// with nothing left, no connection charged to the remote.
func (w *world) flowsLeft(t *testing.T, fwd, rev, ct int, charged uint32) {
	t.Helper()
	if f, r, c := w.tables(t); f != fwd || r != rev || c != ct {
		t.Errorf("%d forward, %d reply halves, %d tracked flows; want %d, %d, %d", f, r, c, fwd, rev, ct)
	}
	if n := w.flowCharge(t, "e1") + w.flowCharge(t, "e2"); n != charged {
		t.Errorf("endpoints charged %d entries, want %d", n, charged)
	}
	var n uint32
	if err := w.coll.RemoteFlows.Lookup(be32(netip.MustParseAddr(outsideAddr)), &n); fwd == 0 && err == nil && n != 0 {
		t.Errorf("the remote still charged %d connections", n)
	}
}

// segOut runs a segment e1 sends to the peer through from_container and
// to_uplink, which must pass it, and returns it as it leaves.
func (w *world) segOut(t *testing.T, p l4) []byte {
	t.Helper()
	f := w.from(t, "e1", outsideAddr, p)
	if r1, _ := w.run(t, w.coll.FromContainer, w.eps["e1"].ifindex, f); r1 != actOK {
		t.Fatalf("e1's %+v: from_container %d", p, r1)
	}
	r2, out := w.outbound(t, f)
	if r2 != actUnspc {
		t.Fatalf("e1's %+v: to_uplink %d", p, r2)
	}
	return out
}

// segIn runs a segment from the peer through from_uplink, which must
// deliver it.
func (w *world) segIn(t *testing.T, p l4) {
	t.Helper()
	if ret, _ := w.run(t, w.coll.FromUplink, w.uplink, outsideFrame(t, outsideAddr, uplinkAddr, p)); ret != actRedirect {
		t.Fatalf("the peer's %+v not delivered (%d)", p, ret)
	}
}

// connectOut opens e1's flow: its SYN (sequence isn), the peer's SYN-ACK
// (5000), e1's ACK of 5001 (window 100).
func (w *world) connectOut(t *testing.T, isn uint32) {
	t.Helper()
	w.segOut(t, l4{proto: "tcp", sport: 40500, dport: 80, syn: true, seq: isn})
	w.segIn(t, l4{proto: "tcp", sport: 80, dport: 40500, syn: true, ack: true, seq: 5000, ackN: isn + 1})
	w.segOut(t, l4{proto: "tcp", sport: 40500, dport: 80, ack: true, seq: isn + 1, ackN: 5001, win: 100})
	w.flowsLeft(t, 1, 1, 1, 2)
}

// acceptIn opens the peer's connection to e1's published port: its SYN
// (sequence 7000), e1's SYN-ACK (9000, acknowledging 7001), which leaves
// from the published port.
func (w *world) acceptIn(t *testing.T) {
	t.Helper()
	w.publish(t, "e1", pm("tcp", "0.0.0.0", 8080, 80), gw1)
	w.segIn(t, l4{proto: "tcp", sport: 41000, dport: 8080, syn: true, seq: 7000})
	if out := w.segOut(t, l4{proto: "tcp", sport: 80, dport: 41000, syn: true, ack: true, seq: 9000, ackN: 7001}); srcPort(out) != 8080 {
		t.Fatalf("e1's SYN-ACK left from port %d", srcPort(out))
	}
	var n uint32
	must(t, w.coll.RemoteFlows.Lookup(be32(netip.MustParseAddr(outsideAddr)), &n))
	if n != 1 {
		t.Fatalf("the remote charged %d connections, want 1", n)
	}
	// The connection, and the flow e1's SYN-ACK recorded.
	w.flowsLeft(t, 1, 1, 1, 2)
}

// A reset flow holds nothing (issue 16: a remote that connects and resets
// was refused after its quota of reset flows, each held 40 s). A RST the
// container sends, or one from the other side at exactly the sequence
// number the container acknowledged last (the one its TCP accepts, RFC
// 5961 §3.2), is delivered as before and removes the flow's entries and
// charges at once. One elsewhere in the window only draws a challenge ACK
// from the container: its flow stays.
func TestResetRemovesFlow(t *testing.T) {
	t.Run("masquerade: the container resets", func(t *testing.T) {
		w := newWorld(t, nil)
		w.connectOut(t, 1000)
		out := w.segOut(t, l4{proto: "tcp", sport: 40500, dport: 80, rst: true, seq: 1001})
		if srcIP(out) != uplinkAddr || srcPort(out) != 40500 {
			t.Errorf("e1's RST left from %s port %d; want it translated to %s port 40500", srcIP(out), srcPort(out), uplinkAddr)
		}
		w.flowsLeft(t, 0, 0, 0, 0)
	})
	t.Run("masquerade: a FIN or RST of no flow starts none", func(t *testing.T) {
		// What crossed a reset on the wire, or follows one: not
		// translated (so never untranslated either), nothing recorded.
		w := newWorld(t, nil)
		for _, p := range []l4{{proto: "tcp", sport: 40501, dport: 80, fin: true, ack: true, seq: 1001, ackN: 5001},
			{proto: "tcp", sport: 40502, dport: 80, rst: true, seq: 1001}} {
			f := w.from(t, "e1", outsideAddr, p)
			if r1, _ := w.run(t, w.coll.FromContainer, w.eps["e1"].ifindex, f); r1 != actOK {
				t.Errorf("%+v: from_container %d, want TC_ACT_OK (judged at the uplink)", p, r1)
			}
			w.expect(t, w.coll.ToUplink, w.uplink, w.eps["e1"].ifindex, fromC, false, f, unsolicited)
		}
		w.flowsLeft(t, 0, 0, 0, 0)
	})
	t.Run("masquerade: the peer resets at the acknowledged sequence", func(t *testing.T) {
		w := newWorld(t, nil)
		w.connectOut(t, 1000)
		w.segIn(t, l4{proto: "tcp", sport: 80, dport: 40500, rst: true, seq: 5001})
		w.flowsLeft(t, 0, 0, 0, 0)
	})
	t.Run("masquerade: the peer resets elsewhere in the window", func(t *testing.T) {
		w := newWorld(t, nil)
		w.connectOut(t, 1000)
		w.segIn(t, l4{proto: "tcp", sport: 80, dport: 40500, rst: true, seq: 5002})
		w.flowsLeft(t, 1, 1, 1, 2)
	})
	t.Run("published port: the peer resets", func(t *testing.T) {
		w := newWorld(t, nil)
		w.acceptIn(t)
		w.segIn(t, l4{proto: "tcp", sport: 41000, dport: 8080, rst: true, seq: 7001})
		w.flowsLeft(t, 0, 0, 0, 0)
	})
	t.Run("published port: the endpoint resets", func(t *testing.T) {
		w := newWorld(t, nil)
		w.acceptIn(t)
		if out := w.segOut(t, l4{proto: "tcp", sport: 80, dport: 41000, rst: true, seq: 9001}); srcPort(out) != 8080 {
			t.Errorf("e1's RST left from port %d; want the published port 8080", srcPort(out))
		}
		w.flowsLeft(t, 0, 0, 0, 0)
	})
	t.Run("published port: a reply half left alone does not catch the next SYN", func(t *testing.T) {
		// A packet of the connection on another CPU can re-create the
		// reply half just as the pair goes (nat_refresh); as if so:
		w := newWorld(t, nil)
		w.acceptIn(t)
		out := bpf.BpfnetTuple{Saddr: be32(netip.MustParseAddr(w.eps["e1"].ip)), Daddr: be32(netip.MustParseAddr(outsideAddr)),
			Sport: port(80), Dport: port(41000), Proto: 6}
		must(t, w.coll.NatFwd.Delete(out))
		want := w.routed(t, "e1", outsideAddr, w.eps["e1"].ip, l4{proto: "tcp", sport: 41000, dport: 80, syn: true, seq: 8000})
		w.redirected(t, w.coll.FromUplink, w.uplink, outsideFrame(t, outsideAddr, uplinkAddr, l4{proto: "tcp", sport: 41000, dport: 8080, syn: true, seq: 8000}), want, w.eps["e1"])
		if f, r, _ := w.tables(t); f != 1 || r != 1 {
			t.Errorf("%d forward, %d reply halves after the new SYN; want its pair", f, r)
		}
	})
	t.Run("hairpin: either end resets", func(t *testing.T) {
		for _, resetter := range []string{"e2", "e1"} {
			w := newWorld(t, nil)
			e1, e2 := w.eps["e1"], w.eps["e2"]
			w.publish(t, "e1", pm("tcp", "0.0.0.0", 8080, 80), gw1)
			if ret, _ := w.run(t, w.coll.FromContainer, e2.ifindex, w.from(t, "e2", gw1, tcp(42000, 8080))); ret != actRedirect {
				t.Fatalf("e2's SYN to the published port: %d", ret)
			}
			synAck := w.from(t, "e1", e2.ip, l4{proto: "tcp", sport: 80, dport: 42000, syn: true, ack: true})
			if ret, _ := w.run(t, w.coll.FromContainer, e1.ifindex, synAck); ret != actRedirect {
				t.Fatalf("e1's SYN-ACK: %d", ret)
			}
			w.flowsLeft(t, 1, 1, 0, 1)
			rst := w.from(t, "e2", gw1, l4{proto: "tcp", sport: 42000, dport: 8080, rst: true})
			if resetter == "e1" {
				rst = w.from(t, "e1", e2.ip, l4{proto: "tcp", sport: 80, dport: 42000, rst: true})
			}
			if ret, _ := w.run(t, w.coll.FromContainer, w.eps[resetter].ifindex, rst); ret != actRedirect {
				t.Errorf("%s's RST not delivered (%d)", resetter, ret)
			}
			w.flowsLeft(t, 0, 0, 0, 0)
		}
	})
}

// An orderly close (RFC 9293 §3.6) holds nothing once it is over (issue
// 16: a FIN'd flow held its entries and charges 120 s and more, so one
// remote could open about 110 connections per second to published ports,
// sustained). When both sides have sent their FIN, the second
// acknowledging the first (with its data: every test segment carries 6
// bytes), the ACK of the second FIN from the side that closed first is
// delivered and removes the flow's entries and charges. A half-closed
// flow, a simultaneous close (the FINs crossed) and a FIN whose data is
// not all acknowledged keep theirs, and time out as before.
func TestClosedFlowRemoved(t *testing.T) {
	// Segments of e1's flow (e1's sequence numbers from isn + 1, the
	// peer's from 5001), with ACK, and FIN when fin.
	seg := func(fromE1 bool, seq, ack uint32, fin bool) l4 {
		if fromE1 {
			return l4{proto: "tcp", sport: 40500, dport: 80, ack: true, fin: fin, seq: seq, ackN: ack}
		}
		return l4{proto: "tcp", sport: 80, dport: 40500, ack: true, fin: fin, seq: seq, ackN: ack}
	}
	connect := func(t *testing.T, isn uint32) *world {
		w := newWorld(t, nil)
		w.connectOut(t, isn)
		return w
	}
	kept := func(t *testing.T, w *world) { t.Helper(); w.flowsLeft(t, 1, 1, 1, 2) }
	gone := func(t *testing.T, w *world) { t.Helper(); w.flowsLeft(t, 0, 0, 0, 0) }
	t.Run("e1 closes first", func(t *testing.T) {
		w := connect(t, 1000)
		w.segOut(t, seg(true, 1001, 5001, true)) // e1's FIN: 6 bytes, ends at 1008
		w.segIn(t, seg(false, 5001, 1008, true)) // the peer's FIN, acknowledging it
		kept(t, w)
		w.segOut(t, seg(true, 1008, 5007, false)) // not yet the peer's FIN (5008)
		kept(t, w)
		w.segOut(t, seg(true, 1008, 5008, false)) // the last ACK
		gone(t, w)
	})
	t.Run("an ACK from the side that closed second ends nothing", func(t *testing.T) {
		// e1's numbers above the peer's, so that the peer's ACK of e1's
		// FIN (9008) is numerically past the peer's own FIN (5008).
		w := connect(t, 9000)
		w.segOut(t, seg(true, 9001, 5001, true))
		w.segIn(t, seg(false, 5001, 9008, true))
		w.segIn(t, seg(false, 5008, 9008, false)) // the peer's duplicate ACK
		kept(t, w)
		w.segOut(t, seg(true, 9008, 5008, false))
		gone(t, w)
	})
	t.Run("the peer closes first", func(t *testing.T) {
		w := connect(t, 1000)
		w.segIn(t, seg(false, 5001, 1001, true)) // ends at 5008
		w.segOut(t, seg(true, 1001, 5008, true)) // e1's FIN, acknowledging it; ends at 1008
		kept(t, w)
		w.segIn(t, seg(false, 5008+1_000_000, 1008, false)) // out of the window: not believed
		kept(t, w)
		w.segIn(t, seg(false, 5008, 1008, false)) // the last ACK
		gone(t, w)
	})
	t.Run("half-closed, the data of a FIN unacknowledged, and a simultaneous close keep the flow", func(t *testing.T) {
		w := connect(t, 1000)
		w.segOut(t, seg(true, 1001, 5001, true))  // e1 closes its side
		w.segIn(t, seg(false, 5001, 1008, false)) // the peer still sends
		w.segOut(t, seg(true, 1008, 5007, false))
		kept(t, w)
		w = connect(t, 1000)
		w.segOut(t, seg(true, 1001, 5001, true))
		w.segIn(t, seg(false, 5001, 1002, true)) // acknowledges 1 of the FIN's 6 bytes
		w.segOut(t, seg(true, 1002, 5008, false))
		kept(t, w)
		w = connect(t, 1000)
		w.segOut(t, seg(true, 1001, 5001, true))
		w.segIn(t, seg(false, 5001, 1001, true)) // sent before e1's FIN arrived
		w.segOut(t, seg(true, 1008, 5008, false))
		w.segIn(t, seg(false, 5008, 1008, false))
		kept(t, w)
	})
	t.Run("published port: the peer closes first", func(t *testing.T) {
		w := newWorld(t, nil)
		w.acceptIn(t)
		w.segIn(t, l4{proto: "tcp", sport: 41000, dport: 8080, ack: true, fin: true, seq: 7001, ackN: 9001})
		w.segOut(t, l4{proto: "tcp", sport: 80, dport: 41000, ack: true, fin: true, seq: 9001, ackN: 7008})
		kept(t, w)
		w.segIn(t, l4{proto: "tcp", sport: 41000, dport: 8080, ack: true, seq: 7008, ackN: 9008})
		gone(t, w)
	})
	// A hairpin connection: a client (e2; over IPv6 e9) from 1001 to the
	// server's port 80 (e1; e8), published as 8080 on its gateway, from
	// 9001: its segments through from_container, where hairpin and
	// hairpin_reply deliver them straight to the other end. left checks
	// how many translation halves the connection holds, and that nothing
	// is charged to the client once none.
	hairpin := func(t *testing.T, v6 bool) (client, server func(seq, ack uint32, fin bool), left func(halves int)) {
		w := newWorld(t, nil)
		cl, sv, gw, clAddr := "e2", "e1", gw1, w.eps["e2"].ip
		frame := func(ep, dst string, p l4) []byte { return w.from(t, ep, dst, p) }
		maps := []*ebpf.Map{w.coll.NatFwd, w.coll.NatRev}
		if v6 {
			w.addDualStack(t)
			cl, sv, gw, clAddr = "e9", "e8", "fd00:6::1", "fd00:6::3"
			addr := map[string]string{"e8": "fd00:6::2", "e9": "fd00:6::3"}
			frame = func(ep, dst string, p l4) []byte {
				return frame6From(t, mac(w.eps[ep].mac), bridgeMAC, addr[ep], dst, p)
			}
			maps = []*ebpf.Map{w.coll.NatFwd6, w.coll.NatRev6}
			w.publish6(t, sv, addr[sv], pm("tcp", "::", 8080, 80), "::")
		} else {
			w.publish(t, sv, pm("tcp", "0.0.0.0", 8080, 80), gw)
		}
		send := func(ep string, f []byte) {
			t.Helper()
			if ret, _ := w.run(t, w.coll.FromContainer, w.eps[ep].ifindex, f); ret != actRedirect {
				t.Fatalf("%s's segment not delivered (%d)", ep, ret)
			}
		}
		seg := func(sport, dport uint16, syn bool, seq, ack uint32, fin bool) l4 {
			return l4{proto: "tcp", sport: sport, dport: dport, syn: syn, ack: ack != 0, fin: fin, seq: seq, ackN: ack, win: 100}
		}
		client = func(seq, ack uint32, fin bool) {
			t.Helper()
			send(cl, frame(cl, gw, seg(42000, 8080, false, seq, ack, fin)))
		}
		server = func(seq, ack uint32, fin bool) {
			t.Helper()
			send(sv, frame(sv, clAddr, seg(80, 42000, false, seq, ack, fin)))
		}
		left = func(halves int) {
			t.Helper()
			n := 0
			for _, m := range maps {
				var k, v []byte
				for it := m.Iterate(); it.Next(&k, &v); {
					n++
				}
			}
			if n != halves {
				t.Errorf("%d translation halves, want %d", n, halves)
			}
			if c := w.flowCharge(t, cl); halves == 0 && c != 0 {
				t.Errorf("the client still charged %d entries", c)
			}
		}
		send(cl, frame(cl, gw, seg(42000, 8080, true, 1000, 0, false)))
		send(sv, frame(sv, clAddr, seg(80, 42000, true, 9000, 1001, false)))
		client(1001, 9001, false)
		left(2)
		return client, server, left
	}
	for _, v6 := range []bool{false, true} {
		name := map[bool]string{false: "hairpin", true: "IPv6 hairpin"}[v6]
		t.Run(name+": the client closes first", func(t *testing.T) {
			client, server, left := hairpin(t, v6)
			client(1001, 9001, true) // ends at 1008
			server(9001, 1008, true) // ends at 9008
			left(2)
			client(1008, 9008, false) // the last ACK
			left(0)
		})
		t.Run(name+": the server closes first", func(t *testing.T) {
			client, server, left := hairpin(t, v6)
			server(9001, 1001, true)
			client(1001, 9008, true)
			left(2)
			server(9008, 1008, false)
			left(0)
		})
		t.Run(name+": a half-closed connection stays", func(t *testing.T) {
			client, server, left := hairpin(t, v6)
			client(1001, 9001, true)
			server(9001, 1008, false) // the server still sends
			client(1008, 9007, false)
			left(2)
		})
	}
	t.Run("IPv6: e8 closes first", func(t *testing.T) {
		w := newWorld(t, nil)
		w.addDualStack(t)
		e8 := w.eps["e8"]
		outside := mac("02:99:00:00:00:01")
		out6 := func(p l4) {
			f := frame6From(t, mac(e8.mac), bridgeMAC, "fd00:6::2", outsideAddr6, p)
			w.run(t, w.coll.FromContainer, e8.ifindex, f)
			if ret, _ := w.outbound(t, f); ret != actUnspc {
				t.Fatalf("e8's %+v: to_uplink %d", p, ret)
			}
		}
		in6 := func(p l4) {
			if ret, _ := w.run(t, w.coll.FromUplink, w.uplink, frame6From(t, outside, hostMAC, outsideAddr6, uplinkAddr6, p)); ret != actRedirect {
				t.Fatalf("the peer's %+v not delivered (%d)", p, ret)
			}
		}
		count := func() (n int) {
			for _, m := range []*ebpf.Map{w.coll.NatFwd6, w.coll.NatRev6, w.coll.Conntrack6} {
				var k, v []byte
				for it := m.Iterate(); it.Next(&k, &v); {
					n++
				}
			}
			return n
		}
		s := func(seq, ack uint32, fin bool) l4 {
			return l4{proto: "tcp", sport: 40500, dport: 80, ack: true, fin: fin, seq: seq, ackN: ack}
		}
		r := func(seq, ack uint32, fin bool) l4 {
			return l4{proto: "tcp", sport: 80, dport: 40500, ack: true, fin: fin, seq: seq, ackN: ack}
		}
		out6(l4{proto: "tcp", sport: 40500, dport: 80, syn: true, seq: 1000})
		in6(l4{proto: "tcp", sport: 80, dport: 40500, syn: true, ack: true, seq: 5000, ackN: 1001})
		out6(s(1001, 5001, false))
		out6(s(1001, 5001, true))
		in6(r(5001, 1008, true))
		if n := count(); n != 3 {
			t.Fatalf("%d entries before the last ACK, want the pair and the tracked flow", n)
		}
		out6(s(1008, 5008, false))
		if n := count(); n != 0 || w.flowCharge(t, "e8") != 0 {
			t.Errorf("%d entries left, e8 charged %d: want nothing", n, w.flowCharge(t, "e8"))
		}
	})
}

// A busy flow's bookkeeping (the connection-table entry and the reply
// half) is refreshed once a second, not on every segment; its close is
// still followed on every segment that can end it. After data both ways
// (within one second, as a busy flow's segments are), the peer's RST at
// the acknowledged sequence and an orderly close remove every entry, as in
// TestResetRemovesFlow and TestClosedFlowRemoved; and the peer's RST
// elsewhere in the window still ends nothing.
func TestBusyFlowCloses(t *testing.T) {
	// Three rounds of 6-byte segments each way: e1 sends from 1001 and
	// the peer from 5001, each acknowledging all it got.
	busy := func(t *testing.T) *world {
		w := newWorld(t, nil)
		w.connectOut(t, 1000)
		for i := uint32(0); i < 3; i++ {
			w.segIn(t, l4{proto: "tcp", sport: 80, dport: 40500, ack: true, seq: 5001 + 6*i, ackN: 1001 + 6*i})
			w.segOut(t, l4{proto: "tcp", sport: 40500, dport: 80, ack: true, seq: 1001 + 6*i, ackN: 5007 + 6*i})
		}
		w.flowsLeft(t, 1, 1, 1, 2)
		return w // e1 is at 1019 and acknowledged 5019
	}
	for _, c := range []struct {
		name     string
		fromPeer bool // else from e1
		seg      l4
		kept     bool
	}{
		{"the peer resets elsewhere in the window", true, l4{proto: "tcp", sport: 80, dport: 40500, rst: true, seq: 5020}, true},
		{"the peer resets at the acknowledged sequence", true, l4{proto: "tcp", sport: 80, dport: 40500, rst: true, seq: 5019}, false},
		{"the container resets", false, l4{proto: "tcp", sport: 40500, dport: 80, rst: true, seq: 1019}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := busy(t)
			if c.fromPeer {
				w.segIn(t, c.seg)
			} else {
				w.segOut(t, c.seg)
			}
			if c.kept {
				w.flowsLeft(t, 1, 1, 1, 2)
			} else {
				w.flowsLeft(t, 0, 0, 0, 0)
			}
		})
	}
	t.Run("the peer closes first", func(t *testing.T) {
		w := busy(t)
		w.segIn(t, l4{proto: "tcp", sport: 80, dport: 40500, ack: true, fin: true, seq: 5019, ackN: 1019})  // ends at 5026
		w.segOut(t, l4{proto: "tcp", sport: 40500, dport: 80, ack: true, fin: true, seq: 1019, ackN: 5026}) // ends at 1026
		w.flowsLeft(t, 1, 1, 1, 2)
		w.segIn(t, l4{proto: "tcp", sport: 80, dport: 40500, ack: true, seq: 5026, ackN: 1026}) // the last ACK
		w.flowsLeft(t, 0, 0, 0, 0)
	})
}

// A flow on which only the peer sends stays tracked as long as it does:
// its replies refresh (once a second) the connection-table entry that a
// reply taking the host's stack needs in to_container; when they stop,
// the flow times out. UDP timeouts of 3 s keep the test short.
func TestRepliesKeepFlowTracked(t *testing.T) {
	timeout := 3 * time.Second
	w := newWorld(t, map[string]any{"ct_timeout_udp": uint64(timeout), "ct_timeout_udp_stream": uint64(timeout)})
	e1 := w.eps["e1"]
	w.segOut(t, udp(40100, 53))
	reply := outsideFrame(t, outsideAddr, uplinkAddr, udp(53, 40100))
	// The same reply as the host routes it in, once from_uplink left it
	// to the host's stack (as it does a fragment).
	routedIn := func() uint32 {
		w.ingress = w.uplink
		defer func() { w.ingress = 0 }()
		ret, _ := w.run(t, w.coll.ToContainer, e1.ifindex, w.routed(t, "e1", outsideAddr, e1.ip, udp(53, 40100)))
		return ret
	}
	for end := time.Now().Add(2*timeout + time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if ret, _ := w.run(t, w.coll.FromUplink, w.uplink, reply); ret != actRedirect {
			t.Fatalf("a reply %v after the flow's start: %d, want TC_ACT_REDIRECT", time.Since(end.Add(-2*timeout-time.Second)), ret)
		}
	}
	if ret := routedIn(); ret != actOK {
		t.Errorf("a reply through the host's stack after %v of replies: to_container %d, want TC_ACT_OK", 2*timeout+time.Second, ret)
	}
	time.Sleep(timeout + 500*time.Millisecond)
	if ret, _ := w.run(t, w.coll.FromUplink, w.uplink, reply); ret == actRedirect {
		t.Errorf("a reply after the flow timed out was delivered")
	}
	if ret := routedIn(); ret == actOK {
		t.Errorf("a reply through the host's stack after the flow timed out was let in")
	}
}
