package conformance

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/bpfnet/bpfnet/api"
	"github.com/bpfnet/bpfnet/internal/testnet"
)

// Datagrams larger than the path's MTU travel as IP fragments, which
// carry no ports after the first (RFC 791, RFC 8200 §4.5). A masqueraded
// container must get them whole, in both datapaths and over both IP
// versions, whatever order they arrive in, and so must a published port:
// the iptables datapath reassembles them in the host (conntrack), the
// eBPF one translates each fragment and leaves the reassembly to the
// receiver. The later fragments coming first is the case where the eBPF
// datapath has only the sender's recent replies to go by.
func TestFragmentedDatagrams(t *testing.T) {
	for _, dp := range hostileDatapaths {
		t.Run(dp, func(t *testing.T) {
			t.Run("IPv4", func(t *testing.T) { testFragments(t, newFragmentWorld(t, dp, false)) })
			t.Run("IPv6", func(t *testing.T) { testFragments(t, newFragmentWorld(t, dp, true)) })
		})
	}
}

// fragmentWorld is the hostile tenants' arena seen through one IP version.
type fragmentWorld struct {
	a               *arena
	mallory         netip.Addr
	uplink, outside netip.Addr
	network         string // "udp4" or "udp6"
}

// newFragmentWorld is the arena over IPv4, or, over IPv6, a daemon with
// a dual-stack network of the same shape: the victim publishing
// 5353/udp to its 7000, mallory beside it.
func newFragmentWorld(t *testing.T, dp string, ipv6 bool) *fragmentWorld {
	if !ipv6 {
		a := newArena(t, dp)
		return &fragmentWorld{a: a, mallory: a.ips["mallory"],
			uplink: testnet.UplinkAddr, outside: testnet.OutsideAddr, network: "udp4"}
	}
	a := &arena{dp: dp, topo: testnet.NewTopology(t), ips: map[string]netip.Addr{}}
	a.d = testnet.NewDaemon(t, a.topo.Host, "--datapath="+dp)
	a.d.Start()
	ctx := context.Background()
	if _, err := a.d.Client.CreateNetwork(ctx, api.CreateNetworkRequest{Name: "web6", Subnet: "198.18.2.0/24",
		EnableIPv6: true, Subnet6: "fd00:18:2::/64"}); err != nil {
		t.Fatal(err)
	}
	endpoint := func(name, ip, ip6 string, ports ...string) *testnet.NS {
		ns := testnet.NewNS(t, name)
		if _, err := a.d.Client.CreateEndpoint(ctx, api.CreateEndpointRequest{
			Network: "web6", NetNS: ns.Path, Name: name, IP: ip, IP6: ip6, Ports: ports}); err != nil {
			t.Fatalf("endpoint %s: %v", name, err)
		}
		return ns
	}
	a.victim = endpoint("victim", "198.18.2.10", "fd00:18:2::10", "5353:7000/udp")
	a.mallory = endpoint("mallory", "198.18.2.20", "fd00:18:2::20")
	a.victim.Serve(t)
	return &fragmentWorld{a: a, mallory: netip.MustParseAddr("fd00:18:2::20"),
		uplink: testnet.UplinkAddr6, outside: testnet.OutsideAddr6, network: "udp6"}
}

func testFragments(t *testing.T, w *fragmentWorld) {
	a := w.a
	// A UDP socket in the victim, and a peer on the outside that answers
	// every datagram with "ok" and remembers the source it saw (the
	// victim's, as translated).
	var c, peer net.PacketConn
	err := a.victim.Do(func() (err error) {
		c, err = net.ListenPacket(w.network, ":0")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = a.topo.Outside.Do(func() (err error) {
		peer, err = net.ListenPacket(w.network, ":7301")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	seen := make(chan seenDatagram, 4)
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := peer.ReadFrom(buf)
			if err != nil {
				return
			}
			seen <- seenDatagram{n: n, from: from.(*net.UDPAddr).AddrPort()}
			peer.WriteTo([]byte("ok"), from)
		}
	}()
	outside := netip.AddrPortFrom(w.outside, 7301)
	// exchange sends size bytes to the peer and returns the source the
	// peer saw, after checking the answer came back.
	exchange := func(t *testing.T, size int) netip.AddrPort {
		t.Helper()
		if _, err := c.WriteTo(bytes.Repeat([]byte{'x'}, size), net.UDPAddrFromAddrPort(outside)); err != nil {
			t.Fatal(err)
		}
		var s seenDatagram
		select {
		case s = <-seen:
		case <-time.After(3 * time.Second):
			t.Fatalf("the peer got no %d-byte datagram", size)
		}
		if s.n != size || s.from.Addr() != w.uplink {
			t.Fatalf("the peer got %d bytes from %s, want %d from %s", s.n, s.from, size, w.uplink)
		}
		if got := receive(t, c); string(got) != "ok" {
			t.Fatalf("the victim got %q, want the peer's answer", got)
		}
		return s.from
	}

	// First: a fragmented reply taking the host's stack (below) records
	// the sender under the container's address, and hides the case.
	t.Run("the reply's later fragments before its first", func(t *testing.T) {
		translated := exchange(t, 10) // whole datagrams both ways
		payload := make([]byte, 2992)
		for i := range payload {
			payload[i] = byte(i)
		}
		frags := fragmentUDP(t, w.outside, translated.Addr(), 7301, translated.Port(), payload, 0x4242)
		for _, f := range append(frags[1:], frags[0]) {
			a.fromOutside(t, f...)
		}
		if got := receive(t, c); !bytes.Equal(got, payload) {
			t.Fatalf("the victim got %d bytes, want the %d the peer sent in fragments", len(got), len(payload))
		}
	})

	t.Run("a datagram of 3000 bytes each way", func(t *testing.T) {
		translated := exchange(t, 3000)
		big := bytes.Repeat([]byte{'y'}, 3000)
		if _, err := peer.WriteTo(big, net.UDPAddrFromAddrPort(translated)); err != nil {
			t.Fatal(err)
		}
		if got := receive(t, c); !bytes.Equal(got, big) {
			t.Fatalf("the victim got %d bytes, want the peer's 3000", len(got))
		}
	})

	// toPublished sends 3000 bytes from ns to the victim's port published
	// on the uplink address and expects its answer, naming the source it
	// saw.
	toPublished := func(t *testing.T, ns *testnet.NS, src netip.Addr) {
		t.Helper()
		var conn *net.UDPConn
		err := ns.Do(func() (err error) {
			conn, err = net.DialUDP(w.network, nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(w.uplink, 5353)))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := conn.Write(bytes.Repeat([]byte{'z'}, 3000)); err != nil {
			t.Fatal(err)
		}
		if got, want := string(receive(t, conn)), "src="+src.String()+"\n"; got != want {
			t.Fatalf("the published port answered %q, want %q", got, want)
		}
	}
	t.Run("a datagram of 3000 bytes to a published port", func(t *testing.T) {
		toPublished(t, a.topo.Outside, w.outside)
	})
	t.Run("a datagram of 3000 bytes to a published port, from a neighbour", func(t *testing.T) {
		toPublished(t, a.mallory, w.mallory)
	})

	t.Run("ping with 3000 bytes", func(t *testing.T) {
		out, err := exec.Command("ip", "netns", "exec", a.victim.Name, "ping", "-n", "-c", "2", "-s", "3000", "-W", "2", w.outside.String()).CombinedOutput()
		if err != nil {
			t.Fatalf("ping: %v\n%s", err, out)
		}
	})
}

type seenDatagram struct {
	n    int
	from netip.AddrPort
}

// receive reads one datagram from c, failing after 3 s.
func receive(t *testing.T, c net.PacketConn) []byte {
	t.Helper()
	buf := make([]byte, 65536)
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, _, err := c.ReadFrom(buf)
	if err != nil {
		t.Fatalf("the victim got nothing: %v", err)
	}
	return buf[:n]
}

// fragmentUDP is the UDP datagram src:sport → dst:dport carrying payload,
// its checksum computed over the whole of it, cut as a sender with a
// 1500-byte MTU cuts it: IPv4 fragments of at most 1480 bytes of data,
// or IPv6 ones of 1448 behind a fragment header, with identification id.
// It returns the layers of each fragment, first to last.
func fragmentUDP(t *testing.T, src, dst netip.Addr, sport, dport uint16, payload []byte, id uint16) [][]gopacket.SerializableLayer {
	t.Helper()
	udp := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
	var ip gopacket.SerializableLayer
	hlen, chunk := 20, 1480
	if src.Is6() {
		ip = &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolUDP, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
		hlen, chunk = 40, 1448
	} else {
		ip = ipv4(src.String(), dst.String(), layers.IPProtocolUDP)
	}
	datagram := serializeLayers(t, ip, udp, gopacket.Payload(payload))[hlen:] // the UDP header and payload
	var frags [][]gopacket.SerializableLayer
	for off := 0; off < len(datagram); off += chunk {
		end := min(off+chunk, len(datagram))
		more := end < len(datagram)
		if src.Is6() {
			// RFC 8200 §4.5: next header, reserved, offset in 8-byte
			// units with the M flag, identification.
			h := make([]byte, 8)
			h[0] = byte(layers.IPProtocolUDP)
			binary.BigEndian.PutUint16(h[2:], uint16(off/8)<<3)
			if more {
				h[3] |= 1
			}
			binary.BigEndian.PutUint32(h[4:], uint32(id))
			ip6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolIPv6Fragment, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
			frags = append(frags, []gopacket.SerializableLayer{ip6, gopacket.Payload(append(h, datagram[off:end]...))})
			continue
		}
		h := ipv4(src.String(), dst.String(), layers.IPProtocolUDP)
		h.Id, h.FragOffset = id, uint16(off/8)
		if more {
			h.Flags = layers.IPv4MoreFragments
		}
		frags = append(frags, []gopacket.SerializableLayer{h, gopacket.Payload(datagram[off:end])})
	}
	if len(frags) < 3 {
		t.Fatalf("%d fragments; the test needs at least 3", len(frags))
	}
	return frags
}
