package conformance

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/bpfnet/bpfnet/api"
	"github.com/bpfnet/bpfnet/internal/testnet"
	"github.com/bpfnet/bpfnet/network"
)

// The hostile tenant group: a container ("mallory") and the outside try the
// attacks of the datapath security review against a victim container and
// the host, with real traffic, in both datapaths. Each asserts that the
// victim's flows, and the host's routes and addresses, are untouched; an
// attack a datapath cannot have (or that only the kernel's own settings
// decide) says so and is skipped there.

var hostileDatapaths = []string{"ebpf", "iptables"}

// arena is the scene of the attacks.
type arena struct {
	dp      string
	topo    *testnet.Topology
	d       *testnet.Daemon
	victim  *testnet.NS // on web, publishing 8080/tcp, 127.0.0.1:9090/tcp and 5353/udp to its 7000
	mallory *testnet.NS // on web too
	ips     map[string]netip.Addr
	gw      netip.Addr // web's gateway
}

func newArena(t *testing.T, dp string) *arena {
	a := &arena{dp: dp, topo: testnet.NewTopology(t), ips: map[string]netip.Addr{}}
	a.d = testnet.NewDaemon(t, a.topo.Host, "--datapath="+dp)
	a.d.Start()
	ctx := context.Background()
	web, err := a.d.Client.CreateNetwork(ctx, api.CreateNetworkRequest{Name: "web", Subnet: "198.18.1.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	a.gw = netip.MustParseAddr(web.IPAM.Config[0].Gateway)
	a.victim = a.container(t, "victim", "web", "198.18.1.10", "8080:7000/tcp", "127.0.0.1:9090:7000/tcp", "5353:7000/udp")
	a.mallory = a.container(t, "mallory", "web", "198.18.1.20")
	a.victim.Serve(t)
	a.mallory.Serve(t)
	a.topo.Outside.Serve(t)
	return a
}

// container attaches a new namespace to net with address ip and ports.
func (a *arena) container(t *testing.T, name, net, ip string, ports ...string) *testnet.NS {
	ns := testnet.NewNS(t, name)
	if _, err := a.d.Client.CreateEndpoint(context.Background(), api.CreateEndpointRequest{
		Network: net, NetNS: ns.Path, Name: name, IP: ip, Ports: ports}); err != nil {
		t.Fatalf("endpoint %s: %v", name, err)
	}
	a.ips[name] = netip.MustParseAddr(ip)
	return ns
}

// fromOutside sends a frame built of layers (an IPv4 or IPv6 header
// first) from the outside namespace to the host's uplink.
func (a *arena) fromOutside(t *testing.T, ls ...gopacket.SerializableLayer) {
	t.Helper()
	src, err := a.topo.Outside.MAC("eth0")
	if err != nil {
		t.Fatal(err)
	}
	dst, err := a.topo.Host.MAC(testnet.UplinkIf)
	if err != nil {
		t.Fatal(err)
	}
	typ := layers.EthernetTypeIPv4
	if _, v6 := ls[0].(*layers.IPv6); v6 {
		typ = layers.EthernetTypeIPv6
	}
	frame := serializeLayers(t, append([]gopacket.SerializableLayer{&layers.Ethernet{SrcMAC: src, DstMAC: dst, EthernetType: typ}}, ls...)...)
	if err := a.topo.Outside.SendFrame("eth0", frame); err != nil {
		t.Fatal(err)
	}
}

func serializeLayers(t *testing.T, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	var nl gopacket.NetworkLayer
	for _, l := range ls {
		switch l := l.(type) {
		case gopacket.NetworkLayer:
			nl = l
		case *layers.TCP:
			l.SetNetworkLayerForChecksum(nl)
		case *layers.UDP:
			l.SetNetworkLayerForChecksum(nl)
		case *layers.ICMPv6:
			l.SetNetworkLayerForChecksum(nl)
		}
	}
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func ipv4(src, dst string, proto layers.IPProtocol) *layers.IPv4 {
	return &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: proto, SrcIP: net.ParseIP(src).To4(), DstIP: net.ParseIP(dst).To4()}
}

// arrivals counts, for d, the IPv4 packets arriving in ns's eth0 that
// match (proto, and dst port when not 0).
func arrivals(t *testing.T, ns *testnet.NS, d time.Duration, proto layers.IPProtocol, dport uint16, during func()) int {
	t.Helper()
	s, err := ns.Sniff("eth0", func(frame []byte) bool {
		p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
		ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		if ip == nil || ip.Protocol != proto {
			return false
		}
		if dport == 0 {
			return true
		}
		if tl, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP); ok {
			return uint16(tl.DstPort) == dport
		}
		if ul, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP); ok {
			return uint16(ul.DstPort) == dport
		}
		return false
	})
	if err != nil {
		t.Fatal(err)
	}
	during()
	time.Sleep(d)
	n, _ := s.Stop()
	return n
}

func TestHostileTenant(t *testing.T) {
	for _, dp := range hostileDatapaths {
		t.Run(dp, func(t *testing.T) {
			a := newArena(t, dp)
			ebpf := dp == "ebpf"
			uplink := testnet.UplinkAddr.String()

			// Item 1: the LAN sends a SYN to 127.0.0.1:9090, published
			// only for the host's own processes.
			t.Run("outside → 127.0.0.1 of a loopback-published port", func(t *testing.T) {
				if _, err := a.topo.Outside.TCPTo(netip.AddrPortFrom(testnet.UplinkAddr, 8080), 3*time.Second); err != nil {
					t.Fatalf("the port published on every address does not answer: %v", err)
				}
				n := arrivals(t, a.victim, time.Second, layers.IPProtocolTCP, 7000, func() {
					a.fromOutside(t, ipv4(testnet.OutsideAddr.String(), "127.0.0.1", layers.IPProtocolTCP),
						&layers.TCP{SrcPort: 41000, DstPort: 9090, SYN: true, Seq: 1, Window: 1000})
				})
				if n != 0 {
					t.Errorf("the victim got %d packets of a connection from the LAN to 127.0.0.1:9090", n)
				}
			})

			// Item 6: sources the outside cannot have.
			t.Run("outside → published port with a forged source", func(t *testing.T) {
				srcs := []string{a.gw.String(), uplink}
				if ebpf {
					// A sibling container's address: on a host without
					// reverse-path filtering (the kernel's setting), only
					// the eBPF datapath refuses it.
					srcs = append(srcs, a.ips["mallory"].String())
				}
				for _, src := range srcs {
					n := arrivals(t, a.victim, time.Second, layers.IPProtocolTCP, 7000, func() {
						a.fromOutside(t, ipv4(src, uplink, layers.IPProtocolTCP), &layers.TCP{SrcPort: 41001, DstPort: 8080, SYN: true, Seq: 1, Window: 1000})
					})
					if n != 0 {
						t.Errorf("a SYN claiming source %s reached the victim (%d packets)", src, n)
					}
				}
				if !ebpf {
					return // netfilter's loose pickup turns a mid-stream ACK into a connection, as for Docker
				}
				n := arrivals(t, a.victim, time.Second, layers.IPProtocolTCP, 7000, func() {
					a.fromOutside(t, ipv4(testnet.OutsideAddr.String(), uplink, layers.IPProtocolTCP), &layers.TCP{SrcPort: 41002, DstPort: 8080, ACK: true, Seq: 7, Ack: 9, Window: 1000})
				})
				if n != 0 {
					t.Errorf("a bare ACK opened a connection to the victim (%d packets)", n)
				}
			})

			// Item 3: the host talks to mallory from its port 5353, which
			// is published (to the victim): mallory's answers are the host's.
			t.Run("container answers the host's flow from a published port", func(t *testing.T) {
				var got string
				n := arrivals(t, a.victim, 500*time.Millisecond, layers.IPProtocolUDP, 7000, func() {
					err := a.topo.Host.Do(func() error {
						c, err := net.DialUDP("udp4", &net.UDPAddr{Port: 5353}, &net.UDPAddr{IP: a.ips["mallory"].AsSlice(), Port: testnet.ServicePort})
						if err != nil {
							return err
						}
						defer c.Close()
						c.SetDeadline(time.Now().Add(3 * time.Second))
						buf := make([]byte, 64)
						for range 3 {
							c.Write([]byte("hello"))
							if k, err := c.Read(buf); err == nil {
								got = string(buf[:k])
								return nil
							}
						}
						return fmt.Errorf("no answer")
					})
					if err != nil {
						t.Errorf("the host's flow from port 5353 got no answer: %v", err)
					}
				})
				if n != 0 || !strings.HasPrefix(got, "src=") {
					t.Errorf("the answer went to the victim (%d packets there), the host read %q", n, got)
				}
			})

			// Item 4: a router advertisement from mallory.
			t.Run("container sends a router advertisement", func(t *testing.T) {
				before := a.topo.Host.MustRun(t, "ip", "-6", "route", "show") + a.topo.Host.MustRun(t, "ip", "-6", "addr", "show", "scope", "global")
				victimBefore := a.victim.MustRun(t, "ip", "-6", "route", "show") + a.victim.MustRun(t, "ip", "-6", "addr", "show", "scope", "global")
				mac, err := a.mallory.MAC("eth0")
				if err != nil {
					t.Fatal(err)
				}
				ip6 := &layers.IPv6{Version: 6, NextHeader: layers.IPProtocolICMPv6, HopLimit: 255, SrcIP: net.ParseIP("fe80::bad"), DstIP: net.ParseIP("ff02::1")}
				prefix := []byte{3, 4, 64, 0xc0, 0, 0, 0x0e, 0x10, 0, 0, 0x0e, 0x10, 0, 0, 0, 0, 0x20, 0x01, 0x0d, 0xb8, 0xba, 0xd0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
				ra := append([]byte{64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0}, prefix...) // hop limit, flags, lifetime 1800 s, timers; prefix 2001:db8:bad0::/64
				frame := serializeLayers(t, &layers.Ethernet{SrcMAC: mac, DstMAC: net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}, EthernetType: layers.EthernetTypeIPv6},
					ip6, &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(134, 0)}, gopacket.Payload(ra))
				sniff, err := a.victim.Sniff("eth0", func(f []byte) bool {
					p := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
					ic, ok := p.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
					return ok && ic.TypeCode.Type() == 134 && p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet).SrcMAC.String() == mac.String()
				})
				if err != nil {
					t.Fatal(err)
				}
				for range 3 {
					if err := a.mallory.SendFrame("eth0", frame); err != nil {
						t.Fatal(err)
					}
				}
				time.Sleep(2 * time.Second)
				atVictim, _ := sniff.Stop()
				after := a.topo.Host.MustRun(t, "ip", "-6", "route", "show") + a.topo.Host.MustRun(t, "ip", "-6", "addr", "show", "scope", "global")
				// The host has its own IPv6 default route (the topology is
				// dual-stack); one learnt from the advertisement would be
				// via its source, fe80::bad.
				if after != before || strings.Contains(after, "2001:db8:bad0") || strings.Contains(after, "fe80::bad") {
					t.Errorf("the host's IPv6 routes or addresses changed:\n%s", testnet.DiffLines(before, after))
				}
				if ebpf && atVictim != 0 {
					t.Errorf("mallory's router advertisement reached the victim %d times", atVictim)
				}
				// Where it reaches the victim (iptables: bridged, as with
				// Docker), the victim takes nothing from it (CVE-2020-13401).
				victimAfter := a.victim.MustRun(t, "ip", "-6", "route", "show") + a.victim.MustRun(t, "ip", "-6", "addr", "show", "scope", "global")
				if victimAfter != victimBefore || strings.Contains(victimAfter, "2001:db8:bad0") || strings.Contains(victimAfter, "fe80::bad") {
					t.Errorf("the victim's IPv6 routes or addresses changed (%d advertisements reached it):\n%s", atVictim, testnet.DiffLines(victimBefore, victimAfter))
				}
				if ebpf {
					ep, err := a.d.Client.Endpoint(context.Background(), "mallory")
					if err != nil || ep.Counters == nil || ep.Counters.FromContainer.Drops["router"] == 0 {
						t.Errorf("no router drop counted on mallory: %+v %v", ep.Counters, err)
					}
				}
			})

			// Item 15: an ICMP error about mallory's flow, sent to the
			// victim, on a network whose containers keep their addresses.
			t.Run("outside sends the victim an error about another container's flow", func(t *testing.T) {
				if _, err := a.d.Client.CreateNetwork(context.Background(), api.CreateNetworkRequest{Name: "plain", Subnet: "198.18.3.0/24",
					Options: map[string]string{network.OptMasquerade: "false"}}); err != nil {
					t.Fatal(err)
				}
				pv := a.container(t, "plain-victim", "plain", "198.18.3.10")
				pm := a.container(t, "plain-mallory", "plain", "198.18.3.20")
				if err := pm.Do(func() error {
					c, err := net.DialUDP("udp4", &net.UDPAddr{Port: 40000}, &net.UDPAddr{IP: testnet.OutsideAddr.AsSlice(), Port: 9999})
					if err != nil {
						return err
					}
					defer c.Close()
					_, err = c.Write([]byte("x"))
					return err
				}); err != nil {
					t.Fatal(err)
				}
				quote := serializeLayers(t, ipv4("198.18.3.20", testnet.OutsideAddr.String(), layers.IPProtocolUDP), &layers.UDP{SrcPort: 40000, DstPort: 9999}, gopacket.Payload("x"))
				n := arrivals(t, pv, time.Second, layers.IPProtocolICMPv4, 0, func() {
					a.fromOutside(t, ipv4(testnet.OutsideAddr.String(), "198.18.3.10", layers.IPProtocolICMPv4),
						&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(3, 3)}, gopacket.Payload(quote[:28]))
				})
				if n != 0 {
					t.Errorf("the victim got an ICMP error about another container's flow (%d)", n)
				}
			})

			// Item 2: mallory holds uplink:20000 ↔ outside:7000; then the
			// host connects from port 20000 to the same peer.
			t.Run("host flow meets a container's translation", func(t *testing.T) {
				if err := a.mallory.Do(func() error {
					d := net.Dialer{LocalAddr: &net.TCPAddr{Port: 20000}, Timeout: 3 * time.Second}
					c, err := d.Dial("tcp4", netip.AddrPortFrom(testnet.OutsideAddr, testnet.ServicePort).String())
					if err != nil {
						return err
					}
					c.Close()
					return nil
				}); err != nil {
					t.Fatalf("mallory's connection: %v", err)
				}
				err := a.topo.Host.Do(func() error {
					d := net.Dialer{LocalAddr: &net.TCPAddr{Port: 20000}, Timeout: 3 * time.Second}
					c, err := d.Dial("tcp4", netip.AddrPortFrom(testnet.OutsideAddr, testnet.ServicePort).String())
					if err != nil {
						return err
					}
					defer c.Close()
					c.SetDeadline(time.Now().Add(3 * time.Second))
					buf := make([]byte, 64)
					_, err = c.Read(buf)
					return err
				})
				if err != nil {
					t.Errorf("the host's connection from port 20000: %v", err)
				}
			})

			// Items 7 and 10: the victim holds an idle connection to the
			// outside; mallory floods the flow tables and the outside sends
			// blind resets; the connection lives on past the reset timeout.
			t.Run("flood and blind resets against an idle connection", func(t *testing.T) {
				conns := make(chan net.Conn, 4)
				a.topo.Outside.EchoServerConns(t, 7100, conns)
				var vc net.Conn
				if err := a.victim.Do(func() (err error) {
					vc, err = net.DialTimeout("tcp4", netip.AddrPortFrom(testnet.OutsideAddr, 7100).String(), 3*time.Second)
					return err
				}); err != nil {
					t.Fatal(err)
				}
				defer vc.Close()
				sc := <-conns
				remote := netip.MustParseAddrPort(sc.RemoteAddr().String()) // the victim as the outside sees it
				flows := 5000
				if ebpf {
					flows = 40000 // past the per-endpoint quota (a quarter of the tables)
				}
				if err := a.mallory.Do(func() error {
					c, err := net.ListenUDP("udp4", nil)
					if err != nil {
						return err
					}
					defer c.Close()
					for i := range flows {
						c.WriteToUDP([]byte("x"), &net.UDPAddr{IP: testnet.OutsideAddr.AsSlice(), Port: 10000 + i%50000, Zone: ""})
						if i%1000 == 999 {
							time.Sleep(time.Millisecond)
						}
					}
					return nil
				}); err != nil {
					t.Fatal(err)
				}
				for range 10 {
					a.fromOutside(t, ipv4(testnet.OutsideAddr.String(), remote.Addr().String(), layers.IPProtocolTCP),
						&layers.TCP{SrcPort: 7100, DstPort: layers.TCPPort(remote.Port()), RST: true, Seq: rand.Uint32(), Window: 0})
					a.fromOutside(t, ipv4(testnet.OutsideAddr.String(), remote.Addr().String(), layers.IPProtocolTCP),
						&layers.TCP{SrcPort: 7100, DstPort: layers.TCPPort(remote.Port()), FIN: true, ACK: true, Seq: rand.Uint32(), Window: 0})
				}
				time.Sleep(11 * time.Second) // past the reset timeout (10 s)
				if _, err := sc.Write([]byte("from the outside\n")); err != nil {
					t.Fatal(err)
				}
				vc.SetDeadline(time.Now().Add(3 * time.Second))
				line, err := bufio.NewReader(vc).ReadString('\n')
				if err != nil || line != "from the outside\n" {
					t.Errorf("the victim's idle connection is broken: %q, %v", line, err)
				}
				if ebpf {
					st, err := a.d.Client.Status(context.Background())
					if err != nil || st.Stats["flow_limit"] == 0 {
						t.Errorf("no flow_limit after %d flows from one container: %v %v", flows, st.Stats, err)
					}
				}
			})

			// Item 5: a UDP peer keeps sending to a published port; the
			// endpoint goes and another gets its address.
			t.Run("a published port's flow does not follow the address", func(t *testing.T) {
				v2 := a.container(t, "v2", "web", "198.18.1.30", "5354:7000/udp")
				var stop atomic.Bool
				done := make(chan struct{})
				go func() {
					defer close(done)
					a.topo.Outside.Do(func() error {
						c, err := net.DialUDP("udp4", &net.UDPAddr{Port: 41234}, &net.UDPAddr{IP: testnet.UplinkAddr.AsSlice(), Port: 5354})
						if err != nil {
							return err
						}
						defer c.Close()
						for !stop.Load() {
							c.Write([]byte("keepalive"))
							time.Sleep(100 * time.Millisecond)
						}
						return nil
					})
				}()
				defer func() { stop.Store(true); <-done }()
				if n := arrivals(t, v2, time.Second, layers.IPProtocolUDP, 7000, func() {}); n == 0 {
					t.Fatal("the published port does not receive the peer's datagrams")
				}
				if err := a.d.Client.RemoveEndpoint(context.Background(), "v2"); err != nil {
					t.Fatal(err)
				}
				v3 := a.container(t, "v3", "web", "198.18.1.30")
				if n := arrivals(t, v3, 2*time.Second, layers.IPProtocolUDP, 0, func() {}); n != 0 {
					t.Errorf("the next endpoint with the address got %d datagrams of the old connection", n)
				}
			})
		})
	}
}
